"""`labbuild backup` and `labbuild backups`: capture a lab's data into one backup file, list them.

Each service is captured by the method its blueprint declares (carried in
the release's manifest.json, ``ManifestService.backup``):

- ``volume`` (the default): the service's container is stopped, each of its
  volumes is read through the engine's archive API on that (stopped)
  container — ``GET /containers/{id}/archive?path=TARGET``, the same tar
  ``docker cp`` makes — and streamed into the backup; the container is
  started again if it was running. No helper image: works air-gapped.
  When labbuild runs as root beside a local engine, the same tar is made
  by GNU tar from the volume's host directory instead, 2-3x faster
  (``builder.backups.hostvolume`` says when that is safe);
  ``engine_archive=True`` (``--engine-archive``) always asks the engine.
- ``exec``: the ``dump`` command runs in the running container and its
  stdout is streamed into the backup (databases: ``pg_dumpall``).

Exec dumps run first, while everything is up; then the volume services are
stopped together (one consistent moment for services that talk to each
other), archived, and started again in dependency order — also when a
capture fails, so the lab is left running as it was. ``DIR/.env`` goes in
too, and the front door's user file ``DIR/access/users_database.yml`` (password hashes) when
there is one. The file is written through ``fsutil.atomic_writer`` (temp file beside,
fsync, rename; mode 0600): after a kill -9 nothing is at the final path. The
format is ``builder.backups.backupfile``; ``--recipient`` seals it
(``builder.backups.backupcrypt``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import docker
import requests

from .. import __version__
from ..errors import BackupError
from ..format.manifest import Manifest
from ..fsutil import (
    CapExceeded,
    atomic_write,
    atomic_writer,
    canonical_json,
    file_error,
    read_capped,
)
from ..host.auditlog import record
from ..host.dotenv import filled_keys, read_env_bytes
from ..host.engine import (
    ChunkReader,
    check_project_owner,
    containers,
    docker_client,
    get_archive,
)
from ..host.health import HealthResult, await_installed, dependency_order
from ..host.labdir import ENV_FILE, Say, current_release, dir_lock, quiet, read_manifest
from ..host.userdb import open_users_file
from ..progress import progress_display
from .backupcrypt import encrypt_stream, is_encrypted, load_recipient
from .backupfile import (
    ENV_MEMBER,
    USERS_MEMBER,
    BackupManifest,
    BackupService,
    BackupVolume,
    BackupWriter,
    dump_member,
    read_backup_manifest,
    reserve_for,
    volume_member,
)
from .hostvolume import host_directory, tar_stream

BACKUPS_DIR = "backups"
PLAIN_SUFFIX = ".backup.tar"
SEALED_SUFFIX = ".backup.enc"
STOP_TIMEOUT = 30


@dataclass
class BackupResult:
    ok: bool
    path: Path
    kind: str
    lab: str
    version: str
    services: list[str]
    size: int
    members: dict[str, int]                 # member -> bytes
    encrypted: bool = False
    health: dict[str, HealthResult] = field(default_factory=dict)   # services started again
    recovered: list[str] = field(default_factory=list)   # left stopped by an interrupted backup, started
    not_running: list[str] = field(default_factory=list)  # stopped, and nothing of labbuild's stopped them

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "path": str(self.path), "kind": self.kind, "lab": self.lab,
                "version": self.version, "services": self.services, "size": self.size,
                "members": self.members, "encrypted": self.encrypted,
                "restarted": {s: r.state for s, r in sorted(self.health.items())},
                "recovered": self.recovered, "not_running": self.not_running}


def backups_dir(install_dir: Path) -> Path:
    return install_dir / BACKUPS_DIR


def backup_methods(manifest: Manifest) -> dict[str, str]:
    """service -> method, for every service that has data to back up (volumes or an exec dump)."""
    return {s: e.backup.method for s, e in sorted(manifest.services.items())
            if e.backup.method == "exec" or e.volumes}


def select_services(manifest: Manifest, wanted: Iterable[str], where: str) -> list[str]:
    """The services a backup covers: ``wanted`` (each must have data), or all that have data."""
    methods = backup_methods(manifest)
    wanted = list(dict.fromkeys(wanted))
    for svc in wanted:
        if svc not in manifest.services:
            raise BackupError(f"{svc}: no such service in {where} ({manifest.lab} {manifest.version})",
                              service=svc, hint="installed services: " + ", ".join(sorted(manifest.services)))
        if svc not in methods:
            raise BackupError(f"{svc}: has no volume and no dump command: nothing to back up", service=svc)
    chosen = wanted or list(methods)
    if not chosen:
        raise BackupError(f"{manifest.lab} {manifest.version} has no service with data to back up")
    return sorted(chosen)


def default_name(manifest: Manifest, kind: str, upgrade_to: str | None, encrypted: bool, now: _dt.datetime) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    stem = (f"snapshot-{manifest.lab}-{manifest.version}-to-{upgrade_to}-{stamp}" if kind == "snapshot"
            else f"{manifest.lab}-{manifest.version}-{stamp}")
    return stem + (SEALED_SUFFIX if encrypted else PLAIN_SUFFIX)


def _free_name(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        base = path.name.split(".backup.")[0]
        candidate = path.with_name(f"{base}-{n}.backup.{path.name.split('.backup.')[1]}")
    return candidate


def backup_lab(install_dir: str | os.PathLike, *, out: str | os.PathLike | None = None,
               services: Iterable[str] = (), recipient: str | os.PathLike | None = None,
               timeout: float = 300.0, engine_archive: bool = False, say: Say = quiet) -> BackupResult:
    """Back up the lab installed in ``install_dir`` (see the module docstring)."""
    install_dir = Path(install_dir).absolute()
    release = current_release(install_dir)
    manifest = read_manifest(release)
    key = load_recipient(Path(recipient)) if recipient is not None else None
    client = docker_client()
    with dir_lock(install_dir):
        check_project_owner(client, manifest.lab, install_dir)
        return capture(client, install_dir, release.name, manifest, select_services(manifest, services, str(release)),
                       out=Path(out) if out is not None else None, recipient=key, timeout=timeout,
                       engine_archive=engine_archive, say=say)


def capture(client, install_dir: Path, release_name: str, manifest: Manifest, services: list[str], *,
            out: Path | None = None, recipient=None, kind: str = "backup", upgrade_to: str | None = None,
            restart: bool = True, timeout: float = 300.0, engine_archive: bool = False,
            say: Say = quiet) -> BackupResult:
    """Write the backup of ``services`` (the caller holds the DIR lock). ``restart=False`` leaves
    the stopped volume services stopped (an upgrade recreates them next)."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    path = out or _free_name(backups_dir(install_dir) / default_name(manifest, kind, upgrade_to,
                                                                     recipient is not None, now))
    found = containers(client, manifest.lab)
    recovered = recover_stopped(client, install_dir, manifest, found, timeout, say)
    found = containers(client, manifest.lab) if recovered else found
    not_running = _not_running(install_dir, manifest, found, say)
    entries = {s: manifest.services[s] for s in services}
    for svc in services:
        if svc not in found:
            raise BackupError(f"{svc}: has no container in project {manifest.lab}", service=svc,
                              hint=f"start the lab first (labbuild install BUNDLE --dir {install_dir})")
        if entries[svc].backup.method == "exec" and found[svc].status != "running":
            raise BackupError(f"{svc}: is {found[svc].status}; its exec dump needs it running", service=svc,
                              hint=f"start it: cd {install_dir}/current && docker compose -p {manifest.lab} ... up -d")
    bm = BackupManifest(
        kind=kind, lab=manifest.lab, version=manifest.version, profile=manifest.profile, release=release_name,
        created=now.isoformat().replace("+00:00", "Z"), labbuild=__version__, upgrade_to=upgrade_to,
        services={s: BackupService(method=e.backup.method, image=e.image,
                                   volumes=() if e.backup.method == "exec" else
                                   tuple(BackupVolume(v.name, v.volume, v.target) for v in e.volumes))
                  for s, e in entries.items()})
    n_members = 1 + sum(1 if s.method == "exec" else len(s.volumes) for s in bm.services.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent == backups_dir(install_dir):
        sweep_leftovers(path.parent, say)
    else:       # --out elsewhere: a killed backup to the same file left its 0600 temp file there
        sweep_leftovers(path.parent, say, name=path.name)
    stopped: list[str] = []
    health: dict[str, HealthResult] = {}
    done = False
    try:
        with _sealed_output(path, recipient) as fh, progress_display(None) as bars:
            writer = BackupWriter(fh, bm, reserve_for(n_members))
            env = install_dir / ENV_FILE
            if env.exists():
                with open(env, "rb") as src:
                    writer.add(ENV_MEMBER, src)
            if (users := open_users_file(install_dir)) is not None:
                with users:
                    writer.add(USERS_MEMBER, users)
            for svc in services:
                if bm.services[svc].method == "exec":
                    _dump(client, found[svc], svc, entries[svc].backup.dump, writer, bars, say)
            volume_services = [s for s in services if bm.services[s].method == "volume"]
            for svc in volume_services:
                if found[svc].status in ("running", "restarting", "paused"):
                    say(f"{svc}: stopping to archive its volumes")
                    if restart:     # noted first: a backup killed from here on is undone by the next one
                        _note_stopped(install_dir, [*stopped, svc])
                    engine_call(lambda c=found[svc]: c.stop(timeout=STOP_TIMEOUT), svc, None, "stop the container")
                    stopped.append(svc)
            for svc in volume_services:
                for v in bm.services[svc].volumes:
                    _archive(client, found[svc], svc, v, writer, bars, say, engine_archive)
            writer.finish()
        done = True
    finally:
        if stopped and (restart or not done):   # a failed snapshot leaves the lab as it was, too
            health = _start_again(client, manifest, found, stopped, timeout, say)
            _note_stopped(install_dir, [])
    size = path.stat().st_size
    copied = [f for f, m in ((ENV_FILE, ENV_MEMBER), (USERS_MEMBER, USERS_MEMBER)) if m in bm.members]
    if copied:            # the secrets (and the users' hashes) left DIR for this file: say so in the audit log
        owners = manifest.secret_owners
        keys = sorted(filled_keys(read_env_bytes(install_dir).decode("utf-8", "replace")) & set(owners)) \
            if ENV_MEMBER in bm.members else []
        record(install_dir, "backup" if kind == "backup" else f"{kind} before upgrade to {upgrade_to}", keys,
               [owners[k] for k in keys], detail=f"{' and '.join(copied)} copied into {path}")
    say(f"wrote {path} ({_human(size)}, {len(bm.members)} members, mode 0600)")
    return BackupResult(ok=True, path=path, kind=kind, lab=manifest.lab, version=manifest.version,
                        services=services, size=size, members={n: m.size for n, m in bm.members.items()},
                        encrypted=recipient is not None, health=health, recovered=recovered,
                        not_running=not_running)


def sweep_leftovers(root: Path, say: Say = quiet, name: str | None = None) -> list[Path]:
    """Remove the temp files of backups and restores killed in ``root`` (the caller holds the DIR
    lock, so no running labbuild owns them). ``name``: in a directory of the operator's (``--out``),
    only the temp files of that very output file (``.NAME.*.tmp``), never anything else there."""
    gone = []
    for p in root.glob(".*" if name is None else f".{glob_escape(name)}.*.tmp"):
        if p.is_file() and (p.name.endswith(".tmp") and (PLAIN_SUFFIX in p.name or SEALED_SUFFIX in p.name)
                            or p.name.endswith(".open")):
            p.unlink(missing_ok=True)
            gone.append(p)
    if gone:
        say(f"removed {len(gone)} leftover temp file(s) of interrupted backups in {root}")
    return gone


@contextlib.contextmanager
def _sealed_output(path: Path, recipient) -> Iterator[BinaryIO]:
    """A seekable file for the plain backup; sealed into ``path`` on success when ``recipient``.

    The plain tar of a sealed backup lives in an unnamed temp file beside
    ``path`` (gone with the process, whatever kills it).
    """
    with atomic_writer(path, mode=0o600) as final:
        if recipient is None:
            yield final
            return
        with tempfile.TemporaryFile(dir=path.parent) as plain:
            yield plain
            plain.flush()
            plain.seek(0)
            try:
                encrypt_stream(plain, final, recipient)
            except OSError as exc:
                raise file_error(exc, path, "write the sealed backup", BackupError) from None


def engine_call(call: Callable[[], Any], service: str, volume: str | None, doing: str) -> Any:
    """Run an engine call; BackupError naming the service (and volume) when the engine fails."""
    try:
        return call()
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        what = f"{service}" + (f" volume {volume}" if volume else "")
        detail = getattr(exc, "explanation", None) or str(exc)
        raise BackupError(f"{what}: cannot {doing}: {detail}", service=service, volume=volume,
                          hint="check the engine (docker info) and free disk space, then run it again") from None


def _bar(bars, label: str) -> Callable[[int], None]:
    task = bars.add_task(label, total=None)
    return lambda n: bars.advance(task, n)


def _archive(client, container, svc: str, vol: BackupVolume, writer: BackupWriter, bars, say: Say,
             engine_archive: bool = False) -> None:
    rel = volume_member(svc, vol.name)
    source = None if engine_archive else host_directory(client, container, vol.target)
    if source is not None:
        say(f"{svc}: archiving volume {vol.volume} ({vol.target}) from its host directory {source}")
        try:
            with tar_stream(source, posixpath.basename(posixpath.normpath(vol.target)), svc, vol.volume) as pipe:
                writer.add(rel, pipe, service=svc, volume=vol.name, on_bytes=_bar(bars, f"{svc}/{vol.name}"))
        except OSError as exc:
            raise _write_error(exc, writer, svc, vol.volume) from None
        return
    say(f"{svc}: archiving volume {vol.volume} ({vol.target}) through the engine's archive API")
    stream, _stat = engine_call(lambda: get_archive(client, container.id, vol.target), svc, vol.volume,
                                f"read {vol.target}")
    try:
        writer.add(rel, ChunkReader(stream), service=svc, volume=vol.name,
                   on_bytes=_bar(bars, f"{svc}/{vol.name}"))
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise BackupError(f"{svc} volume {vol.volume}: the engine's archive stream failed: {exc}",
                          service=svc, volume=vol.volume, hint="check the engine log and disk space") from None
    except OSError as exc:
        raise _write_error(exc, writer, svc, vol.volume) from None
    finally:
        if hasattr(stream, "close"):       # never leave an unread archive stream on the engine connection
            stream.close()


def _write_error(exc: OSError, writer: BackupWriter, svc: str, volume: str | None) -> BackupError:
    where = getattr(writer.fh, "name", None)
    return BackupError(f"{svc}" + (f" volume {volume}" if volume else "") + f": cannot write the backup "
                       f"({exc.strerror or exc})", service=svc, volume=volume,
                       hint="free disk space where the backup goes, or write it elsewhere with --out FILE"
                            + (f" (it was {where})" if isinstance(where, str) else ""))


def _dump(client, container, svc: str, argv: tuple[str, ...], writer: BackupWriter, bars, say: Say) -> None:
    say(f"{svc}: streaming its dump ({' '.join(argv)})")
    api = client.api
    exec_id = engine_call(lambda: api.exec_create(container.id, list(argv), stdout=True, stderr=True)["Id"],
                      svc, None, "start the dump command")
    stream = engine_call(lambda: api.exec_start(exec_id, stream=True, demux=True), svc, None, "run the dump command")
    errors = bytearray()

    def stdout() -> Iterator[bytes]:
        for out, err in stream:
            if err and len(errors) < 8192:
                errors.extend(err[:8192 - len(errors)])
            if out:
                yield out

    rel = dump_member(svc)
    try:
        writer.add(rel, ChunkReader(stdout()), service=svc, on_bytes=_bar(bars, f"{svc} dump"))
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise BackupError(f"{svc}: the dump stream failed: {exc}", service=svc, member=rel) from None
    except OSError as exc:
        raise _write_error(exc, writer, svc, None) from None
    code = engine_call(lambda: api.exec_inspect(exec_id).get("ExitCode"), svc, None, "read the dump's exit code")
    if code != 0:
        tail = errors.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise BackupError(f"{svc}: dump command exited {code}: " + (" / ".join(tail) or "(no stderr)"),
                          service=svc, member=rel, hint=f"run it by hand: docker exec {container.name} "
                                                        + " ".join(argv))


STOPPED_JOURNAL = ".labbuild-stopped.json"     # DIR: the services a running backup has stopped


def _note_stopped(install_dir: Path, services: list[str]) -> None:
    """Record (atomically, before each stop) which services this backup has stopped; [] removes it."""
    journal = install_dir / STOPPED_JOURNAL
    if services:
        atomic_write(journal, canonical_json(sorted(services)), mode=0o600)
    else:
        journal.unlink(missing_ok=True)


def recover_stopped(client, install_dir: Path, manifest: Manifest, found: dict, timeout: float,
                    say: Say) -> list[str]:
    """Start again what an interrupted (killed) backup left stopped, as its journal says; the
    caller holds the DIR lock, so no backup of this DIR is running. Returns those services."""
    journal = install_dir / STOPPED_JOURNAL
    try:
        noted = json.loads(read_capped(journal, 64 * 1024))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, CapExceeded):
        noted = []
    names = [s for s in noted if isinstance(s, str) and s in found and s in manifest.services] \
        if isinstance(noted, list) else []
    left = [s for s in names if found[s].status not in ("running", "restarting")]
    if left:
        say(f"warning: an interrupted backup left {', '.join(left)} stopped: starting them again")
        health = _start_again(client, manifest, found, left, timeout, say)
        bad = [s for s, r in health.items() if not r.ok]
        if bad:
            raise BackupError(f"{', '.join(bad)}: left stopped by an interrupted backup, not healthy after "
                              "starting again", service=bad[0],
                              hint=f"see runbooks/{bad[0]}.md and `labbuild status --dir {install_dir}`")
    journal.unlink(missing_ok=True)
    return left


