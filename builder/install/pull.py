"""Pull an online bundle's images before ``compose up``, one by one, with per-image progress.

An online bundle names each image by digest and ships no blobs; a phase-4 lab
is tens of GB. Pulling is its own step, before ``up`` and before any health
budget starts (``builder.host.health``), so a slow link never turns into a
"not healthy" verdict. Images the engine already holds (by digest) are
skipped; offline bundles never get here (their images were loaded).

The engine pulls by ``repository@digest``: the registry cannot hand over
anything but the locked content, and ``compose up`` then finds the image by
that digest without pulling again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import docker
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ..errors import InstallError
from ..format.manifest import Manifest
from ..host.engine import pull_stream


@dataclass
class PullResult:
    pulled: list[str] = field(default_factory=list)     # repository@digest
    present: list[str] = field(default_factory=list)    # already in the engine
    seconds: float = 0.0


def pull_refs(manifest: Manifest) -> list[tuple[str, str]]:
    """``[(repository@digest, services using it)]`` of a bundle, each image once, sorted."""
    users: dict[str, list[str]] = {}
    for svc, entry in sorted(manifest.services.items()):
        repo = entry.image.rsplit(":", 1)[0] if "/" not in entry.image.rsplit(":", 1)[-1] else entry.image
        users.setdefault(f"{repo}@{entry.digest}", []).append(svc)
    return [(ref, ", ".join(svcs)) for ref, svcs in sorted(users.items())]


def _has(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise InstallError(f"cannot inspect image {ref}: {exc.explanation or exc}") from None


def _pull_one(client, ref: str, on_progress: Callable[[int, int], None]) -> None:
    """Pull ``ref``; ``on_progress(done_bytes, total_bytes)`` as layers download."""
    repo, digest = ref.split("@", 1)
    layers: dict[str, tuple[int, int]] = {}
    try:
        for msg in pull_stream(client, repo, digest):
            if "error" in msg or "errorDetail" in msg:
                raise InstallError(f"pulling {ref} failed: "
                                   + ((msg.get("errorDetail") or {}).get("message") or msg.get("error")),
                                   hint="check the host's network and registry access, or install a bundle "
                                        "built with --with-images")
            detail, layer = msg.get("progressDetail") or {}, msg.get("id")
            if layer and detail.get("total") and msg.get("status") == "Downloading":
                layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
            elif layer and msg.get("status") in ("Download complete", "Pull complete", "Already exists"):
                total = layers.get(layer, (0, 0))[1]
                layers[layer] = (total, total)
            on_progress(sum(c for c, _ in layers.values()), sum(t for _, t in layers.values()))
    except docker.errors.APIError as exc:
        raise InstallError(f"pulling {ref} failed: {exc.explanation or exc}",
                           hint="check the host's network and registry access, or install a bundle "
                                "built with --with-images") from None


def pull_images(client, manifest: Manifest, *, say: Callable[[str], None], live: bool | None = None) -> PullResult:
    """Pull every image of an online bundle the engine lacks (see the module docstring)."""
    result = PullResult()
    began = time.monotonic()
    refs = pull_refs(manifest)
    missing = []
    for ref, users in refs:
        (result.present if _has(client, ref) else missing).append(ref)
    if not missing:
        return result
    console = Console(stderr=True)
    show = console.is_terminal if live is None else (live and console.is_terminal)
    say(f"pulling {len(missing)} image(s) before starting (no health deadline runs meanwhile)")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=console, disable=not show, transient=False) as bars:
        for n, ref in enumerate(missing, start=1):
            users = dict(refs)[ref]
            task = bars.add_task(f"{users}", total=None)
            started = time.monotonic()
            if not show:
                say(f"  pulling {ref} ({users}; {n}/{len(missing)})")

            def progress(done: int, total: int, task=task) -> None:
                bars.update(task, completed=done, total=total or None)
            _pull_one(client, ref, progress)
            bars.update(task, description=f"{users}: pulled")
            if not show:
                say(f"  pulled {ref} in {time.monotonic() - started:.1f}s")
            result.pulled.append(ref)
    result.seconds = time.monotonic() - began
    return result
