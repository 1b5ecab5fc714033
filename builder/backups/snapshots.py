"""Snapshots before upgrades, and the data side of rollback.

``snapshot_before_upgrade`` runs inside ``install`` when a newer release
replaces the current one: every service whose image changes and that keeps
data is captured (``builder.backups.backup.capture``, kind ``snapshot``,
``upgrade_to`` = the new version) into ``DIR/backups/`` before compose
recreates it. A disk preflight comes first (the volumes' sizes as the engine
counts them against the free space of ``DIR/backups``); only the newest
``keep`` snapshots of the lab are kept (default 3).

``rollback`` asks ``one_way_services`` which services of the current release
declare one-way migrations (``[upgrade] migrations = "one-way"``) and run
another image than in the release it returns to: their data cannot go back
with the old image alone. It refuses unless ``--restore-data``, and then
``find_snapshot`` picks the snapshot taken by exactly that upgrade.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BackupError, InstallError
from ..format.manifest import Manifest
from ..host.compose import PROJECT_LABEL, VOLUME_LABEL
from ..host.engine import containers
from ..host.labdir import Say, quiet
from .backup import BackupEntry, backup_methods, backups_dir, capture, list_backups

DEFAULT_KEEP = 3
MARGIN = 64 << 20


def _image_changed(a: Manifest, b: Manifest, service: str) -> bool:
    return service in a.services and service in b.services and (
        (a.services[service].image, a.services[service].config_digests)
        != (b.services[service].image, b.services[service].config_digests))


def one_way_services(newer: Manifest, older: Manifest) -> list[str]:
    """Services whose ``newer`` image migrates their data one way (either release says so)."""
    return sorted(s for s, e in newer.services.items() if _image_changed(newer, older, s)
                  and "one-way" in (e.migrations, older.services[s].migrations))


def data_of(newer: Manifest, older: Manifest, services: list[str]) -> list[str]:
    """``services`` plus the services holding the data they migrate (``[upgrade] data_in``), as far
    as ``older`` has them with data to back up."""
    with_data = backup_methods(older)
    held = {d for s in services for d in newer.services[s].data_in + older.services[s].data_in}
    return sorted(s for s in set(services) | held if s in with_data)


def changed_services(old: Manifest, new: Manifest) -> list[str]:
    """What an upgrade ``old`` -> ``new`` snapshots: services with data whose image changes (compose
    recreates them), and the data services of those whose migrations are one-way."""
    recreated = {s for s in backup_methods(old) if _image_changed(old, new, s)}
    return sorted(recreated | set(data_of(new, old, one_way_services(new, old))))


def volume_bytes(client, lab: str, manifest: Manifest, services: list[str]) -> int:
    """What the engine counts for the compose volumes of ``services`` (``docker system df -v``)."""
    wanted = {v.volume for s in services for v in manifest.services[s].volumes}
    total = 0
    for vol in client.df().get("Volumes") or []:
        labels = vol.get("Labels") or {}
        if labels.get(PROJECT_LABEL) == lab and labels.get(VOLUME_LABEL) in wanted:
            total += max(0, (vol.get("UsageData") or {}).get("Size", 0) or 0)
    return total


def preflight(client, install_dir: Path, manifest: Manifest, services: list[str]) -> None:
    """BackupError when ``DIR/backups`` has no room for the snapshot of ``services``."""
    root = backups_dir(install_dir)
    root.mkdir(parents=True, exist_ok=True)
    need = volume_bytes(client, manifest.lab, manifest, services) + MARGIN
    free = shutil.disk_usage(root).free
    if need > free:
        raise BackupError(f"no room for the pre-upgrade snapshot of {', '.join(services)}: needs about "
                          f"{need >> 20} MiB, {root} has {free >> 20} MiB free",
                          hint=f"free disk space or delete old backups in {root}; nothing was changed")


def snapshot_before_upgrade(client, install_dir: Path, old_release: Path, old: Manifest, new: Manifest, *,
                            keep: int = DEFAULT_KEEP, restart: bool = False, say: Say = quiet) -> Path | None:
    """Snapshot the data of every service ``new`` recreates with another image; prune to ``keep``."""
    services = changed_services(old, new)
    found = containers(client, old.lab)
    skipped = [s for s in services if s not in found
               or (old.services[s].backup.method == "exec" and found[s].status != "running")]
    for s in skipped:
        say(f"{s}: no running container to snapshot (its data stays in its volumes)")
    services = [s for s in services if s not in skipped]
    if not services:
        return None
    preflight(client, install_dir, old, services)
    say(f"snapshot before upgrading {old.version} -> {new.version}: {', '.join(services)}")
    result = capture(client, install_dir, old_release.name, old, services, kind="snapshot",
                     upgrade_to=new.version, restart=restart, say=say)
    prune_snapshots(install_dir, old.lab, keep, say)
    return result.path


def prune_snapshots(install_dir: Path, lab: str, keep: int, say: Say = quiet) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots of ``lab``; return what was deleted."""
    snaps = [e for e in list_backups(install_dir) if e.manifest and e.manifest.kind == "snapshot"
             and e.manifest.lab == lab]
    gone = [e.path for e in snaps[:max(0, len(snaps) - max(keep, 1))]]
    for p in gone:
        p.unlink(missing_ok=True)
        say(f"removed old snapshot {p.name} (keeping the last {keep})")
    return gone


def find_snapshot(install_dir: Path, lab: str, before: str, after: str, services: list[str]) -> BackupEntry | None:
    """The newest snapshot taken by the upgrade ``before`` -> ``after`` holding all ``services``."""
    for e in reversed(list_backups(install_dir)):
        m = e.manifest
        if (m is not None and m.kind == "snapshot" and m.lab == lab and m.version == before
                and m.upgrade_to == after and set(services) <= set(m.services)):
            return e
    return None


def rollback_snapshot(install_dir: Path, current: Manifest, previous: Manifest, *,
                      restore_data: bool) -> tuple[list[str], BackupEntry | None]:
    """The one-way services of a rollback ``current`` -> ``previous`` and the snapshot to restore
    them from; InstallError when the rollback must not go ahead (see the module docstring)."""
    one_way = one_way_services(current, previous)
    if not one_way:
        return [], None
    names = ", ".join(one_way)
    restore = data_of(current, previous, one_way)
    snap = find_snapshot(install_dir, current.lab, previous.version, current.version, restore)
    where = f"labbuild backups --dir {install_dir}"
    if not restore_data:
        raise InstallError(
            f"cannot roll back {names} from {current.version} to {previous.version} without its data: "
            f"its blueprint declares one-way migrations ({current.version} migrated the data, the "
            f"{previous.version} image cannot read it)",
            hint=(f"labbuild rollback --dir {install_dir} --restore-data restores the pre-upgrade snapshot "
                  f"{snap.path.name} of {', '.join(restore)}; whatever changed since the upgrade is lost — "
                  f"back it up first: labbuild backup --dir {install_dir}") if snap else
                 f"no pre-upgrade snapshot of {names} was found ({where}); restore a backup made with "
                 f"{previous.version} after the rollback, or stay on {current.version}")
    if snap is None:
        raise InstallError(f"--restore-data: no snapshot taken by the upgrade {previous.version} -> "
                           f"{current.version} holds {', '.join(restore)}",
                           hint=f"see {where}; restore an older backup with labbuild restore FILE --dir {install_dir}")
    return restore, snap
