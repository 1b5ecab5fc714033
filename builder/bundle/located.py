"""Where verified blobs already lie on disk: inside image bundles this labbuild wrote, or
verified in a directory the maintainer named (``reuse``: ``release --reuse-from DIR``).

The blob cache keeps no second copy of a layer: a cold image release writes
each blob once, straight into its bundle (``bundle.direct``), and then notes
here where each blob lies: digest -> (bundle file, offset, size), in
``$XDG_CACHE_HOME/labbuild/bundles.json``. A warm release copies those ranges
into its own archive in the kernel (``os.copy_file_range``). The bundle's SBOM
documents are noted too, by what they were made from (``sboms.document_key``):
a release of the same images at the same epoch takes them instead of reading
every layer again.

Trust: the blobs were hashed when the bundle was written, and a bundle is
trusted again only while its file is provably the same one: same device,
inode, size, mtime and ctime (nanoseconds). Any write to the file, a
``touch``, a chmod or a rename over it changes one of them (ctime cannot be
set back from user space), so a bundle changed or replaced after it was noted
is not trusted and its blobs are downloaded again; a bundle that vanished is
forgotten. Re-hashing an unchanged source would cost a full sha256 of every
byte (0.7 CPU-s per GiB here) for no gain, and turn a kernel copy into a read
through user space.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..blobcache import default_cache_root
from ..fsutil import atomic_write, canonical_json

INDEX_VERSION = 1


@dataclass(frozen=True)
class Located:
    """One verified blob inside a bundle file: where, and the file's stamp when it was verified."""

    path: Path
    offset: int
    size: int
    stamp: tuple[int, ...]


def index_path() -> Path:
    return default_cache_root().parent / "bundles.json"


def stamp_of(st: os.stat_result) -> tuple[int, ...]:
    """What identifies an unchanged file: device, inode, size, mtime and ctime in nanoseconds."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}       # missing or damaged: an index is only ever a shortcut
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("bundles"), dict):
        return {}
    return data["bundles"]


def _current(path: str) -> tuple[int, ...] | None:
    try:
        return stamp_of(os.stat(path))
    except OSError:
        return None


def locate(digests: Iterable[str], kind: str = "blobs") -> dict[str, Located]:
    """The blobs among ``digests`` found in a noted bundle that is still unchanged; with
    ``kind="documents"``, the SBOM documents by their ``sboms.document_key``."""
    wanted = set(digests)
    found: dict[str, Located] = {}
    for path, entry in sorted(_load(index_path()).items()):
        try:
            stamp = tuple(int(x) for x in entry["stamp"])
            blobs = {d: (int(o), int(s)) for d, (o, s) in entry.get(kind, {}).items() if d in wanted and d not in found}
        except (KeyError, TypeError, ValueError):
            continue
        if blobs and _current(path) == stamp:
            for digest, (offset, size) in blobs.items():
                found[digest] = Located(Path(path), offset, size, stamp)
    return found


def noted(bundle: Path) -> bool:
    """Whether ``bundle`` is in the index and unchanged since it was noted."""
    path = str(bundle.resolve())
    entry = _load(index_path()).get(path)
    return isinstance(entry, dict) and _current(path) is not None and list(_current(path)) == entry.get("stamp")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    path = index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remember(bundle: Path, blobs: Mapping[str, tuple[int, int]],
             documents: Mapping[str, tuple[int, int]] | None = None, *, stamp: tuple[int, ...] | None = None) -> None:
    """Note that ``bundle`` (just written and verified) holds ``blobs`` (digest -> (offset, size))
    and SBOM ``documents`` (key -> (offset, size)); forget bundles that changed or vanished. A
    failure here only costs a later download (or SBOM). ``stamp``: the file's when it was
    verified (default: now); a file changed since is never trusted by it."""
    with contextlib.suppress(OSError), _locked():
        path = index_path()
        bundles = {p: e for p, e in _load(path).items()
                   if isinstance(e, dict) and _current(p) is not None
                   and list(_current(p)) == e.get("stamp") and p != str(bundle.resolve())}
        if blobs:
            bundles[str(bundle.resolve())] = {"stamp": list(stamp or stamp_of(os.stat(bundle))),
                                              "blobs": {d: [o, s] for d, (o, s) in sorted(blobs.items())},
                                              "documents": {k: [o, s] for k, (o, s) in sorted((documents or {}).items())}}
        atomic_write(path, canonical_json({"version": INDEX_VERSION, "bundles": bundles}))
