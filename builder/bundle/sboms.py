"""SBOMs at release (build side): one CycloneDX 1.6 document per shipped image and platform.

The layers are read where they lie: in the archive being written (``bundle.direct``,
``--with-images``) or in the blob cache, where ``fetch_to_cache`` fetches them (``--sbom`` alone); the
documents are bundle members under ``sbom/`` (``builder.sbom.sbom_path``),
listed in manifest.json, so the checksums, the signature and the provenance
cover them. Deterministic: serial from the image digest and platform,
timestamp from the build epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from .. import __version__
from ..format.files import SBOM_DIR, sbom_path
from ..blobcache import BlobCache
from .archive import BundleFile
from ..fsutil import FileRange
from .fetch import DirectBlob, PendingBlob, PlannedImage
from .located import locate, stamp_of

SBOM_WORKERS = 2


def sbom_warnings(files: Iterable[BundleFile]) -> list[str]:
    """What the bundle's SBOMs say they left out (their ``labbuild:warning`` properties), one
    line each as ``sbom/NAME: warning``: so a release says it, not only its documents."""
    out = []
    for f in files:
        if f.arcname.startswith(f"{SBOM_DIR}/") and f.arcname.endswith(".cdx.json") and f.data is not None:
            props = (json.loads(f.data).get("metadata") or {}).get("properties") or []
            out += [f"{f.arcname}: {p.get('value')}" for p in props if p.get("name") == "labbuild:warning"]
    return out


@dataclass(frozen=True)
class SbomFile(BundleFile):
    """An SBOM member, with the key of what it was made from (``document_key``)."""

    key: str = ""


def document_key(name: str, tag: str, manifest: str, platform: str, layers: list[str], epoch: int) -> str:
    """Everything an SBOM document's bytes depend on (the layers by digest, this labbuild)."""
    spec = [name, tag, manifest, platform, layers, epoch, __version__]
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()


def _noted(where) -> bytes | None:
    """An SBOM document inside a noted bundle, unless that bundle changed since."""
    try:
        with FileRange(where.path, where.offset, where.size) as fh:
            if stamp_of(os.fstat(fh.fileno())) != where.stamp:
                return None
            data = fh.read()
    except OSError:
        return None
    return data if len(data) == where.size else None


def sbom_members(plans: Iterable[PlannedImage], *, epoch: int, cache: BlobCache | None = None,
                 pending: Iterable[BundleFile] = ()) -> list[BundleFile]:
    """The ``sbom/`` members of a bundle for ``plans``.

    ``pending``: bundle members some of which are still downloading
    (``fetch.PendingBlob``); each image's document is made, in a small pool,
    as soon as its own layers are in the cache, while the others download.
    Without it the layers must all be in the cache already."""
    cache = cache or BlobCache()
    ready = {"sha256:" + f.sha256_hint: f.ready for f in pending
             if isinstance(f, PendingBlob) and f.ready is not None and f.sha256_hint}
    placed = {f.digest: f for f in pending if isinstance(f, DirectBlob)}   # in the archive being written
    jobs = [(plan, platform, rec) for plan in plans for platform, rec in sorted(plan.platforms.items())]
    memo: list = []      # a ChainMemo, once a document is made: images on the same base read it once
    keys = {(plan.reference, platform): document_key(*plan.reference.rpartition(":")[::2], rec.manifest, platform,
                                                     [layer.digest for layer in rec.layers], epoch)
            for plan, platform, rec in jobs}
    noted = locate(keys.values(), kind="documents")
    memo_lock = threading.Lock()

    def document(plan: PlannedImage, platform: str, rec) -> BundleFile:
        key = keys[(plan.reference, platform)]
        data = _noted(noted[key]) if key in noted else None
        if data is not None:        # made from the same layers by this labbuild: the same bytes
            return SbomFile(sbom_path(plan.services[0], platform), data=data, key=key)
        for layer in rec.layers:
            if layer.digest in ready:
                ready[layer.digest].result()
        # Lazy: the SBOM pipeline (cyclonedx, jsonschema: ~0.3 CPU-s) loads only when a document is
        # made (a warm release finds every one noted in a bundle), and while the layers download
        from ..sbom import ChainMemo, ImageSubject, Layer, generate_sbom
        with memo_lock:
            memo[:] = memo or [ChainMemo()]
        name, _, tag = plan.reference.rpartition(":")
        layers = [Layer(digest=layer.digest, path=placed[layer.digest].slot.path,
                        offset=placed[layer.digest].slot.offset, size=placed[layer.digest].known_size)
                  if layer.digest in placed else Layer(digest=layer.digest, path=cache.path(layer.digest))
                  for layer in rec.layers]
        data = generate_sbom(ImageSubject(name=name, digest=rec.manifest, platform=platform, tag=tag),
                             layers, epoch=epoch, labbuild_version=__version__, memo=memo[0])
        return SbomFile(sbom_path(plan.services[0], platform), data=data, key=key)

    if not ready or len(jobs) < 2:
        return [document(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=SBOM_WORKERS, thread_name_prefix="labbuild-sbom") as pool:
        futures = [pool.submit(document, *job) for job in jobs]
        return [f.result() for f in futures]
