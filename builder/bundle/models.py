"""Models in a bundle (build side): fetch the locked ``[[models]]`` into ``images/``.

An Ollama model is an OCI artifact: a Docker schema2 manifest whose config is
a small JSON and whose layers are the weights (``application/vnd.ollama.image.model``),
template, params, license, ... So ``release --with-images`` ships models in
the same OCI layout as the images (``builder.bundle.fetch``):

    images/blobs/sha256/<hex>   every model manifest, config and layer, once — a blob
                                an image already ships is not added again
    images/index.json           gains one descriptor per model manifest, annotated with
                                its ``name:tag`` and ``org.local-ai-lab.model.format``

``add_model_files(lab, lock, services, members)`` returns ``members`` plus the
model blobs; like image layers, blobs are written straight into the bundle
(``bundle.direct``) or, for a rebuild, come through the blob cache (hashed while written, resumed
after an interruption, with progress), in the background like image layers.
Every model manifest is re-hashed and must name exactly the locked config and
layers. ``plan_models`` is the pure part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..blobcache import BlobCache
from ..errors import BundleError
from ..format.files import IMAGES_DIR
from ..format.models import DEFAULT_MODEL_FORMAT, model_blob_path
from ..fsutil import canonical_json
from ..lockfile import Lock, ModelRecord
from ..registry import RegistryClient
from .archive import BundleFile
from .fetch import _download, _not_in_bundles, blob_member, direct_member
from .imageplan import REF_NAME, check_manifest
from .located import locate

INDEX_MEMBER = f"{IMAGES_DIR}/index.json"
FORMAT_ANNOTATION = "org.local-ai-lab.model.format"


@dataclass(frozen=True)
class PlannedModel:
    """One model to ship and the services that declare it."""

    record: ModelRecord
    format: str
    services: tuple[str, ...]


def plan_models(lab, lock: Lock, services: Iterable[str]) -> list[PlannedModel]:
    """Which models go into ``images/``; BundleError when the lock cannot say.

    Unverified (``lock --offline``) model entries are refused: their blobs
    were never named by a verified manifest.
    """
    by_ref: dict[str, PlannedModel] = {}
    for svc in sorted(services):
        rec = lock.services.get(svc)
        if rec is None:
            raise BundleError(f"service {svc!r} is not in the lock", hint="run `labbuild lock`")
        formats = {m.reference: m.format for m in lab.services[svc].models} if svc in lab.services else {}
        for model in rec.models:
            if not model.verified or model.config is None:
                raise BundleError(f"{svc}: the lock entry for model {model.reference} is unverified (pin only): "
                                  "its blobs were never named by a verified manifest",
                                  hint="run `labbuild lock` with the registry reachable, then release again")
            prior = by_ref.get(model.reference)
            if prior is not None and prior.record.digest != model.digest:
                raise BundleError(f"model {model.reference} is locked to two digests "
                                  f"({', '.join(prior.services)} vs {svc})",
                                  hint="pin every service using this model tag to the same digest")
            by_ref[model.reference] = PlannedModel(
                model, formats.get(model.reference, DEFAULT_MODEL_FORMAT),
                (prior.services if prior else ()) + (svc,))
    return [by_ref[r] for r in sorted(by_ref)]


def index_entries(plans: list[PlannedModel]) -> list[dict[str, Any]]:
    """The ``images/index.json`` descriptors of the model manifests."""
    return [{"mediaType": p.record.media_type, "digest": p.record.digest, "size": p.record.size,
             "annotations": {REF_NAME: p.record.reference, FORMAT_ANNOTATION: p.format}} for p in plans]


def with_model_index(index_json: bytes, plans: list[PlannedModel]) -> bytes:
    """``images/index.json`` with the model manifests appended (images keep their order)."""
    index = json.loads(index_json)
    index["manifests"] = [*index["manifests"], *index_entries(plans)]
    return canonical_json(index).encode()


def _check_manifest(rec: ModelRecord, data: bytes) -> None:
    """The fetched model manifest must name exactly the locked config and layers."""
    check_manifest(data, f"model {rec.reference}: manifest {rec.digest}",
                   rec.config.digest if rec.config is not None else None, [layer.digest for layer in rec.layers])


def add_model_files(lab, lock: Lock, services: Iterable[str], members: list[BundleFile],
                    progress: Any = None, *, cache: BlobCache | None = None, direct: bool = False) -> list[BundleFile]:
    """``members`` (the images/ members from ``fetch.image_files``) plus every model blob.

    Nothing changes when no service of the closure has models. ``progress``
    and ``direct`` as in ``image_files``.
    """
    plans = plan_models(lab, lock, services)
    if not plans:
        return list(members)
    if not any(f.arcname == INDEX_MEMBER for f in members):
        raise BundleError("models need the OCI layout of an image bundle", hint="release --with-images")
    cache = cache or BlobCache()
    taken = {f.arcname for f in members}
    blobs: dict[str, tuple[int | None, str]] = {}
    for p in plans:
        for b in p.record.blobs:
            blobs.setdefault(b.digest, (b.size, p.record.name))
    show = progress if isinstance(progress, bool) or progress is None else True
    client = RegistryClient(insecure_registries=tuple(lab.insecure_registries))
    try:
        for p in plans:
            if not cache.has(p.record.digest, p.record.size):
                cache.put(p.record.digest, client.fetch_manifest(p.record.name, p.record.digest).data)
            _check_manifest(p.record, cache.read(p.record.digest))
        if direct:
            client.close()
            located = locate([*blobs, *(p.record.digest for p in plans)])
        else:
            wanted, located = _not_in_bundles(cache, {d: v for d, v in blobs.items() if model_blob_path(d) not in taken})
            pending, tails = _download(client, cache, wanted, show, background=True, what="model blobs")
    except BaseException:
        client.close()
        raise
    out = [BundleFile(f.arcname, data=with_model_index(f.open().read(), plans)) if f.arcname == INDEX_MEMBER
           else f for f in members]
    for digest in sorted({p.record.digest for p in plans} | set(blobs)):
        arcname = model_blob_path(digest)
        if arcname in taken:      # an image ships the same bytes: once is enough
            continue
        taken.add(arcname)
        if direct:
            size, repo = blobs.get(digest) or next((p.record.size, p.record.name) for p in plans
                                                  if p.record.digest == digest)
            out.append(direct_member(arcname, digest, size, repo, cache, located))
        else:
            out.append(blob_member(arcname, digest, cache, pending, blobs, tails, located))
    return out
