"""`labbuild restore`: put a backup's data back into an installed lab.

Nothing is touched before the whole file verified (every member's sha256
and size against backup.json; a sealed backup is opened first into an
unnamed-on-exit temp file beside it) and before the backup was judged to
fit this install: same lab, every service it restores installed, with the
volumes and method the backup holds.

Then, per service of method ``volume``: its container is stopped and removed
(``compose rm -s -f``), its volumes are deleted and compose creates them
and the container anew (``up --no-start --no-deps``) — the delete — and each
volume's archive is written into the created container through the engine's
archive API (``PUT /containers/{id}/archive``) — the put. Every step is
idempotent, so a restore killed midway can simply be run again and ends in
the backed-up state. Then the services start. A service of method ``exec``
is started if needed, waited for, and its ``restore`` command is fed the
dump on stdin (``pg_dumpall -c --if-exists`` output drops and recreates,
so that too can be re-run). With ``secrets``, ``DIR/.env`` gets the backup's
values back first and compose recreates whatever uses them. With ``users``, the front door's user
file ``DIR/access/users_database.yml`` gets the backup's copy back (checked first to be a user
file the provider loads; written only there, 0600, never through a link); the provider reloads it. Finally every
restored service must answer its health probe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import socket
import struct
import tarfile
import tempfile
import threading
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import docker

from ..errors import BackupError, InstallError
from ..format.manifest import Manifest
from ..fsutil import atomic_write, file_error
from ..host.auditlog import check_appendable, record
from ..host.compose import PROJECT_LABEL, VOLUME_LABEL, Project
from ..host.dotenv import env_text, env_values, read_env, replace_values
from ..host.engine import (
    addresses,
    check_project_owner,
    containers,
    docker_client,
    put_archive,
    running,
)
from ..host.health import HealthResult, Probe, await_installed
from ..host.labdir import (
    ENV_FILE,
    Say,
    check_no_interrupted_rotation,
    current_release,
    dir_lock,
    quiet,
    read_manifest,
)
from ..host.userdb import (ACCESS_DIR, open_users_file, parse_database, release_provider, users_path,
                           write_database_bytes)
from ..limits import MAX_ENV_BYTES, MAX_USERS_FILE_BYTES
from .backup import engine_call
from .backupcrypt import decrypt_stream, is_encrypted, load_identity
from .backupfile import (
    ENV_MEMBER,
    TOP,
    USERS_MEMBER,
    BackupManifest,
    dump_member,
    verify_backup,
    volume_member,
)

BLOCK = 1 << 20


@dataclass
class RestoreResult:
    ok: bool
    path: Path
    lab: str
    version: str                            # the backup's lab version
    services: list[str]
    secrets_restored: list[str] = field(default_factory=list)   # keys, never values
    users_restored: bool = False            # --users: DIR/access/users_database.yml put back (it differed)
    health: dict[str, HealthResult] = field(default_factory=dict)
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "path": str(self.path), "lab": self.lab, "backup_version": self.version,
                "services": {s: (self.health[s].state if s in self.health else "restored") for s in self.services},
                "secrets_restored": self.secrets_restored, "users_restored": self.users_restored,
                "error": self.failure}


def restore_backup(backup: str | os.PathLike, install_dir: str | os.PathLike, *, services: Iterable[str] = (),
                   secrets: bool = False, identity: str | os.PathLike | None = None, timeout: float = 300.0,
                   say: Say = quiet, users: bool = False) -> RestoreResult:
    """Restore ``services`` (default: all the backup holds) of the lab in ``install_dir`` from ``backup``."""
    backup, install_dir = Path(backup), Path(install_dir).absolute()
    if not backup.is_file():
        raise BackupError(f"{backup}: no such backup file", hint=f"list them: labbuild backups --dir {install_dir}")
    release = current_release(install_dir)
    manifest = read_manifest(release)
    check_no_interrupted_rotation(install_dir)
    client = docker_client()
    with dir_lock(install_dir), opened_backup(backup, identity) as plain:
        check_project_owner(client, manifest.lab, install_dir)
        say(f"verifying {backup}")
        bm = verify_backup(plain, backup)
        chosen = check_fits(bm, manifest, services, backup)
        return apply_restore(client, install_dir, release, manifest, plain, bm, chosen, secrets=secrets,
                             timeout=timeout, say=say, shown=backup, users=users)


@contextlib.contextmanager
def opened_backup(path: Path, identity: str | os.PathLike | None) -> Iterator[Path]:
    """The plain backup: ``path`` itself, or a sealed one opened into an unnamed temp file.

    The plaintext (``.env`` secrets included) never has a name: it is written to an
    anonymous file (``O_TMPFILE``, mode 0600, no symlink to follow, nothing left behind by
    a kill -9) beside the backup, or in the temp dir when that directory is read-only,
    and read back through ``/proc/self/fd``."""
    if not is_encrypted(path):
        yield path
        return
    if identity is None:
        raise BackupError(f"{path}: is encrypted", hint="pass the X25519 private key: --identity KEY.pem")
    key = load_identity(Path(identity))
    try:
        plain = tempfile.TemporaryFile(dir=path.parent)
    except OSError:
        plain = tempfile.TemporaryFile()
    with plain, open(path, "rb") as src:
        try:
            decrypt_stream(src, plain, key, str(path))
            plain.flush()
        except OSError as exc:
            raise file_error(exc, path, "open the sealed backup into an unnamed temp file beside it",
                             BackupError) from None
        yield Path(f"/proc/self/fd/{plain.fileno()}")


def restore_snapshot(client, install_dir: Path, release: Path, manifest: Manifest, snapshot: Path,
                     services: list[str], *, timeout: float, say: Say) -> RestoreResult:
    """Restore ``services`` from a pre-upgrade snapshot into the (already active) ``release``;
    the caller holds the DIR lock (rollback --restore-data)."""
    say(f"verifying {snapshot}")
    bm = verify_backup(snapshot)
    chosen = check_fits(bm, manifest, services, snapshot)
    return apply_restore(client, install_dir, release, manifest, snapshot, bm, chosen, secrets=False,
                         timeout=timeout, say=say, shown=snapshot)


def check_fits(bm: BackupManifest, manifest: Manifest, wanted: Iterable[str], shown: Path) -> list[str]:
    """The services to restore; BackupError when the backup does not fit this install."""
    if bm.lab != manifest.lab:
        raise BackupError(f"{shown} is a backup of the lab {bm.lab!r}; {manifest.lab!r} is installed here",
                          hint="restore a backup of this lab, or restore into an install of that lab")
    chosen = sorted(dict.fromkeys(wanted)) or sorted(bm.services)
    for svc in chosen:
        if svc not in bm.services:
            raise BackupError(f"{shown} holds no backup of {svc} (it holds: {', '.join(sorted(bm.services))})",
                              service=svc)
        if svc not in manifest.services:
            raise BackupError(f"{svc}: backed up from {bm.lab} {bm.version} but not installed here "
                              f"({manifest.lab} {manifest.version})", service=svc,
                              hint="install a release that has it, or name the services to restore")
        entry, saved = manifest.services[svc], bm.services[svc]
        if saved.method != entry.backup.method:
            raise BackupError(f"{svc}: backed up by method {saved.method}, but the installed release "
                              f"restores it by method {entry.backup.method}", service=svc,
                              hint="install the release the backup was made with, then restore")
        have = {v.name: v for v in entry.volumes}
        for v in saved.volumes:
            if v.name not in have:
                raise BackupError(f"{svc}: the backup holds volume {v.name}, the installed {svc} has no such volume",
                                  service=svc, volume=v.name)
            if posixpath.normpath(have[v.name].target) == "/":
                raise BackupError(f"{svc}: volume {v.name} is mounted at /: cannot be restored", service=svc)
    return chosen


def apply_restore(client, install_dir: Path, release: Path, manifest: Manifest, plain: Path, bm: BackupManifest,
                  chosen: list[str], *, secrets: bool, timeout: float, say: Say, shown: Path,
                  users: bool = False) -> RestoreResult:
    """Restore ``chosen`` from the verified ``plain`` backup (the caller holds the DIR lock)."""
    lab = manifest.lab
    project = Project(name=lab, install_dir=install_dir)
    result = RestoreResult(ok=False, path=shown, lab=lab, version=bm.version, services=chosen)
    with tarfile.open(plain, mode="r:") as tar:
        def member(rel: str) -> BinaryIO:
            fh = tar.extractfile(f"{TOP}/{rel}")
            if fh is None:
                raise BackupError(f"{shown}: member {rel} is missing", member=rel)
            return fh

        if bm.members.get(ENV_MEMBER, None) is not None and bm.members[ENV_MEMBER].size > MAX_ENV_BYTES:
            raise BackupError(f"{shown}: member {ENV_MEMBER} is {bm.members[ENV_MEMBER].size} bytes, more than an "
                              f"install's .env may have ({MAX_ENV_BYTES})", member=ENV_MEMBER)
        saved_users = _saved_users(install_dir, member, bm, shown, say, users)   # checked before any change
        if secrets and ENV_MEMBER in bm.members:
            result.secrets_restored = _restore_env(install_dir, member(ENV_MEMBER).read(), manifest)
            say(f"restored {len(result.secrets_restored)} changed value(s) in {install_dir / ENV_FILE}"
                + (": " + ", ".join(result.secrets_restored) if result.secrets_restored else ""))
        elif ENV_MEMBER in bm.members:
            _warn_secrets(install_dir, member(ENV_MEMBER).read(), manifest, chosen, say)
        if saved_users is not None:
            result.users_restored = _restore_users(install_dir, release, saved_users, say)
        volume_services = [s for s in chosen if bm.services[s].method == "volume"]
        exec_services = [s for s in chosen if bm.services[s].method == "exec"]
        for svc in volume_services:     # every archive checked before anything is deleted
            installed = {v.name: v for v in manifest.services[svc].volumes}
            for saved in bm.services[svc].volumes:
                check_volume_archive(member(volume_member(svc, saved.name)), installed[saved.name].target,
                                     f"{shown}: {volume_member(svc, saved.name)}", svc, installed[saved.name].volume)
        for svc in volume_services:
            say(f"{svc}: stopping and removing its container")
            project.run("rm", "-s", "-f", svc)
            # names and paths come from the installed release; the backup only says which of them it holds
            installed = {v.name: v for v in manifest.services[svc].volumes}
            volumes = [installed[v.name] for v in bm.services[svc].volumes]
            for v in volumes:
                _remove_volume(client, lab, svc, v.volume)
            project.run("up", "--no-start", "--no-deps", svc)
            container = containers(client, lab).get(svc)
            if container is None:
                raise BackupError(f"{svc}: compose created no container", service=svc,
                                  hint="run `labbuild status --dir DIR` and the compose logs")
            for v in volumes:
                say(f"{svc}: restoring volume {v.volume} ({v.target})")
                fh = member(volume_member(svc, v.name))
                parent = posixpath.dirname(v.target.rstrip("/")) or "/"
                engine_call(lambda: put_archive(client, container.id, parent, iter(lambda: fh.read(BLOCK), b"")),
                            svc, v.volume, f"write {v.target}")
        started = sorted(set(volume_services) | set(exec_services))
        # a database is restored with no client connected (pg_dumpall -c drops what it recreates)
        up = set(running(client, lab))
        clients = sorted(s for s, e in manifest.services.items()
                         if s not in started and s in up and set(e.depends_on) & set(exec_services))
        if clients:
            say(f"stopping {', '.join(clients)} while {', '.join(exec_services)} is restored")
            project.run("stop", *clients)
        if started:
            project.run("up", "-d", "--no-deps", *started)
        for svc in exec_services:
            _wait_running(client, lab, svc, manifest, timeout, say)
            _feed(client, containers(client, lab)[svc], svc, manifest.services[svc].backup.restore,
                  member(dump_member(svc)), timeout, say)
        if result.secrets_restored:
            say(f"starting {lab} (compose recreates what uses the restored secrets)")
            project.up()
        elif clients:
            project.run("up", "-d", "--no-deps", *clients)
        started = sorted(set(started) | set(clients))
    depends = {s: [d for d in manifest.services[s].depends_on if d in started] for s in started}
    result.health = await_installed(client, lab, {s: manifest.services[s] for s in started}, depends, timeout,
                                    say=say)
    bad = [r for r in result.health.values() if not r.ok]
    result.ok = not bad
    if bad:
        result.failure = (f"{bad[0].service} is not healthy after the restore: {bad[0].detail}; "
                          f"its data is restored — see runbooks/{bad[0].service}.md")
    return result


def check_volume_archive(fh: BinaryIO, target: str, shown: str, svc: str, volume: str) -> None:
    """BackupError unless every member of a volume's archive stays inside the volume.

    The archive is written at the parent of the volume's mount point (the engine's archive
    API), so each member must be the volume's own directory (``basename(target)``) or below
    it: no absolute name, no ``..``, no hard link to a name outside it, no member reached
    through a symlink the archive itself made (writing through it would land wherever it
    points), no device node, and the volume's directory itself no symlink. A malformed
    archive is refused here too — before any volume is deleted."""
    base = posixpath.basename(posixpath.normpath(target))
    links: set[str] = set()

    def inside(name: str) -> str | None:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "\0" in name:
            return None
        norm = posixpath.normpath(name)
        return norm if norm == base or norm.startswith(base + "/") else None

    def refuse(name: str, why: str) -> BackupError:
        return BackupError(f"{shown}: member {name[:200]!r} {why}: the archive would write outside "
                           f"volume {volume} ({target})", service=svc, volume=volume,
                           hint="this backup was not made by labbuild from this install, or it was crafted; "
                                "nothing was changed")
    try:
        with tarfile.open(fileobj=fh, mode="r|") as tar:
            for m in tar:
                name = inside(m.name)
                if name is None:
                    raise refuse(m.name, f"is not below {base}/")
                above = name.split("/")
                if any("/".join(above[:i]) in links for i in range(1, len(above) + 1)):
                    raise refuse(m.name, "goes through a symlink the archive made")
                if m.issym():
                    if name == base:
                        raise refuse(m.name, "makes the volume's directory a symlink")
                    links.add(name)
                elif m.islnk() and inside(m.linkname) is None:
                    raise refuse(m.name, f"is a hard link to {m.linkname[:200]!r}")
                elif m.ischr() or m.isblk():
                    raise refuse(m.name, "is a device node")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"{shown}: the volume's archive is malformed ({exc})", service=svc, volume=volume,
                          hint="the backup is damaged; nothing was changed — restore another backup") from None


def _restore_env(install_dir: Path, saved: bytes, manifest: Manifest) -> list[str]:
    """The install's own secret keys (generated and supplied, per the current manifest) get
    the backup's values back; any other key of the backup's .env is left out, never
    carried into DIR/.env (a crafted backup could steer compose with ``COMPOSE_*``)."""
    env = install_dir / ENV_FILE
    own = set(manifest.secret_keys) | {x.key for s in manifest.services.values() for x in s.supplied}
    saved_values = env_values(env_text(saved, f"the backup's {ENV_MEMBER}"))
    wanted = {k: v for k, v in saved_values.items() if k in own}
    text, changed = replace_values(read_env(install_dir), wanted)
    if changed:
        check_appendable(install_dir)
        atomic_write(env, text, mode=0o600)
        owners = manifest.secret_owners
        record(install_dir, "restore --secrets", changed, [owners[k] for k in changed if k in owners],
               detail=f"values of the backup's {ENV_MEMBER} put back into {ENV_FILE}")
    return changed


def _saved_users(install_dir: Path, member, bm: BackupManifest, shown: Path, say: Say, wanted: bool) -> bytes | None:
    """With ``wanted`` (--users): the backup's user file, checked to be one the provider loads (with
    users) and DIR/access to be a real directory, before anything changes. Without: None, and a
    note when the backup's users differ from DIR's."""
    if not wanted:
        if USERS_MEMBER in bm.members and bm.members[USERS_MEMBER].sha256 != _current_users_sha(install_dir):
            say(f"note: the backup holds the front door's users ({USERS_MEMBER}), not the ones in "
                f"{users_path(install_dir)}; --users puts them back")
        return None
    if USERS_MEMBER not in bm.members:
        raise BackupError(f"{shown} holds no front-door user file ({USERS_MEMBER})", member=USERS_MEMBER,
                          hint="restore without --users; nothing was changed")
    if bm.members[USERS_MEMBER].size > MAX_USERS_FILE_BYTES:
        raise BackupError(f"{shown}: member {USERS_MEMBER} is {bm.members[USERS_MEMBER].size} bytes, more than a "
                          f"user file may have ({MAX_USERS_FILE_BYTES})", member=USERS_MEMBER)
    raw = member(USERS_MEMBER).read(MAX_USERS_FILE_BYTES + 1)
    try:
        if not parse_database(raw, f"{shown}: {USERS_MEMBER}"):
            raise BackupError(f"{shown}: member {USERS_MEMBER} has no users: the provider would not start",
                              member=USERS_MEMBER, hint="restore without --users; nothing was changed")
    except InstallError as exc:
        raise BackupError(exc.message, member=USERS_MEMBER, hint="the backup's user file is damaged: restore "
                                                                 "without --users; nothing was changed") from None
    access, target = install_dir / ACCESS_DIR, users_path(install_dir)
    odd = [p for p, ok in ((access, Path.is_dir), (target, Path.is_file))
           if p.is_symlink() or (p.exists() and not ok(p))][:1]
    if odd:
        raise BackupError(f"{odd[0]} is a link or not what labbuild made",
                          hint="move it away (labbuild never writes through a link); nothing was changed")
    return raw


def _current_users_sha(install_dir: Path) -> str | None:
    fh = open_users_file(install_dir)
    if fh is None:
        return None
    with fh:
        return hashlib.sha256(fh.read(MAX_USERS_FILE_BYTES + 1)).hexdigest()


def _restore_users(install_dir: Path, release: Path, raw: bytes, say: Say) -> bool:
    """Put the backup's user file back (0600, atomic; the provider reloads it); True when it changed."""
    if _current_users_sha(install_dir) == hashlib.sha256(raw).hexdigest():
        say(f"{users_path(install_dir)} already holds the backup's users")
        return False
    check_appendable(install_dir)
    write_database_bytes(install_dir, raw)
    provider = release_provider(release)
    record(install_dir, "restore --users", (), (provider,) if provider else (),
           detail=f"the backup's {USERS_MEMBER} put back into {ACCESS_DIR}/")
    say(f"restored the front door's users into {users_path(install_dir)} (the provider reloads it by itself)")
    return True


