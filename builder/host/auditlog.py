"""``DIR/audit.log``: who created, read out, changed or restored which secrets of an install.

One JSON object a line (``AuditEntry``): the time (UTC), the OS user (and ``SUDO_USER``), the
host, the labbuild command, the ``.env`` keys and the services touched, the outcome and what
failed — never a value. Every labbuild command that writes secrets into ``DIR/.env`` (install,
rollback, ``secrets rotate``/``set``, ``restore --secrets``), copies them out (``backup`` and the
snapshots before upgrades) or deletes them (``uninstall --volumes``) appends one entry, and so
does every change of a front-door user (``users add``, ...: the user in ``detail``, no keys).

The file is only ever appended to: opened with ``O_APPEND`` (no link followed), the line
written with one ``write`` and fsynced, mode 0600 (set when it was looser). A line cut short
by a crash (a torn last line: no newline at the end) is reported by the reader, never fatal;
the next append starts on a fresh line, so the entries after it stay whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pwd
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import InstallError
from ..fsutil import file_error
from ..typecheck import field_problems
from .labdir import AUDIT_FILE

OUTCOMES = ("ok", "failed", "rolled-back", "recovered")
MAX_LINE_BYTES = 64 << 10          # an entry is a few hundred bytes; longer lines are reported, not read


@dataclass(frozen=True)
class AuditEntry:
    """One operation on an install's secrets (see the module docstring)."""

    time: str                       # UTC, ISO 8601, seconds: 2026-12-01T10:00:00Z
    user: str                       # the OS user running labbuild (effective uid)
    host: str
    command: str                    # "install", "secrets rotate", "restore --secrets", ...
    keys: tuple[str, ...]           # .env keys touched, sorted; never a value
    services: tuple[str, ...]       # services owning or reading them, sorted
    outcome: str                    # ok | failed | rolled-back | recovered
    detail: str = ""                # what failed, or what else to know (never a value)
    sudo_user: str = ""             # who ran sudo, when it was sudo

    @property
    def moment(self) -> _dt.datetime:
        return parse_time(self.time)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": self.time, "user": self.user, "host": self.host, "command": self.command,
                               "keys": list(self.keys), "services": list(self.services), "outcome": self.outcome}
        if self.detail:
            out["detail"] = self.detail
        if self.sudo_user:
            out["sudo_user"] = self.sudo_user
        return out

    @classmethod
    def from_json(cls, data: Any) -> "AuditEntry":
        """An entry from one parsed line; ValueError saying what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            entry = cls(time=data["time"], user=data["user"], host=data["host"], command=data["command"],
                        keys=tuple(data["keys"]), services=tuple(data["services"]), outcome=data["outcome"],
                        detail=data.get("detail", ""), sudo_user=data.get("sudo_user", ""))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or malformed field {exc}") from None
        if problems := field_problems(entry):
            raise ValueError(problems[0])
        parse_time(entry.time)
        return entry


def parse_time(text: str) -> _dt.datetime:
    """An entry's ``time`` as an aware UTC datetime; ValueError when it is not ISO 8601."""
    moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _who() -> tuple[str, str]:
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    return user, os.environ.get("SUDO_USER", "") if os.geteuid() == 0 else ""


def new_entry(command: str, keys: Iterable[str], services: Iterable[str], outcome: str = "ok",
              detail: str = "", now: _dt.datetime | None = None) -> AuditEntry:
    """An entry for an operation of this process (time, user and host filled in)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    moment = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc).replace(microsecond=0)
    user, sudo_user = _who()
    return AuditEntry(time=moment.isoformat().replace("+00:00", "Z"), user=user, host=socket.gethostname(),
                      command=command, keys=tuple(sorted(set(keys))), services=tuple(sorted(set(services))),
                      outcome=outcome, detail=detail, sudo_user=sudo_user)


def _open_for_append(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise file_error(exc, path, "open the audit log for appending", InstallError) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InstallError(f"{path} is not a regular file", hint="labbuild appends the audit log there: move it away")
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


def check_appendable(install_dir: Path) -> None:
    """InstallError unless ``DIR/audit.log`` can be appended to: asked before a secret changes, so an
    operation that could leave no trail does not start."""
    os.close(_open_for_append(install_dir / AUDIT_FILE))


def append_entry(install_dir: Path, entry: AuditEntry) -> None:
    """Append ``entry`` as one line (O_APPEND, fsync); a torn last line is closed off first."""
    path = install_dir / AUDIT_FILE
    created = not path.exists()
    fd = _open_for_append(path)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        data = (b"\n" if torn else b"") + json.dumps(entry.to_json(), sort_keys=True).encode() + b"\n"
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except OSError as exc:
        raise file_error(exc, path, "append to the audit log", InstallError) from None
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(install_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def record(install_dir: Path, command: str, keys: Iterable[str], services: Iterable[str], outcome: str = "ok",
           detail: str = "") -> AuditEntry:
    """Append the entry of an operation this process just did; return it."""
    entry = new_entry(command, keys, services, outcome, detail)
    append_entry(install_dir, entry)
    return entry


@dataclass
class AuditRead:
    """What ``read_entries`` found: the entries in file order, and every line it could not read."""

    entries: list[AuditEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, its bytes — None when longer than MAX_LINE_BYTES —, ends with a newline)."""
    with open(path, "rb") as fh:
        number = 0
        while line := fh.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):     # skip the rest of it
                while (rest := fh.readline(MAX_LINE_BYTES + 1)) and not rest.endswith(b"\n"):
                    pass
                yield number, None, bool(rest)
                continue
            yield number, line, line.endswith(b"\n")


def read_entries(install_dir: Path) -> AuditRead:
    """Every entry of ``DIR/audit.log`` (none when there is no file yet); lines that are not entries
    become problems naming the line — a torn last line among them, never an error."""
    path = install_dir / AUDIT_FILE
    out = AuditRead()
    if not path.exists():
        return out
    if path.is_symlink() or not path.is_file():
        raise InstallError(f"{path} is not a regular file", hint="labbuild keeps the audit log there: move it away")
    try:
        for number, raw, whole in _lines(path):
            if raw is None:
                out.problems.append(f"{path}:{number}: longer than {MAX_LINE_BYTES} bytes: skipped")
            elif not whole:
                out.problems.append(f"{path}:{number}: torn last line ({len(raw)} bytes, no newline): a write "
                                    "was interrupted; the entries before it are whole")
            elif raw.strip():
                try:
                    out.entries.append(AuditEntry.from_json(json.loads(raw)))
                except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                    out.problems.append(f"{path}:{number}: not an audit entry ({str(exc)[:120]})")
    except OSError as exc:
        raise file_error(exc, path, "read the audit log", InstallError) from None
    return out
