"""Type checks of dataclasses built from parsed JSON.

``Manifest(**data)`` happily holds ``"verified": "false"`` (a string, truthy);
``field_problems`` walks a frozen dataclass tree and names every field whose
value is not of its annotated type (``str``, ``int`` — never ``bool`` —,
``bool``, ``None`` unions, ``tuple[X, ...]``, ``dict[str, X]``, nested
dataclasses), so a loader can refuse it with the key path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _ok(value: Any, hint: Any, path: str, out: list[str]) -> None:
    origin = typing.get_origin(hint)
    if hint is Any:
        return
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return
        for option in options:
            if option is type(None):
                continue
            trial: list[str] = []
            _ok(value, option, path, trial)
            if not trial:
                return
        out.append(f"{path}: expected {_name(hint)}, got {type(value).__name__}")
        return
    if origin is tuple:
        if not isinstance(value, tuple):
            out.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        item = typing.get_args(hint)[0]
        for i, v in enumerate(value):
            _ok(v, item, f"{path}[{i}]", out)
        return
    if origin is dict:
        if not isinstance(value, dict):
            out.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        key_t, val_t = typing.get_args(hint)
        for k, v in value.items():
            _ok(k, key_t, f"{path} key", out)
            _ok(v, val_t, f"{path}.{k}", out)
        return
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            out.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        out.extend(field_problems(value, path))
        return
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{path}: expected an integer, got {type(value).__name__} {value!r}"[:200])
        return
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            out.append(f"{path}: expected a number, got {type(value).__name__}")
        return
    if isinstance(hint, type) and not isinstance(value, hint):
        out.append(f"{path}: expected {_name(hint)}, got {type(value).__name__} {value!r}"[:200])


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def field_problems(obj: Any, path: str = "") -> list[str]:
    """Every field of dataclass ``obj`` (recursively) not of its annotated type."""
    out: list[str] = []
    for f in dataclasses.fields(obj):
        _ok(getattr(obj, f.name), _hints(type(obj))[f.name], f"{path}.{f.name}" if path else f.name, out)
    return out


def too_deep(data: Any, limit: int) -> bool:
    """Whether lists/dicts in ``data`` nest deeper than ``limit`` (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def summarize(problems: list[str]) -> str:
    """The first problem, and how many more there are."""
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
