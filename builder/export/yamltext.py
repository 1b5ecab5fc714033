"""Write Helm template text from plain Python data, with Helm actions spliced in.

``emit(obj)`` serialises dicts, lists and scalars as block YAML whose
strings are JSON-quoted (valid YAML, never read as a Helm action: a string
holding ``{{`` is emitted through ``toJson``). ``Raw("{{ ... }}")`` is a
scalar written verbatim; a ``Block(...)`` key is a run of verbatim template
lines at the current indentation (``%I`` in them becomes that indentation,
``%J`` two more), for conditionals and ``toYaml | nindent`` values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Raw:
    text: str


@dataclass(frozen=True)
class Block:
    lines: tuple[str, ...]

    def __init__(self, *lines: str) -> None:
        object.__setattr__(self, "lines", tuple(lines))


def scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    text = json.dumps(str(value), ensure_ascii=False)
    if "{{" in text or "}}" in text:
        return "{{ " + text + " | toJson }}"
    return text


def _key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").replace(".", "").replace("/", "").isalnum() \
        and not key[0].isdigit() else json.dumps(key)


def emit(obj: Any, indent: int = 0) -> list[str]:
    """Block YAML lines for ``obj`` at ``indent``."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, Block):
                out += [pad + line.replace("%I", str(indent)).replace("%J", str(indent + 2)) for line in k.lines]
            elif isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{_key(k)}:")
                out += emit(v, indent + 2)
            elif isinstance(v, dict):
                out.append(f"{pad}{_key(k)}: {{}}")
            elif isinstance(v, list):
                out.append(f"{pad}{_key(k)}: []")
            else:
                out.append(f"{pad}{_key(k)}: {scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                lines = emit(item, indent + 2)
                out.append(pad + "- " + lines[0][indent + 2:])
                out += lines[1:]
            else:
                out.append(f"{pad}- {scalar(item)}")
    else:
        out.append(pad + scalar(obj))
    return out


def document(obj: Any, before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> str:
    """One YAML document (``---`` first), optionally wrapped in template lines."""
    return "\n".join(["---", *before, *emit(obj), *after]) + "\n"