def _warn_secrets(install_dir: Path, saved: bytes, manifest: Manifest, chosen: list[str], say: Say) -> None:
    now = env_values(read_env(install_dir))
    old = env_values(saved.decode("utf-8", "replace"))
    keys = sorted({k for s in chosen for k in manifest.services[s].secrets if k in old and old[k] != now.get(k)})
    if keys:
        say("warning: the restored data was made with other values of " + ", ".join(keys)
            + " than DIR/.env holds now; if the service fails to log in, restore again with --secrets")


def _remove_volume(client, lab: str, svc: str, volume: str) -> None:
    """Delete the compose volume ``volume`` of project ``lab`` (absent already: fine)."""
    found = client.volumes.list(filters={"label": [f"{PROJECT_LABEL}={lab}", f"{VOLUME_LABEL}={volume}"]})
    for vol in found:
        with contextlib.suppress(docker.errors.NotFound):
            engine_call(lambda v=vol: v.remove(), svc, volume, "delete the volume (is another container using it?)")


def _wait_running(client, lab: str, svc: str, manifest: Manifest, timeout: float, say: Say) -> None:
    """Until ``svc`` runs and (when it has a container healthcheck) reports healthy."""
    deadline = time.monotonic() + timeout
    entry = manifest.services[svc]
    probe = Probe.of(svc, entry, partial(addresses(client, lab), svc))
    if probe is not None and probe.scheme != "container":      # a health port, published or not
        r = await_installed(client, lab, {svc: entry}, {svc: []}, timeout, say=say)[svc]
        if not r.ok:
            raise BackupError(f"{svc}: not healthy, cannot feed its restore command: {r.detail}", service=svc)
        return
    while time.monotonic() < deadline:
        c = containers(client, lab).get(svc)
        state = c.attrs.get("State", {}) if c is not None else {}
        health = (state.get("Health") or {}).get("Status")
        if state.get("Status") == "running" and (not entry.healthcheck or health == "healthy"):
            return
        time.sleep(0.5)
    raise BackupError(f"{svc}: not running/healthy within {timeout:.0f}s; cannot feed its restore command",
                      service=svc, hint="see its logs: docker compose logs " + svc)


