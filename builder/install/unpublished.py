"""No window for a first visitor: a service whose admin install claims by ``[[provision]]`` calls
publishes no host port until those calls have succeeded once in this install dir.

Until then ``DIR/unpublished.yaml`` (labbuild's own file, listed in ``DIR/compose.yaml``'s include
after the release's compose file) resets the service's ``ports`` (compose's ``!reset``), so plain
``docker compose up`` in DIR keeps it unpublished too. Install probes it and makes its calls at the
container's own address on the lab network (as for the front door's UIs), then drops it from the
file and recreates just that service with its ports. A claim that fails leaves it unpublished: no
one but the engine's host reaches its setup page, and the next install tries again.

"Succeeded once" is DIR/audit.log's record: a ``provision`` entry with outcome ok for the service
(done now, or done before: ``provision.provisioned_before``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..format.manifest import Manifest
from ..host.compose import wrapper_unpublished, write_wrapper
from .provision import provisioned_before


def pending_claims(install_dir: Path, manifest: Manifest) -> tuple[str, ...]:
    """The services to keep unpublished now: steps through a published port, never succeeded here."""
    before = provisioned_before(install_dir)
    return tuple(sorted(svc for svc, e in manifest.services.items()
                        if e.provision and svc not in before
                        and all(s.host_port is not None and s.container_port for s in e.provision)))


def unpublished_view(manifest: Manifest, services: tuple[str, ...] | list[str]) -> Manifest:
    """``manifest`` as the running containers are while ``services`` publish nothing: their health
    probe and provisioning steps go to the container's address (``host_port`` None)."""
    changed = {}
    for svc in services:
        e = manifest.services[svc]
        changed[svc] = replace(e, provision=tuple(replace(s, host_port=None) for s in e.provision),
                               health=replace(e.health, host_port=None) if e.health is not None else None)
    return replace(manifest, services={**manifest.services, **changed})


def publish(install_dir: Path, manifest: Manifest, release: Path, gpu: bool, now: list[str], project,
            say) -> None:
    """Drop ``now`` (claimed just now) from ``DIR/unpublished.yaml`` and recreate just them with their ports."""
    left = tuple(s for s in wrapper_unpublished(install_dir) if s not in now)
    write_wrapper(install_dir, manifest.lab, release, gpu, left)
    say(f"publishing {', '.join(now)} now that install has claimed the admin: "
        f"cd {install_dir} && docker compose up -d --no-deps {' '.join(now)}")
    project.run("up", "-d", "--no-deps", *now, timeout=600)
