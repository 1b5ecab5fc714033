"""`labbuild new-service`: scaffold a service for contributors (builder.scaffold)."""

from __future__ import annotations

import click

from ..cli import Output, pass_output


@click.command("new-service")
@click.option("--no-input", is_flag=True, help="Do not prompt: take the template's defaults for unset keys.")
@click.argument("answers", nargs=-1, metavar="[KEY=VALUE]...")
@pass_output
def new_service(out: Output, no_input: bool, answers: tuple[str, ...]) -> None:
    """Scaffold a service from cookiecutter-service/.

    Prompts for every template variable (or takes KEY=VALUE answers, e.g.
    service_name=node-red image_name=docker.io/nodered/node-red
    image_tag=4.0.5 container_port=1880 health_path=/ category=app phase=2),
    writes blueprints/services/NAME.toml and tests/services/test_NAME.py,
    validates the blueprint and prints the next steps. Never overwrites.
    With --json there are no prompts (as --no-input) and the result is
    {"ok", "service", "created": [paths], "todo": [placeholders left]}.
    """
    from ..scaffold import new_service as scaffold
    from ..scaffold import next_steps

    result = scaffold(out.root, answers, no_input=no_input or out.json)
    created = [str(p) for p in result.to_json(out.root)["created"]]
    for path in created:
        out.info(f"created {path}")
    if result.todo:
        lines = ", ".join(str(p.line) for p in result.todo)
        out.info(f"to fill: {len(result.todo)} placeholder(s) in {created[0]} (lines {lines}): "
                 "the TODO runbook text and the zero digest")
    steps = "\n".join(f"  {i}. {s}" for i, s in enumerate(next_steps(result, out.root), start=1))
    out.info(f"next steps:\n{steps}")
    out.result(result.to_json(out.root), f"{result.service}: scaffolded")