def _demux(raw: bytes) -> str:
    """Text of a (possibly truncated) multiplexed exec stream (8-byte frame headers)."""
    out, i = [], 0
    while i + 8 <= len(raw):
        (size,) = struct.unpack(">I", raw[i + 4:i + 8])
        out.append(raw[i + 8:i + 8 + size])
        i += 8 + size
    return b"".join(out).decode("utf-8", "replace")


def _feed(client, container, svc: str, argv: tuple[str, ...], src: BinaryIO, timeout: float, say: Say) -> None:
    """Run ``argv`` in ``container`` with ``src`` on its stdin (the attach socket); BackupError on failure."""
    say(f"{svc}: feeding its dump to {' '.join(argv)}")
    api = client.api
    exec_id = engine_call(lambda: api.exec_create(container.id, list(argv), stdin=True, stdout=True, stderr=True)["Id"],
                      svc, None, "start the restore command")
    sock = engine_call(lambda: api.exec_start(exec_id, socket=True), svc, None, "attach to the restore command")
    raw = getattr(sock, "_sock", sock)
    output = bytearray()

    def drain() -> None:
        with contextlib.suppress(OSError):
            while data := raw.recv(65536):
                if len(output) < 65536:
                    output.extend(data[:65536 - len(output)])

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        while block := src.read(BLOCK):
            raw.sendall(block)
        raw.shutdown(socket.SHUT_WR)
    except OSError as exc:
        raise BackupError(f"{svc}: the restore command stopped reading its input ({exc}): "
                          + _demux(bytes(output))[-500:], service=svc) from None
    reader.join(timeout)
    deadline = time.monotonic() + timeout
    while (info := api.exec_inspect(exec_id)).get("Running") and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(OSError):
        sock.close()
    if info.get("ExitCode") != 0:
        tail = _demux(bytes(output)).strip().splitlines()[-5:]
        raise BackupError(f"{svc}: restore command exited {info.get('ExitCode')}: " + (" / ".join(tail) or "(no output)"),
                          service=svc, hint="fix the cause and run the restore again (it is safe to repeat)")
