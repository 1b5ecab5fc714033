"""Secrets on the target: generated at install into ``DIR/.env`` (0600), kept across upgrades.

A bundle names its secrets, never their values: ``secrets.env.example``
holds one ``KEY=`` line per secret with its kind, length and optional prefix
in the comment above it, and manifest.json lists each service's keys. A derived secret
(``derive=bcrypt from=KEY``) is made from KEY's value once that exists: its hash, never random.
Operator-supplied secrets are never generated (they are commented out in the
example and listed apart in the manifest; ``builder.install.inputs`` checks them). Existing lines of
``DIR/.env`` (values, comments, operator overrides) are never changed.
"""

from __future__ import annotations

import os
import secrets as _random
import string
from pathlib import Path
from typing import Callable, Iterable

import bcrypt

from ..format.secrets_example import read_secrets_example
from ..fsutil import atomic_write
from ..host.auditlog import check_appendable, record
from ..host.dotenv import env_keys, env_values, plain_value, raw_value, read_env
from ..host.labdir import ENV_FILE

ALPHABETS = {
    "token": string.ascii_letters + string.digits + "-_",
    "password": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
}


def secret_specs(example: str) -> dict[str, tuple[str, int]]:
    """``{KEY: (kind, length)}`` from a bundle's secrets.env.example (``format.secrets_example.read_secrets_example``:
    ``# svc: generate=token length=32`` above each ``KEY=`` line; token/32 when unsaid)."""
    return {s.key: (s.generate, s.length) for s in read_secrets_example(example) if not s.derive_from}


def derived_specs(example: str) -> dict[str, tuple[str, str]]:
    """``{KEY: (hash, SOURCE_KEY)}`` of the derived secrets (``# svc: derive=bcrypt from=SOURCE_KEY``)."""
    return {s.key: (s.generate, s.derive_from) for s in read_secrets_example(example) if s.derive_from}


def derive_secret(kind: str, value: str) -> str:
    """The ``kind`` hash of ``value``: bcrypt, ``$2b$`` with cost 10 (pyca/bcrypt, the OpenBSD code;
    n8n's bcryptjs reads ``$2a$``/``$2b$``/``$2y$``)."""
    if kind != "bcrypt":
        raise ValueError(f"unknown derivation {kind!r}")
    if len(value.encode("utf-8")) > 72:
        raise ValueError("bcrypt reads at most 72 bytes of a password")
    return bcrypt.hashpw(value.encode("utf-8"), bcrypt.gensalt(rounds=10)).decode("ascii")


def merge_derived(text: str, derived: dict[str, tuple[str, str]],
                  derive: Callable[[str, str], str] = derive_secret) -> tuple[str, list[str]]:
    """``text`` plus a line for every derived key it lacks whose source has a value (quoted for
    compose and sh: a bcrypt hash holds ``$``). Returns the new text and the keys added."""
    have, values = env_keys(text), env_values(text)
    added = [k for k in sorted(derived) if k not in have and plain_value(values.get(derived[k][1], ""))]
    if not added:
        return text, []
    text = text if not text or text.endswith("\n") else text + "\n"
    for key in added:
        kind, source = derived[key]
        text += f"{key}={raw_value(derive(kind, plain_value(values[source])))}\n"
    return text, added


def secret_prefixes(example: str) -> dict[str, str]:
    """``{KEY: prefix}`` for the secrets whose comment says ``prefix=P`` (``# svc: ... prefix=sk-``).

    The prefix is fixed text the consuming service demands (LiteLLM's ``sk-``);
    ``length`` counts only the random characters after it.
    """
    return {s.key: s.prefix for s in read_secrets_example(example) if s.prefix}


def generate_secret(kind: str, length: int) -> str:
    """A random value of ``kind`` (token | password | hex) and ``length`` characters."""
    alphabet = ALPHABETS.get(kind, ALPHABETS["token"])
    return "".join(_random.choice(alphabet) for _ in range(length))


def merge_secrets(existing: str, wanted: dict[str, tuple[str, int]],
                  generate: Callable[[str, int], str] = generate_secret,
                  prefixes: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """``existing`` .env text plus a generated line for every wanted key it lacks.

    Existing lines (values, comments, overrides) are kept verbatim; a key's
    value starts with its ``prefixes`` entry. Returns the new text and the
    keys added (never the values).
    """
    prefixes = prefixes or {}
    have = env_keys(existing)
    added = [k for k in sorted(wanted) if k not in have]
    if not added:
        return existing, []
    text = existing if not existing or existing.endswith("\n") else existing + "\n"
    for key in added:
        text += f"{key}={prefixes.get(key, '')}{generate(*wanted[key])}\n"
    return text, added


def write_secrets(install_dir: Path, example: str, required: Iterable[str] = (), *,
                  owners: dict[str, str] | None = None, command: str = "install") -> list[str]:
    """Add the missing secrets to ``DIR/.env`` (0600); return the keys added.

    ``example``: the release's secrets.env.example text; ``required``: every
    key the manifest's services name (token/32 when the example does not say).
    Keys added are recorded in ``DIR/audit.log`` as done by ``command``, with the
    services owning them (``owners``: key -> service; else the example's comments).
    """
    env_path = install_dir / ENV_FILE
    existing = read_env(install_dir)
    wanted = secret_specs(example)
    derived = derived_specs(example)
    for key in required:
        if key not in derived:
            wanted.setdefault(key, ("token", 32))
    text, added = merge_secrets(existing, wanted, prefixes=secret_prefixes(example))
    text, made = merge_derived(text, derived)     # after the random ones: a hash of a value made just now
    added += made
    if added:
        check_appendable(install_dir)        # no secret is made that the audit log would not name
    if added or not env_path.exists():
        atomic_write(env_path, text, mode=0o600)
    else:
        os.chmod(env_path, 0o600)
    if added:
        said = {s.key: s.service for s in read_secrets_example(example) if s.service}
        owners = {**said, **(owners or {})}
        record(install_dir, command, added, [owners[k] for k in added if k in owners],
               detail=f"generated {len(added)} secret(s) into {ENV_FILE}")
    return added


