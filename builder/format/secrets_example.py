"""``secrets.env.example``: the generated secrets a bundle asks for, and their one reader."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ExampleSecret:
    """A generated secret as ``secrets.env.example`` names it (written by
    ``builder.render.envfile.render_secrets_example``): a ``KEY=`` line under
    ``# svc: generate=KIND length=N[ prefix=P][: description]``."""

    key: str
    service: str | None      # None when the comment above the key does not say
    generate: str            # token | password | hex; token when unsaid
    length: int              # 32 when unsaid
    prefix: str = ""         # fixed text before the random part (LiteLLM's sk-)
    description: str = ""
    derive_from: str = ""    # a derived secret (generate is then its hash: bcrypt): the KEY it is made from


_EXAMPLE_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")
_EXAMPLE_COMMENT = re.compile(r"^# ([a-z][a-z0-9-]*): generate=(\w+) length=(\d+)(?: prefix=([A-Za-z0-9_-]+))?"
                              r"(?:: (.*))?$")
_DERIVE_COMMENT = re.compile(r"^# ([a-z][a-z0-9-]*): derive=(bcrypt) from=([A-Za-z_][A-Za-z0-9_]*)(?:: (.*))?$")
_DERIVE_SAID = re.compile(r"\bderive=")
_EXAMPLE_PREFIX = re.compile(r"\bprefix=([A-Za-z0-9][A-Za-z0-9_-]{0,15})(?=[\s:]|$)")
_PREFIX_GRAMMAR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")


def read_secrets_example(text: str) -> list[ExampleSecret]:
    """The generated secrets of a ``secrets.env.example``, in order: its one reader (install
    generates them, the Helm export makes Secrets of them; install.sh's awk reads the same
    lines and is tested to agree). Operator-supplied secrets are commented out (``#KEY=``):
    never read. A comment in the form above gives service, kind, length, prefix and
    description; ``# svc: derive=bcrypt from=KEY[: description]`` a derived secret (made from
    KEY's value, never random; a ``derive=`` this reader does not know leaves the key out); any other comment lines just above a key are searched for ``generate``,
    ``length`` and ``prefix`` (token/32 when they do not say)."""
    out: list[ExampleSecret] = []
    comments: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        m = _EXAMPLE_KEY.match(line)
        if m and (secret := _example_secret(m.group(1), comments)) is not None:
            out.append(secret)
        comments = []
    return out


def _example_secret(key: str, comments: list[str]) -> ExampleSecret | None:
    for c in reversed(comments):
        if m := _DERIVE_COMMENT.match(c):
            return ExampleSecret(key, m[1], m[2], 0, description=m[4] or "", derive_from=m[3])
        if _DERIVE_SAID.search(c):
            return None          # a derivation this reader does not know: never made a random value
        if m := _EXAMPLE_COMMENT.match(c):
            prefix = m[4] if m[4] and _PREFIX_GRAMMAR.fullmatch(m[4]) else ""
            return ExampleSecret(key, m[1], m[2], int(m[3]), prefix, m[5] or "")
    said = " ".join(comments)
    kind = re.search(r"generate[ =:]*(token|password|hex)", said)
    length = re.search(r"length[ =:]*([0-9]+)", said)
    prefix = _EXAMPLE_PREFIX.search(said)
    return ExampleSecret(key, None, kind.group(1) if kind else "token", int(length.group(1)) if length else 32,
                         prefix.group(1) if prefix else "")

