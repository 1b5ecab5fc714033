"""Write Helm template text from plain Python data, with Helm actions spliced in.

Every file under ``templates/`` is a Go template before it is YAML, so data
(names, paths, commands, env values: anything from a bundle) never enters it
as template syntax. The rule, kept here and nowhere else:

- a string is written by ``quoted``: one double-quoted form that YAML (a
  scalar or a key) and Go (a string literal, the argument of an action) both
  read back exactly, and in which no ``{{`` is left for Go's lexer to find;
- an action's argument is ``quoted`` too (``Raw(f'{{ include "x" {quoted(name)} }}')``);
- text printed outside YAML (NOTES.txt) goes through ``template_text``;
- data never goes into a template comment: ``*/}}`` in it would close the
  comment and the rest would run as template code.

``emit(obj)`` serialises dicts, lists and scalars as block YAML with every
string ``quoted``. ``Raw("{{ ... }}")`` is a scalar written verbatim; a
``Block(...)`` key is a run of verbatim template lines at the current
indentation (``%I`` in them becomes that indentation, ``%J`` two more), for
conditionals and ``toYaml | nindent`` values; data lines go into a block as
``emitted(obj)``, which no ``%I`` in the data can change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Raw:
    text: str


@dataclass(frozen=True)
class Block:
    lines: tuple[str | Raw, ...]       # Raw: a data line, written as it is

    def __init__(self, *lines: str | Raw) -> None:
        object.__setattr__(self, "lines", tuple(lines))


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if char.isprintable():
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def quoted(text: str) -> str:
    """``text`` in double quotes, read back exactly both by YAML (a double-quoted scalar or key)
    and by Go (an interpreted string literal), holding no ``{{`` for text/template's lexer to
    take as an action. Escaped: ``"`` and ``\\``; newline, CR and tab as ``\\n \\r \\t``;
    every other character Python does not call printable as ``\\uXXXX``/``\\UXXXXXXXX`` (go-yaml
    refuses a raw DEL and folds a raw U+0085 into a space); a ``{`` that another ``{`` follows
    as ``\\u007b``. YAML and Go read each of these escapes alike."""
    body = "".join(_escape(c) for c in text)
    return '"' + re.sub(r"\{(?=\{)", r"\\u007b", body) + '"'


def template_text(text: str) -> str:
    """``text`` printed as itself by a Go template, outside YAML (NOTES.txt): every ``{`` is
    printed by an action, so none can start one."""
    return text.replace("{", '{{ "{" }}')


def scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return "null"
    return quoted(str(value))


_LONGEST_KEY = 1000     # go-yaml reads no implicit key longer than 1024 characters
_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}   # bare: booleans or null to go-yaml


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) and key.lower() not in _YAML11_WORDS else quoted(key)


def emit(obj: Any, indent: int = 0) -> list[str]:
    """Block YAML lines for ``obj`` at ``indent``."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, Block):
                out += [pad + (line.text if isinstance(line, Raw) else
                               line.replace("%I", str(indent)).replace("%J", str(indent + 2))) for line in k.lines]
                continue
            key = _key(k)
            if len(key) > _LONGEST_KEY:      # an explicit key: "? KEY" on a line of its own, then ": value"
                out.append(f"{pad}? {key}")
                key = ""
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{key}:")
                out += emit(v, indent + 2)
            elif isinstance(v, dict):
                out.append(f"{pad}{key}: {{}}")
            elif isinstance(v, list):
                out.append(f"{pad}{key}: []")
            else:
                out.append(f"{pad}{key}: {scalar(v)}")
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


def emitted(obj: Any, indent: int = 0) -> tuple[Raw, ...]:
    """``emit(obj, indent)`` as data lines of a ``Block``."""
    return tuple(Raw(line) for line in emit(obj, indent))


def document(obj: Any, before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> str:
    """One YAML document (``---`` first), optionally wrapped in template lines."""
    return "\n".join(["---", *before, *emit(obj), *after]) + "\n"
