"""Images in a bundle (build side): fetch the locked closure into ``images/``.

``release --with-images`` calls ``image_files``, which fetches every blob of
every locked image for the chosen platforms straight from the registries
(through the blob cache, concurrently, with progress), checks each manifest
against the lock, and returns the members of ``images/``:

    images/oci-layout                 {"imageLayoutVersion": "1.0.0"}
    images/index.json                 one descriptor per image (the pinned manifest or
                                      index), annotated with its name:tag
    images/manifest.json              docker-load manifest (Config, RepoTags, Layers) for
                                      the first platform of the bundle
    images/docker-load/<os>_<arch>[_<variant>].json
                                      the same for each platform (install picks the host's)
    images/blobs/sha256/<hex>         every manifest, config and layer blob, once

Blobs sort first (``BLOB_ORDER``, with their digest as ``sha256_hint`` so the
archive writer never re-hashes them), every other file after them: a cold
release writes the blobs into its archive as they arrive, before the SBOMs
and the manifest that lists them exist.

The file names come from ``builder.format.files``; the install side reads
them back in ``builder.install.unpack``.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import progress as shared_progress
from ..blobcache import BlobCache, Tail, hex_of
from ..errors import BundleError
from ..format.files import IMAGES_DIR
from ..fsutil import FileRange
from ..lockfile import Lock
from ..registry import RegistryClient
from .archive import COPY_BLOCK, BundleFile
from .imageplan import PlannedImage, _blob_path, _blobs_of, layout_metadata, manifests_to_fetch, plan_images
from .located import Located, locate, stamp_of

# blobs lead an image bundle: written before the files that describe them (SBOMs, manifest.json, ...)
BLOB_ORDER = -1
# concurrent blob downloads: one per CPU, at least 4 (each request first waits out the network's
# latency: through a 50 ms-per-request proxy, 4 took 8.2 s where 2 took 9.9, and no longer locally), at most 8
FETCH_WORKERS = int(os.environ.get("LABBUILD_FETCH_WORKERS", "0") or 0) or min(8, max(4, os.cpu_count() or 2))


# --------------------------------------------------------------------------- fetching (network)

@dataclass(frozen=True)
class PendingBlob(BundleFile):
    """A blob still downloading into the cache: ``size`` is known from the lock,
    ``ready`` is done when the bytes are cached and verified (or holds the
    download's error). ``open`` follows the download (``blobcache.Tail``): the
    archive writer packs the bytes as they arrive, and its reads raise
    ``blobcache.Restarted`` if the download has to start over."""

    ready: Future | None = field(default=None, compare=False, repr=False)
    known_size: int = 0
    tail: Tail | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        return self.known_size

    def open(self):
        if self.tail is not None:
            return self.tail.open()
        if self.ready is not None:
            self.ready.result()
        return super().open()


@dataclass(eq=False)
class Slot:
    """Where a ``DirectBlob`` lies in the archive being written, and when its bytes are there."""

    future: Future = field(default_factory=Future)
    path: Path | None = None
    offset: int = 0


@dataclass(frozen=True)
class DirectBlob(PendingBlob):
    """A blob written straight into its place in the archive (``bundle.direct``): copied from a verified
    local file (``local``: (path, offset); ``stamp``: ``located.stamp_of`` it, None for the blob cache)
    or downloaded from ``repo``. Once ``ready``, ``open`` reads it where ``slot`` says."""

    digest: str = ""
    repo: str = ""
    local: tuple[Path, int] | None = None
    stamp: tuple[int, ...] | None = None
    slot: Slot = field(default_factory=Slot, compare=False, repr=False)
    manifest: bool = False      # fetched through the manifests API (``RegistryClient.fetch_manifest``)
    check: Callable[[bytes], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        pass    # neither data nor source: the bytes go into the archive

    def open(self):
        self.ready.result()
        reader = FileRange(self.slot.path, self.slot.offset, self.known_size)
        if self.stamp is not None and self.local == (self.slot.path, self.slot.offset) \
                and stamp_of(os.fstat(reader.fileno())) != self.stamp:
            reader.close()
            raise BundleError(f"{self.slot.path} changed while this release read {self.digest} from it",
                              hint="run the release again (it downloads the blob)")
        return io.BufferedReader(reader, COPY_BLOCK)


def direct_member(arcname: str, digest: str, size: int | None, repo: str, cache: BlobCache,
                  located: dict[str, Located], *, manifest: bool = False,
                  check: Callable[[bytes], None] | None = None) -> DirectBlob:
    """A blob to write in place: from a noted bundle, the blob cache or the registry (``manifest``:
    through the manifests API); ``check``: what its bytes must pass once in place."""
    local, stamp = None, None
    if digest in located and (size is None or located[digest].size == size):
        where = located[digest]
        local, stamp, size = (where.path, where.offset), where.stamp, where.size
    else:
        cache.settle(digest)
        if cache.has(digest, size):
            local, size = (cache.path(digest), 0), cache.path(digest).stat().st_size
    if size is None:
        raise BundleError(f"{digest}: its size is not in the lock", hint="run `labbuild lock` again")
    slot = Slot()
    return DirectBlob(arcname, order=BLOB_ORDER, sha256_hint=hex_of(digest), ready=slot.future, known_size=size,
                      digest=digest, repo=repo, local=local, stamp=stamp, slot=slot, manifest=manifest, check=check)


def wait_for_downloads(files: Iterable[BundleFile]) -> None:
    """Block until every ``PendingBlob`` among ``files`` is cached (raise its error if any)."""
    for f in files:
        if isinstance(f, PendingBlob) and f.ready is not None:
            f.ready.result()


def image_files(lab, lock: Lock, services: Iterable[str], platforms: Iterable[str] | None = None,
                progress: Any = None, *, cache: BlobCache | None = None,
                exclude: frozenset[str] = frozenset(), direct: bool = False) -> list[BundleFile]:
    """Fetch the locked images of ``services`` and return the ``images/`` members of a bundle.

    ``platforms``: which platforms to ship (default: the lab's). ``progress``:
    None = bars when stderr is a TTY, False = quiet, True = bars (still only
    on a TTY). Blobs come from the cache when there, else from the registries
    with ``RegistryClient``; nothing is shipped that did not hash right.

    Manifests and configs are fetched (and checked against the lock) before
    this returns; layers missing from the cache start downloading first, as
    the lock names them by digest, and keep downloading in the background (in archive order,
    ``FETCH_WORKERS`` at a time) and come back as ``PendingBlob`` members:
    blobs lead an image bundle (``BLOB_ORDER``), so the release's archive
    writer packs blob N while blobs N+1.. download, and makes each image's
    SBOM as soon as its layers are in (``sboms.sbom_members``). The archive
    writer follows each layer's download (``PendingBlob.open``), so the
    archive is written, and written back to disk, at the pace of the network.
    A failed download fails the member's reads and so the release (atomically).

    ``direct``: nothing is downloaded here (with a lock that gives every size); every blob,
    manifests and configs too, comes back as a ``DirectBlob`` for ``bundle.direct`` to write
    straight into the archive, the layers starting at once (``_direct_files``).

    ``exclude``: blob digests neither downloaded nor shipped (a delta bundle's
    relied-on blobs, ``builder.bundle.delta``); manifests are still fetched
    and checked against the lock.
    """
    platforms = list(platforms or lab.platforms)
    plans = plan_images(lock, services, platforms)
    cache = cache or BlobCache()
    blobs = {d: v for d, v in _blobs_of(plans).items() if d not in exclude}
    show = progress if isinstance(progress, bool) or progress is None else True
    if direct:
        return _direct_files(lab, plans, platforms, cache, blobs, exclude, show)
    client = RegistryClient(insecure_registries=tuple(lab.insecure_registries))
    users = _Users(client.close, 2)     # the layer downloads and this function: the last one closes it
    try:
        configs = {d: v for d, v in blobs.items() if _is_config(plans, d)}
        layers, located = _not_in_bundles(cache, {d: v for d, v in blobs.items() if d not in configs})
        # the lock names every layer by digest (each is checked as it arrives): they download
        # while the manifests are fetched and checked against the lock, and the configs come in
        pending, tails = _download(client, cache, layers, show, background=True, what="layers", done=users.done)
        manifests = _fetch_manifests(client, cache, plans)
        _download(client, cache, configs, show, background=False, what="image configs")
    except BaseException:
        client.close()
        raise
    users.done()
    files: list[BundleFile] = [BundleFile(f"{IMAGES_DIR}/{name}", data=data)
                               for name, data in layout_metadata(plans, platforms).items()]
    for digest in sorted(set(blobs) | (set(manifests) - exclude)):
        files.append(blob_member(f"{IMAGES_DIR}/{_blob_path(digest)}", digest, cache, pending, blobs, tails,
                                 located))
    return files


def _not_in_bundles(cache: BlobCache, blobs: dict[str, tuple[int | None, str]]):
    """``(blobs to download into the cache, the places of those in unchanged noted bundles)``."""
    located = {d: w for d, w in locate(d for d, (size, _) in blobs.items() if not cache.has(d, size)).items()
               if blobs[d][0] in (None, w.size)}
    return {d: v for d, v in blobs.items() if d not in located}, located


def _direct_files(lab, plans: list[PlannedImage], platforms: list[str], cache: BlobCache,
                  blobs: dict[str, tuple[int | None, str]], exclude: frozenset[str], show) -> list[BundleFile]:
    """The members of ``images/`` with every blob a ``DirectBlob``. The lock gives every blob's size,
    so nothing is fetched here: manifests and configs download into the archive with the layers
    (manifests through the manifests API, each held to the lock once in place). A lock without
    manifest or config sizes (written by an older labbuild) has them fetched into the cache first."""
    manifests = manifests_to_fetch(plans)
    if any(m.size is None for m in manifests.values()) or any(v[0] is None for v in blobs.values()):
        with RegistryClient(insecure_registries=tuple(lab.insecure_registries)) as client:
            _fetch_manifests(client, cache, plans)
            _download(client, cache, {d: v for d, v in blobs.items() if _is_config(plans, d)}, show,
                      background=False, what="image configs")
    digests = sorted(set(blobs) | (set(manifests) - exclude))
    located = locate(digests)
    files: list[BundleFile] = [BundleFile(f"{IMAGES_DIR}/{name}", data=data)
                               for name, data in layout_metadata(plans, platforms).items()]
    for d in digests:
        m = manifests.get(d)
        size, repo = (m.size, m.name) if m else blobs[d]
        small = m is not None or _is_config(plans, d)
        files.append(direct_member(f"{IMAGES_DIR}/{_blob_path(d)}", d, size, repo, cache, located,
                                   manifest=m is not None,
                                   check=partial(_cached, cache, d, m.check if m else None) if small else None))
    return files


def _cached(cache: BlobCache, digest: str, check: Callable[[bytes], None] | None, data: bytes) -> None:
    """A manifest (held to the lock by ``check``) or config in place: kept in the blob cache too, so
    a rebuild of the release needs no network for it (its layers are found in the bundle)."""
    if check is not None:
        check(data)
    cache.put(digest, data)


def blob_member(arcname: str, digest: str, cache: BlobCache, pending: dict[str, Future],
                blobs: dict[str, tuple[int | None, str]], tails: dict[str, Tail] | None = None,
                located: dict[str, Located] | None = None) -> BundleFile:
    """The bundle member of a cached blob: a ``PendingBlob`` while it still downloads; a
    ``DirectBlob`` read where it lies when in a noted bundle (``located``)."""
    if located and digest in located:
        where = located[digest]
        slot = Slot(path=where.path, offset=where.offset)
        slot.future.set_result(where.path)
        return DirectBlob(arcname, order=BLOB_ORDER, sha256_hint=hex_of(digest), ready=slot.future,
                          known_size=where.size, digest=digest, local=(where.path, where.offset),
                          stamp=where.stamp, slot=slot)
    source = cache.path(digest)
    if digest in pending:
        return PendingBlob(arcname, source=source, order=BLOB_ORDER, sha256_hint=hex_of(digest),
                           ready=pending[digest], known_size=blobs[digest][0], tail=(tails or {}).get(digest))
    return BundleFile(arcname, source=source, order=BLOB_ORDER, sha256_hint=hex_of(digest))


def fetch_to_cache(lab, lock: Lock, services: Iterable[str], platforms: Iterable[str], progress: Any = None, *,
                   cache: BlobCache | None = None) -> list[PlannedImage]:
    """Fetch every manifest, config and layer of the locked images into the blob cache (and wait);
    return the plans. For what reads the layers without shipping them (``release --sbom``)."""
    plans = plan_images(lock, services, list(platforms))
    cache = cache or BlobCache()
    show = progress if isinstance(progress, bool) or progress is None else True
    with RegistryClient(insecure_registries=tuple(lab.insecure_registries)) as client:
        _fetch_manifests(client, cache, plans)
        _download(client, cache, _blobs_of(plans), show, background=False, what="image blobs")
    return plans


class _Users:
    """Calls ``close`` once ``count`` users have said ``done``."""

    def __init__(self, close: Callable[[], None], count: int) -> None:
        self._close, self._left, self._lock = close, count, threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._close()


def _is_config(plans: list[PlannedImage], digest: str) -> bool:
    return any(rec.config == digest for plan in plans for rec in plan.platforms.values())


def _download(client, cache: BlobCache, blobs: dict[str, tuple[int | None, str]], show: bool | None, *,
              background: bool, what: str = "blobs",
              done: Callable[[], None] | None = None) -> tuple[dict[str, Future], dict[str, Tail]]:
    """Fetch the blobs missing from the cache, ``FETCH_WORKERS`` at a time, in digest (= archive) order.

    Returns a future and a ``Tail`` (to follow the bytes as they arrive) per
    blob. In the background the workers are daemon threads (an aborted release
    does not wait for them; a half-fetched blob resumes next time) and
    ``done`` (default: closing ``client``) is called when the last one ends;
    else this waits and raises the first error.
    """
    done = done or client.close
    for d in blobs:
        cache.settle(d)     # a blob an earlier release cached without fsync: durable (or re-checked) first
    missing = sorted(d for d, (size, _) in blobs.items() if not cache.has(d, size))   # archive order
    if not missing:
        if background:
            done()
        return {}, {}
    futures = {d: Future() for d in missing}
    tails = {d: Tail() for d in missing}
    jobs: "queue.Queue[str]" = queue.Queue()
    for d in missing:
        jobs.put(d)
    bars = shared_progress.acquire(show)
    task = bars.add_task(f"downloading {len(missing)} {what}",
                         total=sum(blobs[d][0] or 0 for d in missing) or None)
    left = [len(missing)]
    left_lock = threading.Lock()

    def finished() -> None:
        with left_lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            shared_progress.release()
            if background:
                done()

    def worker() -> None:
        while True:
            try:
                digest = jobs.get_nowait()
            except queue.Empty:
                return
            size, name = blobs[digest]
            future, tail = futures[digest], tails[digest]
            try:
                # background layers go into the archive, which is fsynced: the cache copy need not be
                cache.fetch(digest, size, lambda offset: client.open_blob(name, digest, offset=offset),
                            on_bytes=lambda n: bars.advance(task, n), what=name, sync=not background, tail=tail)
                tail.end(cache.path(digest))
                future.set_result(cache.path(digest))
            except BaseException as exc:  # delivered to whoever opens or follows the blob
                tail.fail(exc)
                future.set_exception(exc)
            finally:
                finished()

    for _ in range(min(FETCH_WORKERS, len(missing))):
        threading.Thread(target=worker, daemon=True, name="labbuild-fetch").start()
    if not background:
        for d in missing:
            futures[d].result()
    return futures, tails


def _fetch_manifests(client, cache: BlobCache, plans: list[PlannedImage]) -> set[str]:
    """Fetch (or reuse) every pinned manifest/index and platform manifest; check them against the lock."""
    wanted = manifests_to_fetch(plans)
    for digest, m in wanted.items():
        if not cache.has(digest):
            cache.put(digest, client.fetch_manifest(m.name, digest).data)  # re-hashes: a registry never gets trusted
        m.check(cache.read(digest))
    return set(wanted)
