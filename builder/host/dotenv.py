"""``DIR/.env``: the install's secrets and operator overrides, which compose reads. Its one reader
(``read_env``) and the views every command takes of its text: the keys assigned, the keys with a
value, the raw values and what compose reads from them (``plain_value``; ``raw_value`` writes one),
and the text with some values replaced or removed (other lines kept in place).

One reader, one cap, one message: ``read_env`` reads at most ``MAX_ENV_BYTES``, drops a UTF-8
byte-order mark (an editor's, which would otherwise hide the first key: install would
"generate" that secret again and the service's credential would silently change) and refuses
text that is not UTF-8, naming the file. Compose reads ``DIR/.env`` for its own settings too
(``COMPOSE_FILE``, ``COMPOSE_PROJECT_NAME``, ``DOCKER_HOST``, …): ``compose_control_keys``
names such lines, which labbuild refuses before it runs compose (``host.compose.Project``)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InstallError
from ..escape import env_value
from ..fsutil import CapExceeded, read_capped
from ..limits import MAX_ENV_BYTES
from .labdir import ENV_FILE

BOM = "\ufeff"
# What compose takes from the project directory's .env for itself, not for interpolation:
# every COMPOSE_* setting and the engine it talks to (docs.docker.com/compose/how-tos/environment-variables/envvars/).
COMPOSE_CONTROL = re.compile(r"COMPOSE_[A-Z0-9_]*|DOCKER_(HOST|CONTEXT|CERT_PATH|TLS_VERIFY|TLS|API_VERSION|CONFIG)")

_ENV_LINE = r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*="     # a key's assignment, as compose reads it
_ENV_LINE_RE = re.compile(_ENV_LINE)
_ASSIGN_RE = re.compile(_ENV_LINE + r"(.*)$")


def filled_keys(env_text: str) -> set[str]:
    """Keys of a .env text that are assigned a non-empty value (quotes alone count as empty)."""
    out = set()
    for line in env_text.splitlines():
        m = _ASSIGN_RE.match(line)
        if m and m.group(2).strip().strip("'\"").strip():
            out.add(m.group(1))
    return out


def read_env(install_dir: Path) -> str:
    """The text of ``DIR/.env`` (a byte-order mark dropped), or "" when there is none yet;
    InstallError naming the file when it is larger than ``MAX_ENV_BYTES`` or not UTF-8."""
    return env_text(read_env_bytes(install_dir), install_dir / ENV_FILE)


def read_env_bytes(install_dir: Path) -> bytes:
    """The bytes of ``DIR/.env`` (b"" when there is none), capped."""
    path = install_dir / ENV_FILE
    try:
        return read_capped(path, MAX_ENV_BYTES)
    except FileNotFoundError:
        return b""
    except CapExceeded:
        raise InstallError(f"{path}: larger than an install's .env may be ({MAX_ENV_BYTES} bytes)",
                           hint="DIR/.env holds KEY=value lines; move the large file elsewhere") from None
    except OSError as exc:
        raise InstallError(f"{path}: cannot be read ({exc.strerror or exc})",
                           hint="check the file's permissions") from None


def env_text(data: bytes, where: Path | str) -> str:
    """``.env`` bytes as text: UTF-8, a leading byte-order mark dropped; InstallError naming ``where``."""
    try:
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        raise InstallError(f"{where}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})",
                           hint="save it as UTF-8 (KEY=value lines); `iconv -t UTF-8` converts it") from None


def compose_control_keys(text: str) -> list[str]:
    """The keys of a .env text that steer compose itself (see ``COMPOSE_CONTROL``)."""
    return sorted(k for k in env_keys(text) if COMPOSE_CONTROL.fullmatch(k))


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


def without_keys(existing: str, keys: set[str]) -> str:
    """``existing`` .env text with every assignment of ``keys`` left out (other lines kept)."""
    kept = [line for line in existing.splitlines() if not ((m := _ENV_LINE_RE.match(line)) and m.group(1) in keys)]
    return "".join(line + "\n" for line in kept)


_PLAIN = re.compile(r"[A-Za-z0-9_.,:/+=@%^~-]*")


def raw_value(value: str) -> str:
    """``value`` as the text after ``KEY=`` in DIR/.env that compose reads back as exactly
    ``value``: as it is when it holds only letters, digits and ``_.,:/+=@%^~-`` (what install
    generates), else quoted by ``escape.env_value``. ValueError when no quoting can carry it."""
    return value if _PLAIN.fullmatch(value) else env_value(value)


def plain_value(raw: str) -> str:
    """The value compose reads from the text after ``KEY=``: single quotes literal, double quotes
    with ``\\\\``, ``\\"`` and ``\\$`` unescaped, else up to an inline `` #`` comment, trimmed."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r'\\([\\"$])', r"\1", text[1:-1])
    return text.split(" #", 1)[0].strip()
