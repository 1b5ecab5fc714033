"""Every identifier grammar of labbuild, in one place, matched in full.

The grammars are the ``$defs`` of the blueprint JSON Schema
(``builder/schemas/blueprint.schema.json``), so the schema, editors, the
semantic rules and every loader (lab.toml, lockfile, release records,
bundle manifests, the install dir) agree on what a name is. Matching is
always ``re.fullmatch``: a pattern's ``$`` never lets a trailing newline
through. The POSIX installer (``templates/install.sh``) cannot read JSON; its
``case`` patterns are tested against the same grammars
(``tests/test_names.py``).

Names that reach a path are checked again where the path is built
(``inside``): the resolved path must stay under its root.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path

KINDS = {
    "service": "name",
    "profile": "profile",
    "lab": "lab_name",
    "version": "version",
    "env_key": "env_key",
    "secret": "env_key",
    "volume": "ident",
    "port": "ident",
    "file_name": "file_name",
    "tag": "tag",
    "digest": "digest",
    "platform": "platform",
    "container_path": "container_path",
    "host_path": "host_path",
    "line": "line",
}


@cache
def _defs() -> dict:
    text = resources.files("builder").joinpath("schemas/blueprint.schema.json").read_text("utf-8")
    return json.loads(text)["$defs"]


@cache
def grammar(kind: str) -> tuple[re.Pattern, int, int]:
    """``(compiled pattern, min length, max length)`` of an identifier kind."""
    d = _defs()[KINDS[kind]]
    return re.compile(d["pattern"]), d.get("minLength", 0), d.get("maxLength", 1 << 20)


def describe(kind: str) -> str:
    """What a valid ``kind`` looks like, for hints."""
    return _defs()[KINDS[kind]].get("description", f"a valid {kind}")


def is_valid(kind: str, value: object) -> bool:
    """Whether ``value`` is a string of the ``kind`` grammar, matched in full."""
    if not isinstance(value, str):
        return False
    pattern, low, high = grammar(kind)
    return low <= len(value) <= high and pattern.fullmatch(value) is not None


def problem(kind: str, value: object) -> str | None:
    """None when valid, else a message naming the value and the grammar."""
    if is_valid(kind, value):
        return None
    return f"{value!r} is not a valid {kind.replace('_', ' ')}: {describe(kind)}"


def inside(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing (ValueError) any result that resolves outside ``root``."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{'/'.join(parts)!r} leads outside {root}")
    return path


def pattern_fullmatch(pattern: str) -> str:
    """A schema ``pattern`` with JSON Schema (ECMA 262) end semantics in Python's ``re``:
    a final ``$`` becomes ``\\Z`` so a trailing newline does not match."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern
