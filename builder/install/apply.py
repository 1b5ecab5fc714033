"""Install, upgrade, roll back and remove a lab on a host.

``install_bundle`` reads the bundle once (``unpack``): it verifies every
member (and the signature) while streaming the host platform's image blobs
into ``docker load``, completing the load only when everything verified
(else the engine keeps nothing and DIR is not touched); then it checks each
image ID against the lock, adds missing secrets, switches ``current``, runs
compose and waits until every service is healthy. Installing a newer bundle
into the same DIR is an upgrade: volumes (same compose project, same volume
names) and secrets stay, compose recreates only the services whose
definition changed. A bundle that ships models (``[[models]]``) has them
placed into their services' volumes once ``current`` switched and before
anything starts: compose creates the model services' containers (``up --no-start``)
and ``builder.install.models`` streams the verified blobs into them; models
already in a volume stay (upgrades add, never remove). ``rollback`` swaps
``current`` and ``previous`` and brings that release up (models stay). The install dir's layout is ``builder.host.labdir``.

Every function returns data (``InstallResult``/``UninstallResult``); the CLI
renders it. Failures a user must act on raise ``InstallError`` (or return a
result with ``ok=False`` when services are up but unhealthy, so the result
can still name each service's state).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import docker

from ..backups.restore import restore_snapshot
from ..backups.snapshots import DEFAULT_KEEP, rollback_snapshot, snapshot_before_upgrade
from ..bundle.reader import file_fingerprint
from ..errors import InstallError
from ..format.delta import delta_summary
from ..format.files import SECRETS_EXAMPLE
from ..format.manifest import Manifest
from ..format.models import shipped_models
from ..host.compose import UNPUBLISHED_FILE, Project, hint_for, wrapper_gpu, wrapper_unpublished, write_wrapper
from ..host.auditlog import record
from ..host.dotenv import filled_keys, read_env
from ..host.engine import (
    addresses,
    check_image_ids,
    check_project_owner,
    check_running_images,
    container_address,
    container_health,
    containers,
    docker_client,
    host_platform,
    running,
)
from ..host.health import HealthResult, Probe, budget, wait_healthy
from ..host.kvstore import OPENBAO, sync_openbao
from ..host.labdir import (
    ENV_FILE,
    LOCK_NAME,
    RELEASES,
    WRAPPER,
    Say,
    activate,
    check_no_interrupted_rotation,
    current_release,
    dir_lock,
    installed_releases,
    place,
    preflight,
    quiet,
    read_manifest,
    release_link,
    safe_manifest,
    stage,
)
from .door import ensure_door_material
from .doctor import gpu_services, preflight_bundle
from ..host.userdb import ACCESS_DIR, USERS_FILE
from .access import FirstAdmin, ensure_users
from .inputs import (
    check_supplied,
    not_started_detail,
    peek_manifest,
    startable_optional,
    waiting_optional,
)
from .models import Placement, place_models
from .provision import Provisioned, credentials_shown, provision_services
from .unpublished import pending_claims, publish, unpublished_view
from .pull import pull_images
from .secrets import write_secrets
from .targets import publish_targets
from .unpack import unpack_bundle

DEFAULT_TIMEOUT = 300.0


@dataclass
class InstallResult:
    ok: bool
    dir: Path
    lab: str
    version: str
    release: Path
    previous: str | None = None
    started: bool = True
    loaded: list[str] = field(default_factory=list)
    delta: dict[str, Any] | None = None         # a delta bundle: carried vs relied-on blobs
    secrets_added: list[str] = field(default_factory=list)
    services: dict[str, HealthResult] = field(default_factory=dict)
    failure: str | None = None
    models: dict[str, Placement] = field(default_factory=dict)
    first_admin: FirstAdmin | None = None       # the front door's first admin, made by this run (shown once)
    provisioned: dict[str, Provisioned] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**({"first_admin": self.first_admin.to_json()} if self.first_admin is not None else {}),"ok": self.ok, "dir": str(self.dir), "lab": self.lab, "version": self.version,
                "release": str(self.release), "previous": self.previous, "started": self.started,
                "images_loaded": self.loaded, "secrets_added": self.secrets_added,
                "services": {s: r.state for s, r in sorted(self.services.items())},
                "details": {s: r.detail for s, r in sorted(self.services.items())},
                "models": {s: p.to_json() for s, p in sorted(self.models.items())},
                "provisioned": {s: p.to_json() for s, p in sorted(self.provisioned.items())},
                "error": self.failure, **({"delta": self.delta} if self.delta is not None else {})}


def _add_secrets(install_dir: Path, release: Path, manifest: Manifest, command: str) -> list[str]:
    example = release / SECRETS_EXAMPLE
    text = example.read_text("utf-8") if example.exists() else ""
    return write_secrets(install_dir, text, manifest.secret_keys, owners=manifest.secret_owners, command=command)


def _check_same_lab(install_dir: Path, manifest: Manifest) -> None:
    """InstallError when DIR holds another lab than ``manifest``'s."""
    installed = release_link(install_dir, "current")
    other = safe_manifest(installed) if installed is not None else None
    if other is not None and other.lab != manifest.lab:
        raise InstallError(f"{install_dir} holds the lab {other.lab!r}, this bundle is the lab {manifest.lab!r}",
                           hint="install each lab into its own --dir")