def _not_running(install_dir: Path, manifest: Manifest, found: dict, say: Say) -> list[str]:
    """Services that should run but do not (and no backup of labbuild's stopped): reported."""
    out = sorted(s for s, c in found.items()      # optional services may wait for their supplied secrets
                 if s in manifest.services and not manifest.services[s].optional
                 and c.status in ("exited", "created", "dead"))
    if out:
        say(f"warning: {', '.join(out)} not running (labbuild did not stop them): see "
            f"`labbuild status --dir {install_dir}`")
    return out


def _start_again(client, manifest: Manifest, found: dict, stopped: list[str], timeout: float,
                 say: Say) -> dict[str, HealthResult]:
    """Start the stopped services in dependency order and wait for their health."""
    depends = {s: [d for d in manifest.services[s].depends_on if d in stopped] for s in stopped}
    for svc in dependency_order(depends):
        say(f"{svc}: starting again")
        engine_call(found[svc].start, svc, None, "start the container again")
    return await_installed(client, manifest.lab, {s: manifest.services[s] for s in stopped}, depends, timeout,
                           say=say)


# --------------------------------------------------------------------------- listing

@dataclass(frozen=True)
class BackupEntry:
    path: Path
    size: int
    modified: str
    encrypted: bool
    manifest: BackupManifest | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": str(self.path), "size": self.size, "encrypted": self.encrypted,
                "kind": m.kind if m else None, "lab": m.lab if m else None, "version": m.version if m else None,
                "upgrade_to": m.upgrade_to if m else None, "created": m.created if m else self.modified,
                "services": sorted(m.services) if m else [], "problem": self.problem}


def list_backups(install_dir: str | os.PathLike) -> list[BackupEntry]:
    """Every backup and snapshot under ``DIR/backups/``, oldest first (temp files of running or
    killed backups are skipped: they start with a dot)."""
    root = backups_dir(Path(install_dir).absolute())
    if not root.is_dir():
        return []
    entries = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not p.name.endswith((PLAIN_SUFFIX, SEALED_SUFFIX)):
            continue
        st = p.stat()
        modified = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).replace(microsecond=0)
        stamp = modified.isoformat().replace("+00:00", "Z")
        if is_encrypted(p):
            entries.append(BackupEntry(p, st.st_size, stamp, True))
            continue
        try:
            entries.append(BackupEntry(p, st.st_size, stamp, False, read_backup_manifest(p)))
        except BackupError as exc:
            entries.append(BackupEntry(p, st.st_size, stamp, False, problem=exc.message))
    return sorted(entries, key=lambda e: (e.manifest.created if e.manifest else e.modified, e.path.name))


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
