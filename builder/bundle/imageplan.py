"""Images in a bundle, planned (pure): which images and platforms ship, and the small files of ``images/``.

``plan_images`` picks each service's locked image for the chosen platforms;
``layout_metadata`` makes ``images/oci-layout``, ``index.json`` and the
docker-load manifests from the lock alone; ``check_manifest`` holds a fetched
manifest to the lock. ``builder.bundle.fetch`` fetches the blobs these name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable

from ..blobcache import hex_of
from ..errors import BundleError
from ..fsutil import canonical_json
from ..format.files import DOCKER_LOAD_DEFAULT, IMAGES_DIR
from ..format.files import docker_load_manifest as docker_load_name
from ..lockfile import ImageRecord, Lock, PlatformRecord
from ..platforms import match_platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class PlannedImage:
    """One image to ship: its pin and the locked records of the chosen platforms."""

    reference: str                              # name:tag
    record: ImageRecord
    platforms: dict[str, PlatformRecord]        # chosen platform -> locked record
    services: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.record.name


def plan_images(lock: Lock, services: Iterable[str], platforms: Iterable[str]) -> list[PlannedImage]:
    """Which images and platforms go into ``images/``; BundleError when the lock cannot say.

    Unverified (pins-only) lock entries are refused: their config digests are
    unknown, so an install could not prove it runs the locked image.
    """
    platforms = list(platforms)
    by_ref: dict[str, PlannedImage] = {}
    for svc in sorted(services):
        rec = lock.services.get(svc)
        if rec is None:
            raise BundleError(f"service {svc!r} is not in the lock", hint="run `labbuild lock`")
        if not rec.verified or not rec.platforms:
            raise BundleError(
                f"{svc}: the lock entry for {rec.reference} is unverified (pins only): its layers and "
                "image IDs were never fetched", hint="run `labbuild lock` with the registry reachable, then release again")
        chosen = {}
        for p in platforms:
            key = match_platform(p, rec.platforms)
            if key is not None:
                chosen[key] = rec.platforms[key]
        if not chosen:
            raise BundleError(
                f"{svc}: {rec.reference} has no image for {', '.join(platforms)}",
                hint="locked platforms: " + ", ".join(sorted(rec.platforms)) + "; choose one with --platform")
        prior = by_ref.get(rec.reference)
        if prior is not None:
            if prior.record.digest != rec.digest:
                raise BundleError(f"{rec.reference} is locked to two digests ({', '.join(prior.services)} vs {svc})",
                                  hint="pin every service using this tag to the same digest")
            by_ref[rec.reference] = PlannedImage(rec.reference, rec, prior.platforms, prior.services + (svc,))
        else:
            by_ref[rec.reference] = PlannedImage(rec.reference, rec, chosen, (svc,))
    return [by_ref[r] for r in sorted(by_ref)]


def _blob_path(digest: str) -> str:
    return f"blobs/sha256/{hex_of(digest)}"


def docker_load_manifest(plans: list[PlannedImage], platform: str) -> list[dict[str, Any]]:
    """The docker-load ``manifest.json`` entries for ``platform`` (images lacking it are left out)."""
    entries = []
    for plan in plans:
        key = match_platform(platform, plan.platforms)
        if key is None:
            continue
        rec = plan.platforms[key]
        entries.append({"Config": _blob_path(rec.config), "RepoTags": [plan.reference],
                        "Layers": [_blob_path(l.digest) for l in rec.layers]})
    return entries


def _inside_images(arcname: str) -> str:
    return arcname.removeprefix(IMAGES_DIR + "/")


def layout_metadata(plans: list[PlannedImage], platforms: list[str]) -> dict[str, bytes]:
    """The small files of ``images/`` (arcname relative to images/ -> bytes)."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": plan.record.media_type,
            "digest": plan.record.digest,
            "size": plan.record.size,
            "annotations": {REF_NAME: plan.reference, CONTAINERD_NAME: plan.reference},
        } for plan in plans],
    }
    files = {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": canonical_json(index).encode(),
    }
    shipped = [p for p in platforms if any(match_platform(p, plan.platforms) for plan in plans)]
    for p in shipped:
        files[_inside_images(docker_load_name(p))] = canonical_json(docker_load_manifest(plans, p)).encode()
    files[_inside_images(DOCKER_LOAD_DEFAULT)] = files[_inside_images(docker_load_name(shipped[0]))]
    return files


