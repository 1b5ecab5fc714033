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
    "registry": "registry_host",
    "repository": "repository",
    "model_tag": "model_tag",
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


def is_port(value: object) -> bool:
    """Whether ``value`` is a port number: an int of the schema's ``port_number`` range (1-65535)."""
    d = _defs()["port_number"]
    return isinstance(value, int) and not isinstance(value, bool) and d["minimum"] <= value <= d["maximum"]


# Registry hosts and repositories (image and model names) cross the bundle: validate
# and the manifest reader ask the same questions below (a model format asks them before
# its own layout's: ``format.models.ModelFormat.name_problem``), so a name one accepts
# the other does too. IPv6 addresses are refused on both sides: Ollama's model names
# cannot hold one, and engines before distribution/reference 0.6 (Docker 20.10, say)
# call "[::1]:5000/x" an invalid reference format.

def _qualified(host: str) -> bool:
    """Docker reads a name's first component as its registry only with a '.' or ':', or as localhost."""
    return "." in host or ":" in host or host == "localhost"


def _host_problem(host: str) -> str | None:
    """What is wrong with a registry host, said plainly; None when it is nothing said here."""
    if host.startswith("["):
        return (f"{host!r} is an IPv6 address, which labbuild does not take as a registry host "
                "(Ollama's model names and many engines cannot hold one): give the registry a host name")
    name, colon, port = host.rpartition(":")
    if colon and re.fullmatch(r"[0-9]{1,20}", port) and is_valid("registry", name) and not is_port(int(port)):
        return f"{host!r}: port {port} is out of range (1-65535)"
    return None


def registry_problem(host: object) -> str | None:
    """None when ``host`` is a registry host (``host[:port]``, qualified), else why not."""
    if is_valid("registry", host):
        return None if _qualified(host) else f"{host!r} is not a registry host: no '.', no port, not localhost"
    return isinstance(host, str) and _host_problem(host) or problem("registry", host)


def repository_problem(name: object) -> str | None:
    """None when ``name`` is a fully qualified repository (an image's or a model's name), else why not."""
    if is_valid("repository", name):
        return None if _qualified(name.split("/", 1)[0]) else f"{name!r} is not fully qualified"
    host = name.split("/", 1)[0] if isinstance(name, str) and "/" in name else ""
    return host and _host_problem(host) or problem("repository", name)


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