def install_bundle(bundle: str | os.PathLike, install_dir: str | os.PathLike, *, key: str | os.PathLike | None = None,
                   start: bool = True, timeout: float = DEFAULT_TIMEOUT, say: Say = quiet,
                   live: bool | None = None, gpu: bool | None = None,
                   base: str | os.PathLike | None = None, keep_snapshots: int = DEFAULT_KEEP) -> InstallResult:
    """Install (or upgrade to) ``bundle`` in ``install_dir``; see the module docstring.

    ``gpu``: turn the bundle's GPU reservations on (True) or off (False);
    None keeps what the install had (off for a new install). ``base``: for a
    delta bundle, the base bundle file supplying the base images the engine
    lacks (``builder.install.unpack``).

    An upgrade first snapshots the data of every service whose image changes
    (``builder.backups.snapshots``), keeping the newest ``keep_snapshots``.
    """
    bundle, install_dir = Path(bundle), Path(install_dir).absolute()
    for path in (bundle, *([Path(base)] if base is not None else [])):
        if not path.is_file():
            raise InstallError(f"{path}: no such bundle", hint="pass the path of a .tar.gz or .tar bundle")
    gpu = wrapper_gpu(install_dir) if gpu is None else gpu
    preflight(install_dir)
    check_no_interrupted_rotation(install_dir)
    preflight_bundle(bundle, install_dir, gpu=gpu, say=say)   # doctor: before anything is touched
    if (peeked := peek_manifest(bundle)) is not None:
        _check_same_lab(install_dir, peeked)  # before any image load: a refused bundle leaves nothing behind
        check_supplied(peeked, install_dir)   # before any image load or file in DIR
    client = docker_client()
    platform = host_platform(client)
    verified = file_fingerprint(bundle)      # model placement re-reads the bundle: it must not change
    unpacked = unpack_bundle(bundle, key, client, platform, say, Path(base) if base is not None else None)
    manifest = unpacked.manifest
    with dir_lock(install_dir):
        preflight(install_dir)
        _check_same_lab(install_dir, manifest)   # again, with the verified manifest
        check_project_owner(client, manifest.lab, install_dir)
        check_image_ids(client, manifest, platform, required=manifest.offline or bool(unpacked.loaded))
        check_supplied(manifest, install_dir)   # the verified manifest decides
        staged = stage(install_dir, unpacked.contents, unpacked.modes)   # the first change to DIR
        try:
            release = place(staged, install_dir, say)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        result = _install_release(client, install_dir, release, start, timeout, say, live, platform,
                                  unpacked.loaded, gpu, bundle, verified, keep_snapshots)
        if manifest.since is not None:
            result.delta = {**delta_summary(manifest).to_json(), "retagged": unpacked.retagged}
        return result


