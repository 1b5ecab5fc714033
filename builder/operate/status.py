"""`labbuild status`: each service of the current release — container state, one
health probe (at its published port, or at the container's address for a port the front door
does not publish; the engine's health status for a service with only an in-container
healthcheck), its image ID against the lock, the models present in its volume (services with
``[[models]]``). An optional service waiting for its supplied secrets shows as ``not started:
needs KEY`` and is not a failure; secrets due for rotation (``operate.secrets.due_warnings``) are
warnings, never a failure. With the front door on, the number of its users, enabled users and
enabled admins (never a name or a hash)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import InstallError
from ..host.compose import wrapper_unpublished
from ..host.dotenv import read_env
from ..host.engine import addresses, container_health, containers, docker_client, host_platform
from ..host.health import Probe, probe_once
from ..host.labdir import LabDir, read_manifest
from ..host.userdb import read_database, release_provider, users_path
from ..install.inputs import not_started_detail, waiting_optional
from ..install.models import model_inventory
from ..install.unpublished import unpublished_view
from ..platforms import expected_image_id
from .secrets import due_warnings


@dataclass
class ServiceStatus:
    service: str
    state: str              # running, exited, restarting, missing, not started, ...
    health: str             # healthy | unhealthy | no-probe | not-running | not-started (optional, inputs missing)
    image: str
    image_id: str | None
    locked_id: str | None
    detail: str = ""
    models: list[str] | None = None     # models present in its volume (services with [[models]] only)

    @property
    def image_ok(self) -> bool:
        return self.locked_id is None or self.image_id == self.locked_id

    @property
    def ok(self) -> bool:
        if self.health == "not-started":     # optional and waiting for its supplied secrets: not a failure
            return True
        return self.state == "running" and self.health in ("healthy", "no-probe") and self.image_ok

    def to_json(self) -> dict[str, Any]:
        out = {"state": self.state, "health": self.health, "image": self.image, "image_id": self.image_id,
               "locked_id": self.locked_id, "image_matches_lock": self.image_ok, "detail": self.detail}
        if self.models is not None:
            out["models"] = self.models
        return out


@dataclass
class StatusResult:
    dir: Path
    lab: str
    version: str
    previous: str | None
    services: dict[str, ServiceStatus]
    warnings: list[str] = field(default_factory=list)   # secrets due for rotation; never a failure
    users: dict[str, int] | None = None     # the front door's users (counts only), when the release has the door

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.services.values())

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "dir": str(self.dir), "lab": self.lab, "version": self.version,
                "previous": self.previous,
                "services": {n: s.to_json() for n, s in sorted(self.services.items())}, "warnings": self.warnings,
                **({"users": self.users} if self.users is not None else {})}


def status(install_dir: str | os.PathLike) -> StatusResult:
    """Every service of the current release: container state, one health probe, image ID vs lock."""
    lab_dir = LabDir.at(install_dir)
    install_dir, release = lab_dir.path, lab_dir.current
    manifest = read_manifest(release)
    client = docker_client()
    platform = host_platform(client)
    found = containers(client, manifest.lab)
    address, engine_health = addresses(client, manifest.lab), partial(container_health, client, manifest.lab)
    previous = lab_dir.previous
    waiting = waiting_optional(manifest, read_env(install_dir))
    unpublished = wrapper_unpublished(install_dir)
    view = unpublished_view(manifest, unpublished)
    out: dict[str, ServiceStatus] = {}
    for svc, entry in sorted(manifest.services.items()):
        c = found.get(svc)
        locked = expected_image_id(entry.config_digests, platform)
        state = c.status if c is not None else "missing"
        # unpublished (the front door, or until install has claimed its admin): at the container's address
        probe = Probe.of(svc, view.services[svc], partial(address, svc))
        if svc in waiting and state != "running":
            state, health, detail = "not started", "not-started", not_started_detail(waiting[svc])
        elif state != "running":
            health, detail = "not-running", ""
        elif probe is None:
            health, detail = "no-probe", ("no host port until install has claimed its admin (DIR/unpublished.yaml)"
                                          if svc in unpublished else "")
        else:
            ok, detail = probe_once(probe, engine_health)
            health = "healthy" if ok else "unhealthy"
            if svc in unpublished:
                detail += " (no host port until install has claimed its admin: DIR/unpublished.yaml)"
        out[svc] = ServiceStatus(svc, state, health, entry.image, c.attrs.get("Image") if c is not None else None,
                                 locked, detail,
                                 models=model_inventory(client, c, entry) if entry.models and c is not None else None)
    warnings = due_warnings(install_dir)
    return StatusResult(install_dir, manifest.lab, manifest.version, previous.name if previous else None, out,
                        warnings=warnings, users=user_counts(install_dir, release, warnings))


def user_counts(install_dir: Path, release: Path, warnings: list[str]) -> dict[str, int] | None:
    """How many users the front door has, enabled, and enabled admins — never a name; None without
    the door. A user file that cannot be read, or no enabled admin, is a warning."""
    try:
        if release_provider(release) is None:
            return None
        users = read_database(install_dir)
    except InstallError as exc:
        warnings.append(f"front door: {exc.message}")
        return None
    enabled = [d for d in users.values() if not d.get("disabled", False)]
    counts = {"users": len(users), "enabled": len(enabled),
              "admins": sum(1 for d in enabled if "admin" in (d.get("groups") or ()))}
    if not counts["admins"]:
        warnings.append(f"front door: no enabled admin in {users_path(install_dir)} "
                        "(labbuild users add NAME --role admin --dir DIR)")
    return counts
