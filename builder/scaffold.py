"""Scaffold a new service from cookiecutter-service/ into the lab.

One run of ``new_service``: collect the answers (KEY=VALUE pairs, then
cookiecutter's prompts unless ``no_input``), check them with the template's
own rules (``hooks/pre_gen_project.py:answer_problems``), render the template
with the cookiecutter API into a temporary directory, move the blueprint to
``blueprints/services/NAME.toml`` and the testinfra test to
``tests/services/test_MODULE.py``, and validate the blueprint in the context
of the lab. Nothing is left behind when any step fails.

The cookiecutter API is driven at the level of ``generate_context`` /
``prompt_for_config`` / ``generate_files`` (the steps of ``cookiecutter()``)
so the answers can be checked between prompting and rendering, and so no
user config (~/.cookiecutterrc) or replay file (~/.cookiecutter_replay/)
changes what is rendered or is written outside the lab.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import re
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Iterable

from cookiecutter.exceptions import CookiecutterException
from cookiecutter.generate import generate_context, generate_files
from cookiecutter.prompt import prompt_for_config

from .blueprint import validate_paths
from .errors import Problem, ScaffoldError
from .fsutil import atomic_write

TEMPLATE_NAME = "cookiecutter-service"
ZERO_DIGEST = "sha256:" + "0" * 64
# Text the template leaves for the contributor to replace.
PLACEHOLDER_RE = re.compile(r"\bTODO\b|" + re.escape(ZERO_DIGEST))


@dataclass(frozen=True)
class ScaffoldResult:
    """What ``new_service`` did: the service name, the files it created, what is left to fill."""

    service: str
    created: list[Path]
    todo: list[Problem] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)

    def to_json(self, root: Path) -> dict:
        return {"ok": True, "service": self.service,
                "created": [_rel(p, root) for p in self.created],
                "todo": [p.to_json() for p in self.todo]}


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- the template

def find_template(root: Path) -> Path:
    """The template: ``ROOT/cookiecutter-service``, else the one next to this package."""
    for candidate in (root / TEMPLATE_NAME, Path(__file__).resolve().parents[1] / TEMPLATE_NAME):
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise ScaffoldError(f"no {TEMPLATE_NAME}/ template found in {root} or next to labbuild",
                        hint="run from the lab repository (it holds cookiecutter-service/) or pass --root")


@cache
def _hook_module(template: Path) -> ModuleType:
    """The template's pre_gen_project hook, imported as a module (it is valid Python unrendered)."""
    path = template / "hooks" / "pre_gen_project.py"
    spec = importlib.util.spec_from_file_location(f"_labbuild_hook_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ScaffoldError(f"{path}: cannot load the template's hook")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer_problems(template: Path, answers: dict[str, str]) -> list[str]:
    """The template hook's verdict on ``answers`` (``key: message`` lines)."""
    return list(_hook_module(template).answer_problems(answers))


def template_variables(template: Path) -> dict:
    """``cookiecutter.json``: the questions and their defaults."""
    try:
        return json.loads((template / "cookiecutter.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ScaffoldError(f"{template / 'cookiecutter.json'}: cannot read: {exc}") from None


def public_keys(variables: dict) -> list[str]:
    """The keys a contributor answers (cookiecutter's private ``_x``/``__x`` excluded)."""
    return [k for k in variables if not k.startswith("_")]


_JINJA = re.compile(r"\{[{%#]|[}%#]\}")


def parse_assignments(pairs: Iterable[str], known: list[str]) -> dict[str, str]:
    """``["service_name=foo", ...]`` -> ``{"service_name": "foo"}``, refusing unknown keys."""
    answers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScaffoldError(f"{pair!r} is not KEY=VALUE",
                                hint="e.g. labbuild new-service service_name=node-red container_port=1880")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ScaffoldError(f"unknown template variable {key!r}",
                                hint=f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(known))
        if _JINJA.search(value):
            raise ScaffoldError(f"{key}: {value!r} holds template syntax ({{{{ }}}}, {{% %}} or {{# #}})",
                                hint="answers are data, never templates: write the value without those delimiters")
        answers[key] = value
    return answers


def _given_choice_problems(variables: dict, given: dict[str, str]) -> list[str]:
    """Choice answers cookiecutter itself would refuse with a bare ValueError."""
    out = []
    for key, value in given.items():
        choices = variables.get(key)
        if isinstance(choices, list) and value not in [str(c) for c in choices]:
            out.append(f"{key}: {value!r} is not one of: {', '.join(map(str, choices))}")
    return out


# --------------------------------------------------------------------------- paths

def module_name(service: str) -> str:
    """``node-red`` -> ``node_red``: the Python module name of a service's test."""
    return service.replace("-", "_")


def destinations(root: Path, service: str) -> tuple[Path, Path]:
    """Where a service's blueprint and testinfra test live in the lab repository."""
    return (root / "blueprints" / "services" / f"{service}.toml",
            root / "tests" / "services" / f"test_{module_name(service)}.py")


def placeholders(path: Path, display: str | None = None) -> list[Problem]:
    """Template placeholders still in a blueprint (TODO text, the zero digest), one per line."""
    out = []
    text = path.read_text("utf-8")
    for no, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#") or not PLACEHOLDER_RE.search(line):
            continue
        what = "the placeholder digest" if ZERO_DIGEST in line else "a TODO placeholder"
        hint = ("run `labbuild lock --update NAME` to pin the tag's digest" if ZERO_DIGEST in line
                else "replace it with the real text")
        out.append(Problem(file=display or str(path), path=line.split("=", 1)[0].strip(),
                           message=f"still holds {what}", line=no, hint=hint))
    return out


# --------------------------------------------------------------------------- one run

def _collect_answers(template: Path, given: dict[str, str], no_input: bool) -> dict:
    """Cookiecutter's full context for the run: defaults, ``given``, then the prompts."""

    context = generate_context(context_file=str(template / "cookiecutter.json"),
                               extra_context=dict(given))
    context["_cookiecutter"] = {k: v for k, v in context["cookiecutter"].items() if not k.startswith("_")}
    context["cookiecutter"].update(prompt_for_config(context, no_input))
    return context


def _render(template: Path, context: dict, out_dir: Path) -> Path:

    context["cookiecutter"].update(_template=str(template), _output_dir=str(out_dir),
                                   _repo_dir=str(template), _checkout=None)
    return Path(generate_files(repo_dir=str(template), context=context, output_dir=str(out_dir),
                               accept_hooks=True))


def _refuse_existing(root: Path, service: str) -> None:
    for path in destinations(root, service):
        if path.exists():
            raise ScaffoldError(f"service {service!r} exists already: {_rel(path, root)}",
                                hint="pick another service_name, or edit the existing blueprint")


def new_service(root: Path, pairs: Iterable[str] = (), *, no_input: bool = False,
                template: Path | None = None) -> ScaffoldResult:
    """Scaffold a service into the lab at ``root``; raise ScaffoldError on any problem.

    ``pairs`` are KEY=VALUE answers; the rest are prompted for (or take the
    template's defaults with ``no_input``). Creates the blueprint and the test,
    validates the blueprint against the lab, and removes both again when it
    is invalid. Never overwrites an existing service.
    """

    root = Path(root)
    template = template or find_template(root)
    variables = template_variables(template)
    given = parse_assignments(pairs, public_keys(variables))
    if problems := _given_choice_problems(variables, given):
        raise _rejected(problems)
    if "service_name" in given:
        _refuse_existing(root, given["service_name"])
    try:
        context = _collect_answers(template, given, no_input)
        answers = {k: str(v) for k, v in context["cookiecutter"].items() if not k.startswith("_")}
        if problems := answer_problems(template, answers):
            raise _rejected(problems)
        service = answers["service_name"]
        _refuse_existing(root, service)
        with tempfile.TemporaryDirectory(prefix=".labbuild-scaffold-") as tmp:
            project = _render(template, context, Path(tmp))
            created = _place(root, project, service)
    except CookiecutterException as exc:
        raise ScaffoldError(f"cookiecutter failed: {exc}",
                            hint=f"check {template} (cookiecutter.json and the template files)") from None
    except ValueError as exc:  # cookiecutter's refusal of a bad choice or context
        raise ScaffoldError(str(exc), hint="see the choices with `labbuild new-service --help`") from None

    blueprint = created[0]
    invalid = validate_paths(root, [blueprint])
    if invalid:
        for path in created:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise ScaffoldError(f"the rendered blueprint of {service!r} is invalid in this lab; nothing was kept",
                            problems=invalid, hint="change the answers above (e.g. host_port=...) and run again")
    todo = placeholders(blueprint, _rel(blueprint, root))
    return ScaffoldResult(service=service, created=created, todo=todo, answers=answers)


def _rejected(problems: list[str]) -> ScaffoldError:
    return ScaffoldError("the answers were rejected; nothing was written",
                         problems=[Problem(file="answers", path=p.split(":", 1)[0],
                                           message=p.split(":", 1)[1].strip()) for p in problems],
                         hint="pass corrected KEY=VALUE pairs")


def _place(root: Path, project: Path, service: str) -> list[Path]:
    """Copy the rendered blueprint and test into the lab (atomically, never overwriting)."""
    blueprint_dst, test_dst = destinations(root, service)
    sources = [(project / f"{service}.toml", blueprint_dst),
               (project / f"test_{module_name(service)}.py", test_dst)]
    for src, _ in sources:
        if not src.is_file():
            raise ScaffoldError(f"the template did not render {src.name}",
                                hint=f"check the {TEMPLATE_NAME}/ template directory")
    _refuse_existing(root, service)
    created: list[Path] = []
    try:
        for src, dst in sources:
            atomic_write(dst, src.read_bytes())
            created.append(dst)
    except BaseException:
        for path in created:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    return created


def next_steps(result: ScaffoldResult, root: Path) -> list[str]:
    """What the contributor does next, in order (the CONTRIBUTING.md flow)."""
    bp, test = (_rel(p, root) for p in result.created)
    name = result.service
    return [
        f"fill in {bp}: image name and tag, ports, [health], [metrics], the three [[runbook]] entries",
        f"add {name!r} to a profile in blueprints/lab.toml",
        f"labbuild validate {bp}",
        f"labbuild lock --update {name}        # pins the digest and records the closure",
        f"install a local lab with it, then: LAB_LIVE=1 pytest {test} -v   (or: labbuild check --dir DIR)",
        "open the PR: CI runs labbuild validate, labbuild lock --check and the test suite "
        "(see CONTRIBUTING.md for the checklist)",
    ]
