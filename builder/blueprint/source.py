"""Reading blueprint TOML files: bytes to data, key paths to line numbers,
and the collector every check reports its problems to.

``read_toml`` never raises for bad input: an unreadable, empty, binary,
non-UTF-8 or syntactically broken file becomes a ``Problem`` and a ``Source``
without data. ``locate_lines`` maps key paths to lines so each problem can
point at its line. ``without_update_policy`` is a blueprint's text without the
``[image]`` keys no bundle is made from (``track``, ``group``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import Problem
from ..fsutil import CapExceeded, read_capped
from ..limits import MAX_BLUEPRINT_BYTES, MAX_NESTING
from ..typecheck import too_deep

_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_.-]+)\s*=')


def _split_dotted(key: str) -> list[str]:
    parts, buf, quote = [], "", None
    for ch in key:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
    parts.append(buf.strip())
    return parts


def locate_lines(text: str) -> dict[tuple, int]:
    """Map key paths (tuples of str/int) to 1-based line numbers.

    A best-effort scan of TOML headers and ``key =`` lines: enough to point a
    user at the right line; multi-line strings are skipped over.
    """
    lines: dict[tuple, int] = {}
    counters: dict[tuple, int] = {}
    table: tuple = ()
    in_multiline: str | None = None
    for no, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        m = _HEADER_RE.match(line)
        if m and not _KEY_RE.match(line):
            parts = tuple(_split_dotted(m.group(2)))
            if m.group(1) == "[[":
                idx = counters.get(parts, -1) + 1
                counters[parts] = idx
                table = parts + (idx,)
            else:
                table = parts
            lines.setdefault(table, no)
            for i in range(1, len(table)):
                lines.setdefault(table[:i], no)
            continue
        k = _KEY_RE.match(line)
        if k:
            key = tuple(_split_dotted(k.group(1)))
            lines.setdefault(table + key, no)
            for i in range(1, len(key)):
                lines.setdefault(table + key[:i], no)
            rest = line[k.end():]
            for q in ('"""', "'''"):
                if rest.count(q) % 2 == 1:
                    in_multiline = q
    return lines


def _line_for(lines: dict[tuple, int], path: tuple) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def dotted_path(path: Iterable) -> str:
    """``("ports", 0, "host")`` -> ``ports[0].host``: a key path as problems show it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Source:
    """One TOML file: where it is, how problems name it, its data (None when unreadable) and lines."""

    path: Path
    display: str
    data: dict | None = None
    lines: dict[tuple, int] = field(default_factory=dict)


class Collector:
    """Where every check reports: problems pointing at a file, key path and line."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, src: Source | str, path: tuple, message: str, hint: str | None = None,
            line: int | None = None) -> None:
        if isinstance(src, Source):
            file, line = src.display, line or _line_for(src.lines, path)
        else:
            file = src
        self.problems.append(Problem(file=file, path=dotted_path(path), message=message,
                                     line=line, hint=hint))


def display_name(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it is inside, else as given: how problems name a file."""
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def read_toml(path: Path, display: str, out: Collector) -> Source:
    """Read and parse one file; every way it can fail becomes a problem in ``out``, never an exception."""
    src = Source(path=path, display=display)
    try:
        raw = read_capped(path, MAX_BLUEPRINT_BYTES)
    except FileNotFoundError:
        out.add(display, (), "file not found", hint="check the path")
        return src
    except IsADirectoryError:
        out.add(display, (), "is a directory, not a TOML file")
        return src
    except CapExceeded as exc:
        out.add(display, (), str(exc).replace(str(path), "file", 1),
                hint=f"a blueprint is a small TOML text file (at most {MAX_BLUEPRINT_BYTES} bytes)")
        return src
    except OSError as exc:
        out.add(display, (), f"cannot read: {exc.strerror}")
        return src
    if not raw.strip():
        out.add(display, (), "file is empty", hint="a blueprint needs at least [service] and [image]")
        return src
    if b"\x00" in raw:
        out.add(display, (), "binary file, not TOML text", hint="blueprints are UTF-8 TOML files")
        return src
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        out.add(display, (), f"not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8",
                line=line)
        return src
    try:
        data = tomllib.loads(text)
    except RecursionError:
        out.add(display, (), "tables or arrays nested too deeply", hint=f"at most {MAX_NESTING} levels")
        return src
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        col = f", column {m.group(2)}" if m else ""
        clean = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        out.add(display, (), f"TOML syntax error{col}: {clean}", line=line,
                hint="fix the TOML syntax (https://toml.io)")
        return src
    if too_deep(data, MAX_NESTING):
        out.add(display, (), "tables or arrays nested too deeply", hint=f"at most {MAX_NESTING} levels")
        return src
    src.data = data
    src.lines = locate_lines(text)
    return src



UPDATE_POLICY_KEYS = ("track", "group")   # [image] keys that say how a pin moves; no bundle file is made from them


def without_update_policy(text: str) -> str:
    """``text`` without its ``[image]`` update-policy keys (``UPDATE_POLICY_KEYS``, with their
    comments), every other byte kept; ``text`` itself when it does not parse or has none."""
    # Lazy: tomlkit (~50 ms) is needed only when a release is made again from changed blueprints.
    import tomlkit

    try:
        doc = tomlkit.parse(text)
    except (tomlkit.exceptions.TOMLKitError, ValueError):
        return text
    image = doc.get("image")
    if not isinstance(image, dict) or not any(k in image for k in UPDATE_POLICY_KEYS):
        return text
    for key in UPDATE_POLICY_KEYS:
        if key in image:
            del image[key]
    return tomlkit.dumps(doc)
