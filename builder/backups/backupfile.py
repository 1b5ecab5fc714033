"""The backup file format, format 1: one tar, its manifest first, written in one pass.

    labbuild-backup/                      the top directory
    labbuild-backup/backup.json           BackupManifest: canonical JSON padded with spaces to the
                                          size reserved for it when the file was begun
    labbuild-backup/env/.env              DIR/.env (the install's secrets)
    labbuild-backup/access/users_database.yml  DIR/access/users_database.yml (the front door's users:
                                          argon2id hashes), when the install has one
    labbuild-backup/volumes/<svc>/<vol>.tar   method volume: the engine's archive of the volume
                                          (``GET /containers/{id}/archive`` of its target)
    labbuild-backup/dumps/<svc>.dump      method exec: stdout of the service's dump command

backup.json: ``{"format": 1, "kind": "backup"|"snapshot", "lab", "version", "profile",
"release", "created" (UTC, ISO 8601), "labbuild", "upgrade_to" (snapshots: the version
the upgrade installed), "services": {svc: {"method", "image", "volumes": [{"name",
"volume", "target"}]}}, "members": {rel: {"sha256", "size", "service", "volume"}}}``.
``members`` lists every file but backup.json itself.

Writing (``BackupWriter``) streams each member once: its tar header is written
with size 0, the data follows (hashed while it passes, by the bundle reader's
``read_member``), then the header is rewritten in place with the real size — no
spooling, memory bounded by one block. The writer works on the temp file of
``fsutil.atomic_writer`` (mode 0600), so nothing is ever at the final path
before the whole file is on disk. Reading (``verify_backup``) is the bundle
reader's walk (unsafe members refused) and hashing pass, checked against
``members``; a member that differs is named.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..bundle.reader import read_member, scan_bundle
from ..errors import BackupError
from ..format.tar import DIRECTORY, FILE, GNU, padded, tar_header
from ..fsutil import WriteBehind, canonical_json
from ..limits import MAX_MANIFEST_BYTES, MAX_NESTING
from ..typecheck import field_problems, summarize, too_deep

BACKUP_FORMAT = 1
TOP = "labbuild-backup"
MANIFEST_NAME = "backup.json"
ENV_MEMBER = "env/.env"
USERS_MEMBER = "access/users_database.yml"
KINDS = ("backup", "snapshot")
BLOCK = 512


def volume_member(service: str, volume: str) -> str:
    """Where a volume's archive lives in a backup."""
    return f"volumes/{service}/{volume}.tar"


def dump_member(service: str) -> str:
    """Where an exec service's dump lives in a backup."""
    return f"dumps/{service}.dump"


@dataclass(frozen=True)
class BackupVolume:
    name: str               # the blueprint's volume name
    volume: str             # <service>_<name> (compose prefixes the project)
    target: str             # mount path in the container


@dataclass(frozen=True)
class BackupService:
    method: str             # volume | exec
    image: str
    volumes: tuple[BackupVolume, ...] = ()


@dataclass(frozen=True)
class BackupMember:
    sha256: str
    size: int
    service: str | None = None
    volume: str | None = None


