"""The blueprint JSON Schema: the single definition of the format.

``blueprint_schema`` serves it (package data, ``builder/schemas/``) to
``labbuild schema``; ``schema_problems`` checks one file's data against it
and turns each violation into a ``Problem`` with a readable message and a hint
taken from the schema itself.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cache
from importlib import resources
from typing import Iterable

from ..names import grammar, pattern_fullmatch, repository_problem
from .source import Collector, Source, dotted_path


@cache
def blueprint_schema() -> dict:
    """The blueprint JSON Schema (Draft 2020-12), shipped as package data."""
    text = resources.files("builder").joinpath("schemas/blueprint.schema.json").read_text("utf-8")
    return json.loads(text)

@cache
def _validator():
    """Draft 2020-12 with two strictnesses Python's defaults lack: ``pattern`` ends
    like ECMA 262 (``$`` does not match before a trailing newline) and an
    ``integer`` is never a float (TOML ``1880.0`` would render an invalid port)."""
    # Lazy: jsonschema costs ~150 ms to import, and most commands that import
    # builder.blueprint (for the typed Lab) never validate (see bench/startup.py).
    from jsonschema import Draft202012Validator, ValidationError, validators

    def pattern(validator, value, instance, schema):
        if validator.is_type(instance, "string") and not re.search(pattern_fullmatch(value), instance):
            yield ValidationError(f"{instance!r} does not match {value!r}")

    def is_integer(checker, instance) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    strict = validators.extend(Draft202012Validator, validators={"pattern": pattern}, type_checker=checker)
    return strict(blueprint_schema())


def _schema_at(path: Iterable) -> dict:
    """The sub-schema that describes the value at ``path`` (best effort, for hints)."""
    schema = blueprint_schema()
    node = schema
    for part in path:
        node = _deref(schema, node)
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            ap = node.get("additionalProperties")
            node = ap if isinstance(ap, dict) else {}
    return _deref(schema, node)


def _deref(schema: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"].split("/")[-1]
        node = {**schema["$defs"][ref], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_problems(src: Source, out: Collector) -> None:
    """Every schema violation of ``src.data``, as problems with readable messages and hints."""
    errors = sorted(_validator().iter_errors(src.data), key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        path = tuple(err.absolute_path)
        hint = None
        if err.validator == "additionalProperties":
            allowed = sorted(_schema_at(path).get("properties", {}))
            extra = [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
            for key in extra:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                h = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                out.add(src, path + (key,), f"unknown key {key!r}", hint=h)
            continue
        if err.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            key = missing[0] if missing else "?"
            section = dotted_path(path) or "top level"
            out.add(src, path + (key,), f"required key {key!r} is missing",
                    hint=f"add {key} = ... to [{section}]" if path else f"add a [{key}] table")
            continue
        desc = _schema_at(path).get("description")
        message = _friendly_message(err, path)
        out.add(src, path, message, hint=desc)


def _friendly_message(err, path: tuple) -> str:
    inst = err.instance
    if path and path[-1] == "tag" and inst == "latest":
        return "tag 'latest' is not allowed: pin a real version tag"
    if path and path[-1] == "digest" and err.validator == "pattern":
        return f"{inst!r} is not a digest: expected 'sha256:' followed by 64 lower-case hex digits"
    if err.validator == "pattern" and err.validator_value == grammar("repository")[0].pattern \
            and (why := repository_problem(inst)):    # says which part: an IPv6 host, a port past 65535
        return why
    if err.validator == "pattern":
        return f"{inst!r} does not match the required pattern {err.validator_value}"
    if err.validator == "enum":
        return f"{inst!r} is not one of: {', '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        return f"expected {err.validator_value}, got {type(inst).__name__} {inst!r}"
    if err.validator in ("minimum", "maximum"):
        return f"{inst!r} is out of range ({err.validator} {err.validator_value})"
    return err.message