def _blobs_of(plans: list[PlannedImage]) -> dict[str, tuple[int | None, str]]:
    """Every config and layer digest -> (size, image name to fetch it from)."""
    blobs: dict[str, tuple[int | None, str]] = {}
    for plan in plans:
        for rec in plan.platforms.values():
            blobs.setdefault(rec.config, (rec.config_size or None, plan.name))
            for layer in rec.layers:
                blobs.setdefault(layer.digest, (layer.size, plan.name))
    return blobs


def check_manifest(data: bytes, what: str, config: str | None, layers: list[str]) -> None:
    """A fetched manifest (image or model) must name exactly the locked ``config`` and ``layers``;
    ``what`` names it in the BundleError (``<reference> ... manifest <digest>``)."""
    try:
        m = json.loads(data)
        got_config = m["config"]["digest"]
        got_layers = [layer["digest"] for layer in m["layers"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{what} is malformed ({exc})") from None
    if config is None or got_config != config or got_layers != layers:
        raise BundleError(f"{what} does not match the lock",
                          hint="the lock is damaged or was edited by hand; run `labbuild lock` again")


def _check_manifest(plan: PlannedImage, platform: str, data: bytes) -> None:
    """The fetched platform manifest must name exactly the locked config and layers."""
    rec = plan.platforms[platform]
    check_manifest(data, f"{plan.reference} ({platform}): manifest {rec.manifest}", rec.config,
                   [layer.digest for layer in rec.layers])


def _check_index(plan: PlannedImage, data: bytes) -> None:
    """The fetched pinned index must list every chosen platform's locked manifest."""
    try:
        listed = {d["digest"] for d in json.loads(data)["manifests"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{plan.reference}: index {plan.record.digest} is malformed ({exc})") from None
    for platform, rec in sorted(plan.platforms.items()):
        if rec.manifest not in listed:
            raise BundleError(f"{plan.reference} ({platform}): manifest {rec.manifest} is not in the pinned "
                              f"{plan.record.digest}", hint="the lock is damaged; run `labbuild lock` again")


@dataclass(frozen=True)
class ManifestToFetch:
    """A pinned manifest or index, or a platform manifest: where to fetch it, its size (None: not
    in the lock) and the checks its bytes must pass against the lock."""

    name: str
    size: int | None
    checks: tuple[Callable[[bytes], None], ...]

    def check(self, data: bytes) -> None:
        for check in self.checks:
            check(data)


def manifests_to_fetch(plans: list[PlannedImage]) -> dict[str, ManifestToFetch]:
    """Every manifest ``plans`` ship (pinned ones, then each chosen platform's) by digest."""
    out: dict[str, ManifestToFetch] = {}

    def add(name: str, digest: str, size: int, check: Callable[[bytes], None] | None) -> None:
        prior = out.get(digest)
        checks = (prior.checks if prior else ()) + ((check,) if check else ())
        out[digest] = ManifestToFetch(prior.name if prior else name, (prior.size if prior else None) or size or None,
                                      checks)

    for plan in plans:
        index = plan.record.media_type in INDEX_TYPES
        add(plan.name, plan.record.digest, plan.record.size, partial(_check_index, plan) if index else None)
        for platform, rec in sorted(plan.platforms.items()):
            if not index and rec.manifest != plan.record.digest:
                raise BundleError(f"{plan.reference} ({platform}): manifest {rec.manifest} is not in the pinned "
                                  f"{plan.record.digest}", hint="the lock is damaged; run `labbuild lock` again")
            add(plan.name, rec.manifest, rec.manifest_size, partial(_check_manifest, plan, platform))
    return out