@dataclass
class BackupManifest:
    """backup.json (see the module docstring)."""

    kind: str
    lab: str
    version: str
    profile: str
    release: str
    created: str
    labbuild: str
    services: dict[str, BackupService]
    members: dict[str, BackupMember] = field(default_factory=dict)
    upgrade_to: str | None = None
    format: int = BACKUP_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format, "kind": self.kind, "lab": self.lab, "version": self.version,
            "profile": self.profile, "release": self.release, "created": self.created,
            "labbuild": self.labbuild, "upgrade_to": self.upgrade_to,
            "services": {n: {"method": s.method, "image": s.image,
                             "volumes": [{"name": v.name, "volume": v.volume, "target": v.target}
                                         for v in s.volumes]}
                         for n, s in sorted(self.services.items())},
            "members": {n: {"sha256": m.sha256, "size": m.size, "service": m.service, "volume": m.volume}
                        for n, m in sorted(self.members.items())},
        }

    @classmethod
    def loads(cls, raw: bytes, where: str) -> "BackupManifest":
        """Parse backup.json; BackupError naming the file when it is not one."""
        try:
            if len(raw) > MAX_MANIFEST_BYTES:
                raise ValueError(f"{len(raw)} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
            d = json.loads(raw)
            if too_deep(d, MAX_NESTING):
                raise ValueError(f"nested deeper than {MAX_NESTING} levels")
            if not isinstance(d, dict) or d.get("format") != BACKUP_FORMAT or d.get("kind") not in KINDS:
                raise ValueError(f"not a format-{BACKUP_FORMAT} labbuild backup manifest")
            services = {n: BackupService(method=s["method"], image=s["image"],
                                         volumes=tuple(BackupVolume(**v) for v in s["volumes"]))
                        for n, s in d["services"].items()}
            members = {n: BackupMember(**m) for n, m in d["members"].items()}
            manifest = cls(kind=d["kind"], lab=d["lab"], version=d["version"], profile=d["profile"],
                           release=d["release"], created=d["created"], labbuild=d["labbuild"], services=services,
                           members=members, upgrade_to=d.get("upgrade_to"))
            problems = field_problems(manifest)
            if problems:
                raise ValueError(summarize(problems))
            return manifest
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise BackupError(f"{where}: {MANIFEST_NAME} is malformed ({type(exc).__name__}: {str(exc)[:200]})",
                              hint="this is not a labbuild backup, or it is damaged") from None


def _header(name: str, size: int, mtime: int, directory: bool = False) -> bytes:
    # GNU: sizes beyond 8 GiB fit the same 512-byte header (base-256), so rewriting it never moves data
    return tar_header(f"{TOP}/{name}" if name else TOP, size, kind=DIRECTORY if directory else FILE,
                      mode=0o700 if directory else 0o600, mtime=mtime, dialect=GNU)


class BackupWriter:
    """Writes a backup tar into a seekable file; ``finish`` fills in the manifest."""

    def __init__(self, fh: BinaryIO, manifest: BackupManifest, reserve: int) -> None:
        self.fh, self.manifest = fh, manifest
        self.mtime = 0
        fh.write(_header("", 0, self.mtime, directory=True))
        self._manifest_at = fh.tell()
        self._reserve = reserve
        fh.write(_header(MANIFEST_NAME, reserve, self.mtime))
        fh.write(b" " * padded(reserve))

    def add(self, rel: str, source: BinaryIO, *, service: str | None = None, volume: str | None = None,
            on_bytes: Callable[[int], None] | None = None) -> BackupMember:
        """Stream ``source`` into the member ``rel``, hashing it on the way."""
        start = self.fh.tell()
        header = _header(rel, 0, self.mtime)
        self.fh.write(header)
        read = read_member(source, sink=WriteBehind(self.fh).write, on_bytes=on_bytes)
        self.fh.write(b"\0" * (padded(read.size) - read.size))
        end = self.fh.tell()
        final = _header(rel, read.size, self.mtime)
        if len(final) != len(header):  # cannot happen with short names; never corrupt the file
            raise BackupError(f"internal error: tar header of {rel} changed length")
        self.fh.seek(start)
        self.fh.write(final)
        self.fh.seek(end)
        member = BackupMember(read.sha256, read.size, service, volume)
        self.manifest.members[rel] = member
        return member

    def finish(self) -> None:
        """Write the manifest into its reserved slot and the tar trailer."""
        data = canonical_json(self.manifest.to_json()).encode("utf-8")
        if len(data) > self._reserve:
            raise BackupError(f"internal error: {MANIFEST_NAME} needs {len(data)} bytes, {self._reserve} reserved")
        self.fh.write(b"\0" * 1024)
        end = self.fh.tell()
        self.fh.seek(self._manifest_at + BLOCK)
        self.fh.write(data + b" " * (self._reserve - len(data)))
        self.fh.seek(end)


def reserve_for(members: int) -> int:
    """Bytes reserved for backup.json of a backup with ``members`` members (generous)."""
    return 16384 + 1024 * members


def read_backup_manifest(path: Path, shown: Path | None = None) -> BackupManifest:
    """backup.json of a plain backup file, read from its head (it is the second member)."""
    where = shown or path
    try:
        with tarfile.open(path, mode="r:") as tar:
            top = tar.next()
            member = tar.next()
            if top is None or member is None or member.name != f"{TOP}/{MANIFEST_NAME}" or not member.isreg():
                raise BackupError(f"{where}: not a labbuild backup (no {MANIFEST_NAME} at its head)")
            if member.size > MAX_MANIFEST_BYTES:
                raise BackupError(f"{where}: {MANIFEST_NAME} is {member.size} bytes: not a labbuild backup")
            raw = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"{where}: not a readable backup file ({exc})",
                          hint="an encrypted backup starts with LABBACKUP: pass --identity KEY") from None
    return BackupManifest.loads(raw, str(where))


def verify_backup(path: Path, shown: Path | None = None) -> BackupManifest:
    """Hash every member of a plain backup file against its manifest; BackupError naming the first
    member that is unsafe, missing, unlisted or different. ``shown``: the name messages give the
    file (an opened sealed backup is read through ``/proc/self/fd``)."""
    where = shown or path
    read_backup_manifest(path, where)   # a head that is no backup (or a huge backup.json) is refused before the walk
    scan = scan_bundle(path, keep={MANIFEST_NAME})
    if scan.problems:
        p = scan.problems[0]
        raise BackupError(f"{where}: member {p.file}: {p.message}", hint="the backup is damaged: use another one")
    if scan.top != TOP or MANIFEST_NAME not in scan.kept:
        raise BackupError(f"{where}: not a labbuild backup (no {TOP}/{MANIFEST_NAME})")
    manifest = BackupManifest.loads(scan.kept[MANIFEST_NAME], str(where))
    found = {rel: v for rel, v in scan.files.items() if rel != MANIFEST_NAME}
    for rel, member in sorted(manifest.members.items()):
        if rel not in found:
            raise BackupError(f"{where}: member {rel} is missing", hint="the backup is truncated or damaged")
        sha, size = found[rel]
        if (sha, size) != (member.sha256, member.size):
            raise BackupError(f"{where}: member {rel} does not match its recorded sha256/size "
                              f"(recorded {member.sha256[:12]}…/{member.size} B, found {sha[:12]}…/{size} B)",
                              hint="the backup was changed or damaged after it was written: do not restore it")
    extra = sorted(set(found) - set(manifest.members))
    if extra:
        raise BackupError(f"{where}: member {extra[0]} is not listed in {MANIFEST_NAME}",
                          hint="the backup was changed after it was written: do not restore it")
    return manifest