def _install_release(client, install_dir: Path, release: Path, start: bool, timeout: float, say: Say,
                     live: bool | None, platform: str, loaded: list[str], gpu: bool,
                     bundle: Path, verified: tuple[int, ...], keep_snapshots: int = DEFAULT_KEEP) -> InstallResult:
    manifest = read_manifest(release)
    result = InstallResult(ok=False, dir=install_dir, lab=manifest.lab, version=manifest.version, release=release,
                           started=start, loaded=loaded)
    result.secrets_added = _add_secrets(install_dir, release, manifest, "install")
    if result.secrets_added:
        say(f"generated {len(result.secrets_added)} secret(s) into {install_dir / ENV_FILE}: "
            + ", ".join(result.secrets_added))
        for svc, key, value in credentials_shown(manifest, result.secrets_added, read_env(install_dir)):
            say(f"sign-in password of {svc}, shown once (kept in {install_dir / ENV_FILE} as {key}): {value}")
    door_made = ensure_door_material(install_dir, release)
    if door_made:
        say("front door: made " + ", ".join(door_made) + f" in {install_dir} (trust {install_dir}/door/ca.crt "
            "in your browser: see runbooks/authelia.md)")
    old = release_link(install_dir, "current")
    if old is not None and old != release.resolve():  # an upgrade (or a downgrade): snapshot what changes
        snapshot_before_upgrade(client, install_dir, old, read_manifest(old), manifest, keep=keep_snapshots,
                                restart=not start, say=say)
    result.first_admin = _ensure_users(install_dir, release, "install", say)
    try:
        previous = _switch(install_dir, release, manifest, gpu, say)
        if shipped_models(manifest):
            result.models = _place_models(client, bundle, verified, install_dir, manifest, say)
        result.previous = previous.name if previous else None
        say(f"{manifest.lab} {manifest.version} is the current release in {install_dir}")
        if not start:
            result.ok = True
            return result
        return _bring_up(client, install_dir, release, manifest, result, platform, timeout, say, live)
    except InstallError as exc:
        raise _lost_admin(exc, result.first_admin, install_dir) from None


def _ensure_users(install_dir: Path, release: Path, command: str, say: Say) -> FirstAdmin | None:
    """The front door's users directory and first admin (``builder.install.access``)."""
    made = ensure_users(install_dir, release, command)
    if made is not None:
        say(f"front door: made the first admin {made.name!r} in {made.file} (its generated password is shown "
            "once, with the result)")
    return made


def _lost_admin(exc: InstallError, made: FirstAdmin | None, install_dir: Path) -> InstallError:
    """``exc``, saying how to get a password for the first admin this failed run made (it is not shown)."""
    if made is None:
        return exc
    return InstallError(exc.message, hint=(exc.hint + "; " if exc.hint else "") +
                        f"the front door's first admin {made.name!r} was made by this run: give it a new password "
                        f"with labbuild users passwd {made.name} --dir {install_dir}")


def _remove_users(install_dir: Path) -> None:
    """uninstall --volumes: delete DIR/access/users_database.yml (audited) and DIR/access when empty."""
    path = install_dir / ACCESS_DIR / USERS_FILE
    if (install_dir / ACCESS_DIR).is_symlink() or not (path.is_file() or path.is_symlink()):
        return
    record(install_dir, "uninstall --volumes", (), (), detail=f"{ACCESS_DIR}/{USERS_FILE} (the front door's "
                                                                 "users) deleted with the volumes")
    path.unlink()
    with contextlib.suppress(OSError):
        (install_dir / ACCESS_DIR).rmdir()


def _switch(install_dir: Path, release: Path, manifest: Manifest, gpu: bool, say: Say) -> Path | None:
    """Make ``release`` current and point DIR/compose.yaml at it; return what was current."""
    gpu = gpu and bool(gpu_services(manifest))
    previous = activate(install_dir, release)
    pending = pending_claims(install_dir, manifest)
    write_wrapper(install_dir, manifest.lab, release, gpu, pending)
    if pending:
        say(f"{', '.join(pending)}: no host port until install has claimed the admin (DIR/unpublished.yaml)")
    if gpu:
        say("GPU reservations on for: " + ", ".join(gpu_services(manifest)))
    return previous


