"""``SHA256SUMS``: ``sha256sum -c`` format, every file of a bundle but itself and the signatures."""

from __future__ import annotations

import re

from ..errors import Problem
from ..limits import MAX_MEMBERS, MAX_PROBLEMS, MAX_SUMS_BYTES
from .files import SUMS


def render_sums(files: dict[str, str]) -> bytes:
    """SHA256SUMS text (``sha256sum -c`` format) from ``{arcname: sha256 hex}``."""
    return "".join(f"{h}  {n}\n" for n, h in sorted(files.items(), key=lambda kv: kv[0].encode())).encode()


_SUMS_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^\x00-\x1f\x7f]+)")


def parse_sums(data: bytes, problems: list[Problem]) -> dict[str, str]:
    """``{arcname: sha256 hex}`` from SHA256SUMS; each bad line becomes a Problem.

    Bounded: past ``MAX_SUMS_BYTES`` the file is refused whole, and after
    ``MAX_PROBLEMS`` malformed lines the rest are counted, not listed.
    """
    sums: dict[str, str] = {}
    if len(data) > MAX_SUMS_BYTES:
        problems.append(Problem(file=SUMS, path="", message=f"{len(data)} bytes: larger than a bundle's "
                                f"SHA256SUMS may be ({MAX_SUMS_BYTES})", hint="the bundle is damaged"))
        return sums
    count = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
    if count > MAX_MEMBERS:
        problems.append(Problem(file=SUMS, path="", message=f"{count} lines: more than a bundle has "
                                f"members ({MAX_MEMBERS})", hint="the bundle is damaged"))
        return sums
    bad = 0
    lines = data.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()                             # the final newline ends the file
    for no, line in enumerate(lines, start=1):
        m = _SUMS_LINE.fullmatch(line)
        if not m:
            bad += 1
            if bad <= MAX_PROBLEMS:
                problems.append(Problem(file=SUMS, path="", line=no, message="malformed line"))
            continue
        if m[2] in sums:
            problems.append(Problem(file=SUMS, path="", line=no, message=f"{m[2]} listed twice"))
        sums[m[2]] = m[1]
    if bad > MAX_PROBLEMS:
        problems.append(Problem(file=SUMS, path="", message=f"and {bad - MAX_PROBLEMS} more malformed lines"))
    return sums

