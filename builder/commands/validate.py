"""`labbuild validate` and `labbuild schema`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli import Output, pass_output


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@pass_output
@click.pass_context
def validate(ctx: click.Context, out: Output, paths: tuple[Path, ...]) -> None:
    """Check blueprints against the schema and the lab's rules.

    Without PATHS: every blueprint in blueprints/services/ and blueprints/lab.toml.
    With PATHS: only those files (in the context of the lab's other blueprints).
    Prints every problem as FILE:LINE: key.path: message (hint). Exit 1 when any.
    """
    from ..blueprint import validate_paths

    problems = validate_paths(out.root, list(paths) or None)
    data = {"ok": not problems, "errors": [p.to_json() for p in problems]}
    if out.json:
        out.result(data)
        for p in problems:
            out.info(p.render())
    else:
        for p in problems:
            click.echo(p.render(), err=True)
        if problems:
            click.echo(f"{len(problems)} problem(s) found", err=True)
        else:
            click.echo("all blueprints valid", err=True)
    if problems:
        ctx.exit(1)


@click.command()
def schema() -> None:
    """Print the blueprint JSON Schema (Draft 2020-12).

    Point editors at it with a first line `#:schema <path>` in a blueprint
    (taplo / Even Better TOML) for completion and checking.
    """
    from ..blueprint import blueprint_schema

    click.echo(json.dumps(blueprint_schema(), indent=2))