def _place_models(client, bundle: Path, verified: tuple[int, ...], install_dir: Path, manifest: Manifest,
                  say: Say) -> dict[str, Placement]:
    """Create the containers of the services with models (not started) from the release just made
    current and place the models through them, before anything starts."""
    services = sorted(shipped_models(manifest))
    project = Project(name=manifest.lab, install_dir=install_dir)
    say(f"creating {', '.join(services)} to place models: docker compose up --no-start")
    try:
        project.run("up", "--no-start", "--no-deps", *services, timeout=300)
        return place_models(client, bundle, manifest, containers(client, manifest.lab), say, verified)
    except InstallError as exc:
        raise InstallError(f"{exc.message}\n{manifest.lab} {manifest.version} is current but not started",
                           hint=exc.hint + f"; or go back: labbuild rollback --dir {install_dir}") from None


def _bring_up(client, install_dir: Path, release: Path, manifest: Manifest, result: InstallResult, platform: str,
              timeout: float, say: Say, live: bool | None) -> InstallResult:
    """compose up, then the image-ID check of what runs, then health; fill ``result``."""
    lab = manifest.lab
    env_text = read_env(install_dir)
    waiting = waiting_optional(manifest, env_text)
    project = Project(name=lab, install_dir=install_dir, profiles=tuple(startable_optional(manifest, env_text)))
    for svc, keys in sorted(waiting.items()):
        say(f"{svc} is optional and not started: {not_started_detail(keys)} in {install_dir / ENV_FILE}")
    if not manifest.offline:
        pull_images(client, manifest, say=say, live=live)   # before up: no health budget includes it
    # a service with only an in-container healthcheck is awaited on the engine's health status
    # a port the front door does not publish is probed at the container's address on the lab network
    address = addresses(client, lab)

    def probes_of(m: Manifest) -> dict:
        return {s: Probe.of(s, e, partial(address, s)) for s, e in m.services.items()}
    unpublished = wrapper_unpublished(install_dir)      # until claimed: reached at the container's address
    published, manifest = manifest, unpublished_view(manifest, unpublished)
    probes = probes_of(manifest)
    say(f"starting {lab} {result.version}: cd {install_dir} && docker compose up -d")
    try:
        # compose itself waits for in-container healthchecks of dependencies: allow every budget
        proc = project.up(timeout=120 + sum(budget(p, timeout) if p else timeout for p in probes.values()))
        # compose may exit 0 although a pull or a start failed: trust only what runs
        found = containers(client, lab)
        failed = [f"{svc}: no container" for svc in sorted(manifest.services) if svc not in found
                  and svc not in waiting]
        failed += [f"{svc}: {c.status}" + (f" ({c.attrs['State']['Error']})" if c.attrs["State"].get("Error") else "")
                   for svc, c in sorted(found.items())
                   if c.status in ("created", "dead") or (c.status == "exited" and c.attrs["State"].get("Error"))]
        if failed:
            detail = [line for line in (proc.stderr.strip() or proc.stdout.strip()).splitlines() if "Error" in line][-6:]
            raise InstallError("docker compose up failed:\n  " + "\n  ".join(failed + detail),
                               hint=hint_for(proc.stderr + " ".join(failed)))
    except InstallError as exc:
        up = running(client, lab)
        left = (f"containers of {lab} running now: {', '.join(up)} (stop them: labbuild uninstall --dir {install_dir})"
                if up else f"no container of {lab} is running")
        raise InstallError(f"{exc.message}\n{left}", hint=exc.hint) from None
    check_running_images(client, manifest, platform)
    depends = {s: list(e.depends_on) for s, e in manifest.services.items()}

    def state(svc: str) -> str | None:
        c = containers(client, lab).get(svc)
        return "missing" if c is None else c.status

    # required services first; then the started optional ones, whose health never fails the install
    optional = {s for s, e in manifest.services.items() if e.optional}
    def health(svc: str) -> str | None:
        return container_health(client, lab, svc)

    def claim(svc: str) -> None:     # an app's owner account: claimed the moment it is healthy
        result.provisioned.update(provision_services(install_dir, manifest, {svc}, say, address=address))

    result.services = wait_healthy({s: p for s, p in probes.items() if s not in optional},
                                   {s: d for s, d in depends.items() if s not in optional},
                                   timeout, container_state=state, say=say, live=live, container_health=health,
                                   on_healthy=claim)
    started_optional = {s: d for s, d in depends.items() if s in optional and s not in waiting}
    if started_optional:
        result.services.update(wait_healthy({s: probes[s] for s in started_optional}, started_optional, timeout,
                                            container_state=state, say=say, live=live,
                                            container_health=health, on_healthy=claim))
    if now := [s for s in unpublished if s in result.provisioned and result.provisioned[s].state != "failed"]:
        publish(install_dir, published, release, wrapper_gpu(install_dir), now, project, say)
        result.services.update(wait_healthy({s: probes_of(published)[s] for s in now}, {s: [] for s in now},
                                            timeout, container_state=state, say=say, live=live,
                                            container_health=health))
    for svc, keys in waiting.items():
        result.services[svc] = HealthResult(svc, "not-started", not_started_detail(keys))
    publish_targets(client, release, lab, set(manifest.services) - set(waiting), say)
    if (bao := result.services.get(OPENBAO)) is not None and bao.state == "healthy":
        sync_openbao(install_dir, manifest, command="install", say=say,     # DIR/.env's values, as a copy
                     address=partial(container_address, client, lab, OPENBAO))
    bad = [r for r in result.services.values() if r.state == "unhealthy" and r.service not in optional]
    unclaimed = [p for p in result.provisioned.values() if p.state == "failed" and p.service not in optional]
    result.ok = not bad and not unclaimed
    if unclaimed and not bad:
        p = unclaimed[0]
        result.failure = p.failure(release / manifest.services[p.service].runbook, p.service in unpublished)
    if bad:
        r = bad[0]
        logs = project.logs(r.service, tail=20) or "(no log output)"
        runbook = release / manifest.services[r.service].runbook
        result.failure = (f"{r.service} is not healthy: {r.detail}\n"
                          f"last log lines of {r.service}:\n  " + "\n  ".join(logs.splitlines()[-20:]) +
                          f"\nrunbook: {runbook}\n"
                          f"{lab} {result.version} is installed but unhealthy; its containers are left running "
                          f"for inspection. Roll back: labbuild rollback --dir {install_dir}; "
                          f"remove: labbuild uninstall --dir {install_dir}")
    return result


