"""``DIR/.env``: the install's secrets and operator overrides, which compose reads. Its one reader
(``read_env``) and the views every command takes of its text: the keys assigned, the keys with a
value, the raw values, and the text with some values replaced (lines kept in place)."""

from __future__ import annotations

import re
from pathlib import Path

from .labdir import ENV_FILE

_ENV_LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")
_ASSIGN_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=(.*)$")


def filled_keys(env_text: str) -> set[str]:
    """Keys of a .env text that are assigned a non-empty value (quotes alone count as empty)."""
    out = set()
    for line in env_text.splitlines():
        m = _ASSIGN_RE.match(line)
        if m and m.group(2).strip().strip("'\"").strip():
            out.add(m.group(1))
    return out


def read_env(install_dir: Path) -> str:
    """The text of ``DIR/.env``, or "" when there is none yet."""
    try:
        return (install_dir / ENV_FILE).read_text("utf-8")
    except FileNotFoundError:
        return ""


def env_keys(text: str) -> set[str]:
    """Keys assigned in a .env file's text."""
    return {m.group(1) for line in text.splitlines() if (m := _ENV_LINE_RE.match(line))}


def env_values(text: str) -> dict[str, str]:
    """``{KEY: raw value}`` of a .env file's text (the last assignment of a key wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _ENV_LINE_RE.match(line)
        if m:
            out[m.group(1)] = line[m.end():]
    return out


def replace_values(existing: str, wanted: dict[str, str]) -> tuple[str, list[str]]:
    """``existing`` .env text with each key of ``wanted`` set to its value (lines replaced in place,
    missing keys appended). Returns the new text and the keys whose value changed."""
    have = env_values(existing)
    changed = sorted(k for k, v in wanted.items() if have.get(k) != v)
    lines, done = [], set()
    for line in existing.splitlines():
        m = _ENV_LINE_RE.match(line)
        if m and m.group(1) in wanted:
            if m.group(1) in done:
                continue
            line = f"{m.group(1)}={wanted[m.group(1)]}"
            done.add(m.group(1))
        lines.append(line)
    lines += [f"{k}={wanted[k]}" for k in sorted(wanted) if k not in done]
    return "".join(line + "\n" for line in lines), changed
