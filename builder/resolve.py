"""Resolving pins through the registry: the network edge of the lock stage.

``resolve_image`` fetches one pin's closure (index -> per-platform manifests,
each hash-verified by the client) and turns it into an ``ImageRecord``
(``platform_record``, ``index_platforms`` and ``record_from_manifests`` are
the pure conversions, tested without a registry); ``resolve_model`` does the
same for a ``[[models]]`` pin (an Ollama model is a schema2 manifest on an
OCI registry: manifest and config re-hashed, config and layers recorded;
``model_record`` is the pure part); ``resolve_services`` resolves many
concurrently and fails with one ``LockError`` naming every service that
failed; ``resolve_pin_updates`` asks where tags (of images and models) point
now (``lock --update``; ``--to``/``--latest`` give images other tags).
"""

from __future__ import annotations

import dataclasses
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .blueprint import Blueprint, Image, Lab, Model, locate_lines
from .errors import LabbuildError, LockError, Problem, RegistryError
from .lockfile import ImageRecord, LayerRecord, ModelRecord, PlatformRecord
from .registry import ImageManifest, RegistryClient


@dataclass(frozen=True)
class PinUpdate:
    """``lock --update``: one pin before and after re-resolving its tag.

    ``model`` is None for the service's ``[image]``, else the index of the
    ``[[models]]`` entry whose pin moves.
    """

    service: str
    reference: str
    old: str
    new: str
    model: int | None = None
    tag: str | None = None     # the image's new tag (``--to``/``--latest``); None: the tag stays

    def render(self) -> str:
        what = f"'{self.service}'" if self.model is None else f"model {self.model} of '{self.service}'"
        if self.tag is not None:
            return f"Moved pin of {what}: {self.reference}@{self.old[:19]} -> {self.tag}@{self.new[:19]}"
        return f"Moved pin of {what} ({self.reference}): {self.old[:19]} -> {self.new[:19]}"


class ModelLockError(LockError):
    """Resolving ``[[models]]`` entry ``index`` of a service failed (points the problem at its line)."""

    def __init__(self, index: int, cause: LabbuildError) -> None:
        super().__init__(cause.message, hint=cause.hint)
        self.index = index


def platform_key(os_: str, arch: str, variant: str | None) -> str:
    """``linux``/``arm64``/``v8`` -> ``linux/arm64`` (the normalisation containerd uses)."""
    if arch == "arm64" and variant in (None, "", "v8"):
        variant = None
    return "/".join(p for p in (os_, arch, variant) if p)