def rollback(install_dir: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT, start: bool = True,
             say: Say = quiet, live: bool | None = None, restore_data: bool = False) -> InstallResult:
    """Make the previous release current again and bring it up (volumes and secrets kept).

    Services with one-way migrations refuse to go back without their data;
    ``restore_data`` restores their pre-upgrade snapshot (``snapshots.rollback_snapshot``).
    """
    install_dir = Path(install_dir).absolute()
    preflight(install_dir)
    check_no_interrupted_rotation(install_dir)
    current = current_release(install_dir)
    previous = release_link(install_dir, "previous")
    if previous is None or previous == current:
        raise InstallError(f"{install_dir} has no previous release to roll back to",
                           hint="installed releases: " + ", ".join(p.name for p in installed_releases(install_dir)))
    client = docker_client()
    with dir_lock(install_dir):
        manifest = read_manifest(previous)
        check_project_owner(client, manifest.lab, install_dir)
        platform = host_platform(client)
        result = InstallResult(ok=False, dir=install_dir, lab=manifest.lab, version=manifest.version,
                               release=previous, started=start)
        try:
            check_image_ids(client, manifest, platform, required=manifest.offline)
        except InstallError as exc:
            # releases keep no copy of the image blobs (the engine holds them)
            raise InstallError(f"cannot roll back to {result.version}: {exc.message}",
                               hint=f"its images are gone from the engine: install its bundle again "
                                    f"(labbuild install BUNDLE --dir {install_dir})") from None
        check_supplied(manifest, install_dir)
        one_way, snapshot = rollback_snapshot(install_dir, read_manifest(current), manifest,
                                              restore_data=restore_data)
        result.secrets_added = _add_secrets(install_dir, previous, manifest, "rollback")
        result.first_admin = _ensure_users(install_dir, previous, "rollback", say)   # a user file is kept as it is
        _switch(install_dir, previous, manifest, wrapper_gpu(install_dir), say)
        result.previous = current.name
        say(f"rolled back {install_dir} from {current.name} to {previous.name}")
        if snapshot is not None:
            say(f"restoring the data of {', '.join(one_way)} from {snapshot.path.name}")
            restore_snapshot(client, install_dir, previous, manifest, snapshot.path, one_way, timeout=timeout,
                             say=say)
        if not start:
            result.ok = True
            return result
        return _bring_up(client, install_dir, previous, manifest, result, platform, timeout, say, live)


