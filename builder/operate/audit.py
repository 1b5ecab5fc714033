"""`labbuild audit`: the entries of ``DIR/audit.log`` (``builder.host.auditlog``), optionally
since a time, with every line that could not be read reported beside them (a torn last line
after a crash among them) — a report, never a failure."""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InstallError
from ..host.auditlog import AuditEntry, parse_time, read_entries
from ..host.labdir import AUDIT_FILE

_AGO = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: _dt.datetime | None = None) -> _dt.datetime:
    """``--since``: an ISO 8601 date or time (UTC when it names no zone: 2026-12-01,
    2026-12-01T10:00:00Z) or an age (90m, 36h, 7d, 2w); InstallError saying which forms exist."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if m := _AGO.fullmatch(text.strip()):
        return now - _dt.timedelta(seconds=int(m[1]) * _UNIT[m[2]])
    try:
        return parse_time(text.strip())
    except ValueError:
        raise InstallError(f"--since {text!r} is neither a date, a time nor an age",
                           hint="e.g. --since 2026-12-01, --since 2026-12-01T10:00:00Z or --since 7d") from None


@dataclass
class AuditReport:
    dir: Path
    entries: list[AuditEntry]
    problems: list[str] = field(default_factory=list)
    since: _dt.datetime | None = None
    exists: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "dir": str(self.dir), "log": str(self.dir / AUDIT_FILE),
                "since": self.since.isoformat().replace("+00:00", "Z") if self.since else None,
                "entries": [e.to_json() for e in self.entries], "problems": self.problems}

    def render_text(self) -> str:
        lines = []
        for e in self.entries:
            who = e.user + (f" (sudo: {e.sudo_user})" if e.sudo_user else "") + f"@{e.host}"
            lines.append(f"{e.time}  {who}  {e.command}: {e.outcome}"
                         + (f"  keys: {', '.join(e.keys)}" if e.keys else "")
                         + (f"  services: {', '.join(e.services)}" if e.services else "")
                         + (f"  ({e.detail})" if e.detail else ""))
        if not self.exists:
            lines.append(f"no audit log yet in {self.dir} (labbuild writes {AUDIT_FILE} at the first "
                         "operation on the secrets)")
        elif not self.entries:
            lines.append("no entries" + (" since then" if self.since else ""))
        return "\n".join(lines)


def audit(install_dir: str | os.PathLike, since: str | None = None) -> AuditReport:
    """The audit log of the install at ``install_dir`` (entries at or after ``since``)."""
    path = Path(install_dir).expanduser().absolute()
    if not path.is_dir():
        raise InstallError(f"{path} is not a directory", hint="pass the --dir you gave to `labbuild install`")
    cutoff = parse_since(since) if since else None
    found = read_entries(path)
    entries = [e for e in found.entries if cutoff is None or e.moment >= cutoff]
    return AuditReport(dir=path, entries=entries, problems=found.problems, since=cutoff,
                       exists=(path / AUDIT_FILE).exists())