def platform_record(manifest: ImageManifest) -> PlatformRecord:
    """A single-platform manifest's record: manifest, config (= image ID) and layers."""
    doc = manifest.json()
    try:
        config = doc["config"]
        layers = tuple(LayerRecord(digest=l["digest"], size=int(l["size"]),
                                   media_type=l.get("mediaType", "")) for l in doc.get("layers", ()))
        rec = PlatformRecord(manifest=manifest.digest, media_type=manifest.media_type,
                             config=config["digest"], size=0, layers=layers,
                             config_media_type=config.get("mediaType", ""),
                             manifest_size=len(manifest.data), config_size=int(config["size"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise LockError(f"manifest {manifest.digest} is malformed ({type(exc).__name__}: {exc})",
                        hint="the image was pushed with a broken manifest") from None
    return dataclasses.replace(rec, size=rec.total_size)


def index_platforms(index: ImageManifest, wanted: tuple[str, ...]) -> dict[str, str]:
    """``{platform: child manifest digest}`` for each of ``wanted`` the index has.

    The first matching entry wins (indexes list the canonical one first);
    entries without a platform (attestations) are ignored.
    """
    found: dict[str, str] = {}
    for entry in index.json().get("manifests", []):
        plat = entry.get("platform") or {}
        if not plat.get("os") or not plat.get("architecture"):
            continue
        key = platform_key(plat["os"], plat["architecture"], plat.get("variant"))
        if key in wanted and key not in found:
            found[key] = entry["digest"]
    return found


def record_from_manifests(image: Image, top: ImageManifest, platforms: dict[str, PlatformRecord]) -> ImageRecord:
    """The verified lock entry of ``image`` from its top manifest and per-platform records."""
    return ImageRecord(reference=image.reference, digest=image.digest, media_type=top.media_type,
                       verified=True, platforms=dict(sorted(platforms.items())), size=len(top.data))


def resolve_image(client: RegistryClient, image: Image, platforms: tuple[str, ...],
                  pool: ThreadPoolExecutor | None = None) -> ImageRecord:
    """Fetch and verify the closure of one pin: index -> per-platform manifests.

    An index is expanded to the ``platforms`` it has (at least one must be
    there); a single-platform image is recorded for its own platform, read
    from its config. Every manifest and config fetched is hash-verified by
    the client.
    """
    top = client.fetch_manifest(image.name, image.digest)
    if not top.is_index:
        config = _config_of(client, image, top)
        key = platform_key(config.get("os", ""), config.get("architecture", ""), config.get("variant"))
        if "/" not in key:
            raise LockError(f"{image.pinned}: the image config names no os/architecture",
                            hint="rebuild the image with a standard builder")
        return record_from_manifests(image, top, {key: platform_record(top)})
    children = index_platforms(top, platforms)
    if not children:
        have = sorted({platform_key(e.get("platform", {}).get("os", "?"), e.get("platform", {}).get("architecture", "?"),
                                    e.get("platform", {}).get("variant"))
                       for e in top.json().get("manifests", [])})
        raise LockError(f"{image.pinned}: the index has none of the lab's platforms {', '.join(platforms)}",
                        hint=f"it has {', '.join(have) or 'no platforms'}; change [lab].platforms or the image")
    fetch = lambda digest: client.fetch_manifest(image.name, digest)  # noqa: E731
    manifests = list(pool.map(fetch, children.values())) if pool else [fetch(d) for d in children.values()]
    records = {}
    for plat, manifest in zip(children, manifests):
        if manifest.is_index:
            raise LockError(f"{image.pinned}: platform {plat} points at another index",
                            hint="nested indexes are not supported")
        records[plat] = platform_record(manifest)
    return record_from_manifests(image, top, records)


def _config_of(client: RegistryClient, image: Image, manifest: ImageManifest) -> dict:
    digest = manifest.json().get("config", {}).get("digest", "")
    try:
        config = json.loads(client.fetch_blob(image.name, digest))
    except ValueError:
        raise LockError(f"{image.pinned}: config {digest} is not JSON") from None
    return config if isinstance(config, dict) else {}


def model_record(model: Model, manifest: ImageManifest) -> ModelRecord:
    """The verified lock entry of a model pin from its (hash-verified) manifest."""
    if manifest.is_index:
        raise LockError(f"{model.reference}@{model.digest}: is a manifest list, not one model",
                        hint="pin the digest of a single model manifest (what `ollama pull` stores)")
    doc = manifest.json()
    try:
        config = doc["config"]
        blob = lambda d: LayerRecord(digest=d["digest"], size=int(d["size"]),  # noqa: E731
                                     media_type=d.get("mediaType", ""))
        rec = ModelRecord(reference=model.reference, digest=model.digest, verified=True,
                          media_type=manifest.media_type, size=len(manifest.data), config=blob(config),
                          layers=tuple(blob(l) for l in doc.get("layers", ())))
    except (KeyError, TypeError, ValueError) as exc:
        raise LockError(f"model manifest {manifest.digest} is malformed ({type(exc).__name__}: {exc})",
                        hint="the model was pushed with a broken manifest") from None
    for b in rec.blobs:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", b.digest) or b.size < 0:
            raise LockError(f"model manifest {manifest.digest} names a bad blob {b.digest!r}",
                            hint="only sha256 blobs can be placed into Ollama's blobs/sha256-<hex>")
    return rec


def resolve_model(client: RegistryClient, model: Model) -> ModelRecord:
    """Fetch one model pin: the manifest and its config, both re-hashed by the client.

    Layers (the weights, GiB) are not downloaded here; their digests and
    sizes come from the verified manifest, and ``release`` hashes every byte.
    """
    manifest = client.fetch_manifest(model.name, model.digest)
    rec = model_record(model, manifest)
    client.fetch_blob(model.name, rec.config.digest)
    return rec


def _resolve_service(client: RegistryClient, bp: Blueprint, platforms: tuple[str, ...],
                     pool: ThreadPoolExecutor | None) -> ImageRecord:
    """The service's image closure and, when it has ``[[models]]``, theirs."""
    rec = resolve_image(client, bp.image, platforms, pool)
    models = []
    for i, model in enumerate(bp.models):
        try:
            models.append(resolve_model(client, model))
        except LabbuildError as exc:
            raise ModelLockError(i, exc) from None
    return dataclasses.replace(rec, models=tuple(models))


def resolve_services(lab: Lab, names: list[str], client: RegistryClient,
                     max_workers: int = 32) -> dict[str, ImageRecord]:
    """Resolve ``names`` concurrently; raise one LockError listing every failure.

    The error's ``services`` maps each failed service to its message.
    """
    records: dict[str, ImageRecord] = {}
    problems: list[Problem] = []
    failed: dict[str, str] = {}
    if not names:
        return records
    with ThreadPoolExecutor(max_workers=min(max_workers, len(names)), thread_name_prefix="lock") as pool, \
         ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="lock-platform") as children:
        futures = {n: pool.submit(_resolve_service, client, lab.services[n], lab.platforms, children)
                   for n in names}
        for name, fut in futures.items():
            try:
                records[name] = fut.result()
            except LabbuildError as exc:
                where = ("models", exc.index, "digest") if isinstance(exc, ModelLockError) else ("image", "digest")
                problems.append(service_problem(lab.root, lab.services[name], exc, where))
                failed[name] = exc.message
    if problems:
        raise LockError(f"{len(problems)} of {len(names)} service(s) could not be resolved; "
                        "the lockfile was not changed", problems=problems,
                        hint="fix each line above (or run `labbuild lock --offline` to record pins unverified)",
                        services={n: failed[n] for n in sorted(failed)})
    return records


def service_problem(root: Path, bp: Blueprint, exc: LabbuildError, where: tuple = ("image", "digest")) -> Problem:
    """A failure of one service (``exc``'s message and hint), pointing at the blueprint line
    ``where`` (e.g. ``[image].digest``)."""
    try:
        line = locate_lines((Path(root) / bp.path).read_text("utf-8")).get(where)
    except OSError:
        line = None
    return Problem(file=bp.path, path=".".join(str(p) for p in where), line=line,
                   message=f"service {bp.name!r}: {exc.message}", hint=exc.hint)


def resolve_pin_updates(lab: Lab, services: list[str] | tuple[str, ...], client: RegistryClient,
                        progress: Callable[[str], None] = lambda _: None,
                        tags: dict[str, str] | None = None) -> list[PinUpdate]:
    """The pins of ``services`` (all when empty) whose tag now points elsewhere:
    each service's ``[image]`` and every one of its ``[[models]]``. ``tags`` moves
    images to other tags (``{service: tag}``, from ``--to``/``--latest``).

    Tags are resolved concurrently (HEAD, then GET); any failure raises one
    LockError naming every pin that failed.
    """
    tags = tags or {}
    unknown = [s for s in services if s not in lab.services]
    if unknown:
        raise LockError(f"--update: unknown service(s) {', '.join(unknown)}",
                        hint="known services: " + ", ".join(sorted(lab.services)))
    names = sorted(services or lab.services)
    if not names:
        return []
    # (service, None) is the image; (service, i) the i-th model
    pins: list[tuple[str, int | None, str, str, str]] = []
    for n in names:
        bp = lab.services[n]
        pins.append((n, None, bp.image.name, tags.get(n, bp.image.tag), bp.image.digest))
        pins += [(n, i, m.name, m.tag, m.digest) for i, m in enumerate(bp.models)]
    progress(f"resolving the tags of {len(names)} service(s)"
             + (f" and {len(pins) - len(names)} model(s)" if len(pins) > len(names) else ""))
    problems: list[Problem] = []
    digests: dict[tuple[str, int | None], str] = {}
    with ThreadPoolExecutor(max_workers=min(32, len(pins)), thread_name_prefix="update") as pool:
        futures = {(n, i): pool.submit(client.resolve_tag, name, tag) for n, i, name, tag, _ in pins}
        for (n, i), fut in futures.items():
            try:
                digests[(n, i)] = fut.result()
            except RegistryError as exc:
                where = ("image", "tag") if i is None else ("models", i, "tag")
                problems.append(service_problem(lab.root, lab.services[n], exc, where))
    if problems:
        raise LockError(f"could not resolve {len(problems)} tag(s); no file was changed",
                        problems=problems, hint="fix each line above")
    moved = {n: t for n, t in tags.items() if t != lab.services[n].image.tag}
    return [PinUpdate(service=n, reference=f"{name}:{tag}", old=old, new=digests[(n, i)], model=i)
            if i is not None or n not in moved else
            PinUpdate(service=n, reference=lab.services[n].image.reference, old=old, new=digests[(n, i)], tag=tag)
            for n, i, name, tag, old in pins if digests[(n, i)] != old or (i is None and n in moved)]