@dataclass
class UninstallResult:
    dir: Path
    lab: str
    volumes_removed: bool
    images_removed: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "dir": str(self.dir), "lab": self.lab, "volumes_removed": self.volumes_removed,
                "images_removed": self.images_removed}


def uninstall(install_dir: str | os.PathLike, *, volumes: bool = False, say: Say = quiet) -> UninstallResult:
    """Stop and remove the lab's containers and networks (and volumes with ``volumes``),
    remove the images its bundles loaded, and the install directory's releases.

    ``DIR/.env`` (the secrets) and the front door's ``DIR/access/users_database.yml``
    are kept unless ``volumes``: the data in the volumes may need them. ``DIR/audit.log`` is always kept (deleting the
    secrets is its last entry).
    """
    install_dir = Path(install_dir).absolute()
    preflight(install_dir)
    release = current_release(install_dir)
    lab = read_manifest(release).lab
    client = docker_client()
    with dir_lock(install_dir):
        check_project_owner(client, lab, install_dir)
        project = Project(name=lab, install_dir=install_dir)
        if not (install_dir / WRAPPER).exists():   # installed by an older labbuild
            write_wrapper(install_dir, lab, release, False)
        say(f"stopping {lab}: cd {install_dir} && docker compose down" + (" -v" if volumes else ""))
        project.down(volumes=volumes)
        removed: list[str] = []
        manifests = [m for r in installed_releases(install_dir) if (m := safe_manifest(r)) is not None]
        refs = sorted({e.image for m in manifests if m.offline   # images this install loaded
                       for e in m.services.values()})
        for ref in refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                try:
                    client.images.remove(ref)
                    removed.append(ref)
                except docker.errors.APIError as exc:  # still used by another container: keep it
                    say(f"kept image {ref}: {exc.explanation or exc}")
        owners = read_manifest(release).secret_owners     # read before its release dir goes
        for name in ("current", "previous", WRAPPER, UNPUBLISHED_FILE):
            with contextlib.suppress(FileNotFoundError):
                (install_dir / name).unlink()
        shutil.rmtree(install_dir / RELEASES, ignore_errors=True)
        if volumes and (install_dir / ENV_FILE).exists():
            keys = sorted(filled_keys(read_env(install_dir)) & set(owners))
            record(install_dir, "uninstall --volumes", keys, [owners[k] for k in keys],
                   detail=f"{ENV_FILE} deleted with the volumes (audit.log is kept)")
            with contextlib.suppress(FileNotFoundError):
                (install_dir / ENV_FILE).unlink()
        if volumes:                 # the front door's users (password hashes) go with the secrets
            _remove_users(install_dir)
    with contextlib.suppress(OSError):
        (install_dir / LOCK_NAME).unlink()
        install_dir.rmdir()
    return UninstallResult(install_dir, lab, volumes, removed)
