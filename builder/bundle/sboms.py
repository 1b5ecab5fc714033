"""SBOMs at release (build side): one CycloneDX 1.6 document per shipped image and platform.

The layers are read from the blob cache, where ``fetch`` put them (with
``--with-images``) or ``fetch_to_cache`` fetches them (``--sbom`` alone); the
documents are bundle members under ``sbom/`` (``builder.sbom.sbom_path``),
listed in manifest.json, so the checksums, the signature and the provenance
cover them. Deterministic: serial from the image digest and platform,
timestamp from the build epoch.
"""

from __future__ import annotations

from typing import Iterable

from .. import __version__
from ..blobcache import BlobCache
from ..sbom import ImageSubject, Layer, generate_sbom, sbom_path
from .archive import BundleFile
from .fetch import PlannedImage


def sbom_members(plans: Iterable[PlannedImage], *, epoch: int, cache: BlobCache | None = None) -> list[BundleFile]:
    """The ``sbom/`` members of a bundle for ``plans`` (their layers must be in the cache)."""
    cache = cache or BlobCache()
    members = []
    for plan in plans:
        name, _, tag = plan.reference.rpartition(":")
        for platform, rec in sorted(plan.platforms.items()):
            layers = [Layer(digest=layer.digest, path=cache.path(layer.digest)) for layer in rec.layers]
            document = generate_sbom(ImageSubject(name=name, digest=rec.manifest, platform=platform, tag=tag),
                                     layers, epoch=epoch, labbuild_version=__version__)
            members.append(BundleFile(sbom_path(plan.services[0], platform), data=document))
    return members
