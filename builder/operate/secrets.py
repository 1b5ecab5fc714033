"""`labbuild secrets list`: every secret of the current release — key, services, kind, where its
value comes from, its age, its rotation policy and whether it is due — never a value.

Where each fact comes from: the keys, their owners and rotation decisions from the release's
manifest.json (``ManifestService.secrets``/``supplied``/``rotation``), the services reading a
key from its compose.yaml (``host.compose.key_consumers``), the generator from
secrets.env.example, and the age from ``DIR/audit.log``: the last operation that set the value
(install, rollback, ``secrets rotate``/``set``, ``restore --secrets``, with outcome ok). A key
the log does not name (installed before labbuild kept one, or edited by hand) is aged from
DIR/.env's modification time: the value is at least that old, so a rotation may come late,
never early (``age_source``: ``audit`` or ``env-mtime``). ``status`` and ``check`` warn about
what is due (``due_warnings``).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InstallError
from ..format.files import SECRETS_EXAMPLE
from ..format.manifest import Manifest, ManifestRotation
from ..format.secrets_example import read_secrets_example
from ..host.auditlog import AuditEntry, read_entries
from ..host.compose import key_consumers
from ..host.dotenv import filled_keys, read_env
from ..host.labdir import JOURNAL_FILE, LabDir

SETTERS = ("install", "rollback", "secrets rotate", "secrets set", "restore --secrets")
DAY = 86400.0


@dataclass(frozen=True)
class SecretInfo:
    """One secret of an install as `secrets list` shows it (no value)."""

    key: str                            # its name in DIR/.env
    owner: str                          # the service whose [secrets.NAME] it is
    services: tuple[str, ...]           # the services compose gives it to (owner included)
    kind: str                           # token | password | hex | supplied
    present: bool                       # DIR/.env holds a value
    set_by: str | None                  # the command that last set it (audit log), if it says
    set_at: _dt.datetime | None         # when (audit log), or DIR/.env's mtime (a lower bound of the age)
    age_source: str | None              # audit | env-mtime
    policy: ManifestRotation | None     # None: undecided
    now: _dt.datetime

    @property
    def supplied(self) -> bool:
        return self.kind == "supplied"

    @property
    def age_days(self) -> float | None:
        return None if self.set_at is None else (self.now - self.set_at).total_seconds() / DAY

    @property
    def due(self) -> bool:
        """Its policy has ``days`` and the value is at least that old."""
        return bool(self.present and self.policy and self.policy.rotate and self.policy.days is not None
                    and self.age_days is not None and self.age_days >= self.policy.days)

    @property
    def policy_text(self) -> str:
        p = self.policy
        if p is None:
            return "undecided"
        if not p.rotate:
            return f"never: {p.reason}"
        return ("rotate" + (f" every {p.days} days" if p.days else "") + (", holder first" if p.holder else "")
                + (" (secrets set)" if self.supplied else ""))

    def to_json(self) -> dict[str, Any]:
        p = self.policy
        return {"key": self.key, "owner": self.owner, "services": list(self.services), "kind": self.kind,
                "source": "supplied" if self.supplied else "generated", "present": self.present,
                "set_by": self.set_by,
                "set_at": self.set_at.isoformat().replace("+00:00", "Z") if self.set_at else None,
                "age_days": None if self.age_days is None else round(self.age_days, 1), "age_source": self.age_source,
                "policy": None if p is None else {"rotate": p.rotate, "reason": p.reason or None, "days": p.days,
                                                  "holder": bool(p.holder)},
                "due": self.due}


@dataclass
class SecretsReport:
    dir: Path
    lab: str
    version: str
    secrets: list[SecretInfo]
    problems: list[str]                 # audit log lines that could not be read
    journal: bool = False               # an interrupted rotation awaits its re-run

    @property
    def due(self) -> list[SecretInfo]:
        return [s for s in self.secrets if s.due]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "dir": str(self.dir), "lab": self.lab, "version": self.version,
                "secrets": [s.to_json() for s in self.secrets], "due": [s.key for s in self.due],
                "interrupted_rotation": self.journal, "problems": self.problems}

    def render_table(self) -> str:
        rows = [("KEY", "SERVICES", "KIND", "AGE", "POLICY", "DUE")]
        for s in self.secrets:
            age = "-" if s.age_days is None else f"{'>=' if s.age_source == 'env-mtime' else ''}{s.age_days:.0f}d"
            rows.append((s.key, ",".join(s.services), s.kind + ("" if s.present else " (missing)"), age,
                         s.policy_text, "DUE" if s.due else ""))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]
        lines.append(f"{len(self.secrets)} secret(s) of {self.lab} {self.version}, {len(self.due)} due"
                     + ("; ages marked >= come from DIR/.env's time (no audit entry)"
                        if any(s.age_source == "env-mtime" for s in self.secrets) else ""))
        return "\n".join(line.rstrip() for line in lines)


def last_set(entries: list[AuditEntry]) -> dict[str, AuditEntry]:
    """Key -> the latest audit entry (by its time; the later line when equal) that set its value:
    a setter command with outcome ok."""
    out: dict[str, AuditEntry] = {}
    for e in entries:
        if e.outcome == "ok" and e.command.startswith(SETTERS):
            out.update({k: e for k in e.keys if k not in out or out[k].moment <= e.moment})
    return out


def secret_infos(manifest: Manifest, release: Path, env_text: str, entries: list[AuditEntry],
                 env_mtime: _dt.datetime | None, now: _dt.datetime) -> list[SecretInfo]:
    """Every secret of ``manifest`` (sorted by key) from what the install holds (pure but for
    reading the release's compose.yaml and secrets.env.example)."""
    example = release / SECRETS_EXAMPLE
    kinds = {s.key: s.generate for s in read_secrets_example(example.read_text("utf-8"))} if example.exists() else {}
    consumers = key_consumers(release)
    filled = filled_keys(env_text)
    setters = last_set(entries)
    out = []
    for key, owner in sorted(manifest.secret_owners.items()):
        entry = manifest.services[owner]
        supplied = key in {x.key for x in entry.supplied}
        by = setters.get(key)
        out.append(SecretInfo(
            key=key, owner=owner, services=tuple(sorted(consumers.get(key, set()) | {owner})),
            kind="supplied" if supplied else kinds.get(key, "token"), present=key in filled,
            set_by=by.command if by else None,
            set_at=by.moment if by else (env_mtime if key in filled else None),
            age_source=("audit" if by else "env-mtime") if (by or (env_mtime and key in filled)) else None,
            policy=entry.rotation.get(key), now=now))
    return out


def list_secrets(install_dir: str | os.PathLike, now: _dt.datetime | None = None) -> SecretsReport:
    """The secrets of the install at ``install_dir`` (see the module docstring)."""
    lab_dir = LabDir.at(install_dir)
    release = lab_dir.current
    manifest = lab_dir.manifest()
    found = read_entries(lab_dir.path)
    try:
        mtime = _dt.datetime.fromtimestamp(lab_dir.env_file.stat().st_mtime, _dt.timezone.utc)
    except FileNotFoundError:
        mtime = None
    except OSError as exc:
        raise InstallError(f"{lab_dir.env_file}: cannot be read ({exc.strerror})", hint="check its permissions") from None
    infos = secret_infos(manifest, release, read_env(lab_dir.path), found.entries, mtime,
                         now or _dt.datetime.now(_dt.timezone.utc))
    return SecretsReport(dir=lab_dir.path, lab=manifest.lab, version=manifest.version, secrets=infos,
                         problems=found.problems, journal=(lab_dir.path / JOURNAL_FILE).exists())


def due_warnings(install_dir: Path) -> list[str]:
    """What `status` and `check` warn about: secrets due for rotation and an interrupted rotation
    (never an error: a damaged audit log or release is reported by the commands that read them)."""
    try:
        report = list_secrets(install_dir)
    except InstallError:
        return []
    out = [f"{s.key} ({', '.join(s.services)}) is due for rotation: set {s.age_days:.0f} days ago, policy "
           f"{s.policy.days} days — labbuild secrets {'set' if s.supplied else 'rotate'} --dir {report.dir} {s.key}"
           for s in report.due]
    if report.journal:
        out.append(f"a rotation was interrupted ({report.dir / JOURNAL_FILE}): run labbuild secrets rotate "
                   f"--dir {report.dir} again to finish it")
    return out

