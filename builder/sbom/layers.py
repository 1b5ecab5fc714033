"""The merged view of an image's layers, reduced to the small metadata files an SBOM reads.

An OCI image is an ordered list of layer tarballs (gzip or plain), lowest
first. Each layer changes the filesystem of those below it:

- a file or link at a path replaces what lower layers had there, and hides
  everything they had *under* that path; a directory merges with theirs;
- ``D/.wh.NAME`` deletes ``D/NAME`` (and all below it) from lower layers;
- ``D/.wh..wh..opq`` (opaque directory) hides everything lower layers had
  under ``D``; entries of the same layer stay.

``read_layers`` streams each layer once, front to back, never holding one in
memory: only the files a ``wanted`` predicate selects are read, each up to a
size cap (``MAX_SBOM_METADATA_BYTES``); a bigger one is skipped with a warning.
Whiteouts and replacements are applied to what lower layers contributed once
a layer has been read completely, so their order inside a tarball does not
matter. A ``ChainMemo`` shared by the images of a release reads a common
base (the same bottom layers) once. The result names, for every wanted file that survives, its content
and the digest of the layer it came from.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import threading
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from ..errors import BundleError
from ..limits import MAX_SBOM_METADATA_BYTES

try:  # ISA-L inflates gzip 1.5-3x faster than zlib; same API, same checks (CRC32, size)
    from isal.isal_zlib import decompressobj as _decompressobj
    from isal.isal_zlib import error as _InflateError
except ImportError:  # pragma: no cover - isal is a dependency, but a wheel may be missing for a platform
    from zlib import decompressobj as _decompressobj
    from zlib import error as _InflateError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1 << 20                 # compressed bytes read at a time
_GZIP_WBITS = zlib.MAX_WBITS | 16


@dataclass(frozen=True)
class Layer:
    """One layer blob: its digest (``sha256:<hex>``) and where its bytes are."""

    digest: str
    path: Path


@dataclass(frozen=True)
class LayerFile:
    """A wanted file of the merged filesystem."""

    path: str          # normalised: relative, no leading "./" or "/"
    data: bytes
    layer: str         # digest of the layer that last wrote it


@dataclass
class MergedFiles:
    """What ``read_layers`` found: wanted files by path, plus warnings (skipped files)."""

    files: dict[str, LayerFile] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def normalise(name: str) -> str:
    """A tar member name as a relative POSIX path ("./usr/x/" -> "usr/x")."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def _ancestors(path: str) -> Iterator[str]:
    """The directories above ``path``, nearest first, ending with "" (the root)."""
    while path:
        path = posixpath.dirname(path)
        yield path


@dataclass
class _LayerChanges:
    """What one layer does to the layers below it, gathered while it streams.

    ``watched`` holds the lower layers' wanted paths and all their ancestors:
    a replacement elsewhere cannot hide anything we track, so it is not kept
    (a layer may hold a million files; we track a few thousand).
    """

    watched: set[str]
    added: dict[str, LayerFile] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)     # whiteouts: the path and all below it
    opaque: set[str] = field(default_factory=set)      # directories whose lower contents vanish
    replaced: set[str] = field(default_factory=set)    # non-directories: hide what was below them

    def replace(self, path: str) -> None:
        if path in self.watched:
            self.replaced.add(path)

    def hides(self, path: str) -> bool:
        above = list(_ancestors(path))
        return (path in self.deleted or path in self.replaced
                or any(d in self.deleted or d in self.replaced or d in self.opaque for d in above))

    def apply_to(self, lower: dict[str, LayerFile]) -> None:
        for path in [p for p in lower if self.hides(p)]:
            del lower[path]
        lower.update(self.added)


class _GzipForwardReader(io.RawIOBase):
    """A gzip stream's uncompressed bytes, readable and seekable *forward* only.

    What ``tarfile`` needs in its seeking mode ("r:"): skipping a member's
    data becomes decompress-and-drop in large chunks, several times faster
    than tarfile's own stream mode ("r|gz"), which reads in small pieces.
    Multi-member gzip files are followed; the gzip trailer (CRC32, size) of
    each member is checked by the inflater; a truncated stream raises ``EOFError``.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = _decompressobj(_GZIP_WBITS)
        self._buf = b""        # the current window of uncompressed bytes
        self._off = 0          # read position inside the window
        self._base = 0         # uncompressed offset of the window's first byte
        self._done = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _next_window(self) -> bool:
        self._base += len(self._buf)
        self._buf, self._off = b"", 0
        while not self._buf and not self._done:
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if not self._inflate.eof:
                    raise EOFError("gzip stream ends early")
                self._done = True
                break
            out = [self._inflate.decompress(chunk)]
            while self._inflate.eof and self._inflate.unused_data:   # the next gzip member
                rest = self._inflate.unused_data
                self._inflate = _decompressobj(_GZIP_WBITS)
                out.append(self._inflate.decompress(rest))
            self._buf = b"".join(out)
        return bool(self._buf)

    def tell(self) -> int:
        return self._base + self._off

    def read(self, n: int = -1) -> bytes:
        parts = []
        while n != 0:
            if self._off == len(self._buf) and not self._next_window():
                break
            take = len(self._buf) - self._off if n < 0 else min(n, len(self._buf) - self._off)
            parts.append(self._buf[self._off:self._off + take])
            self._off += take
            n -= take if n > 0 else 0
        return b"".join(parts)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            pos += self.tell()
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the end of a gzip stream")
        if pos < self._base:
            raise io.UnsupportedOperation("backward seek in a gzip stream")
        while pos > self._base + len(self._buf) and self._next_window():
            pass
        self._off = min(pos - self._base, len(self._buf))
        return self.tell()


def _open_tar(fh: BinaryIO, layer: Layer) -> tarfile.TarFile:
    head = fh.read(4)
    fh.seek(0)
    if head == b"\x28\xb5\x2f\xfd":
        raise BundleError(f"layer {layer.digest}: zstd-compressed layers are not supported for SBOMs yet",
                          hint="the image's layers must be gzip or plain tar")
    source = _GzipForwardReader(fh) if head[:2] == b"\x1f\x8b" else fh   # plain tar: real seeks skip data
    try:
        return tarfile.open(fileobj=source, mode="r:")
    except (tarfile.TarError, EOFError, OSError, _InflateError) as exc:
        raise BundleError(f"layer {layer.digest}: not a tar archive ({exc})") from None


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members in order, without keeping them: tarfile lists every member it has read,
    which for a layer of a million files would hold them all in memory."""
    member = tar.firstmember
    tar.firstmember = None
    while member is not None:
        tar.members.clear()
        yield member
        member = tar.next()


def _scan_layer(layer: Layer, wanted: Callable[[str], bool], lower: dict[str, LayerFile],
                warnings: list[str]) -> _LayerChanges:
    changes = _LayerChanges(watched={a for p in lower for a in (p, *_ancestors(p))})
    try:
        fh = open(layer.path, "rb")
    except OSError as exc:
        raise BundleError(f"layer {layer.digest}: cannot read {layer.path}: {exc.strerror}") from None
    with fh, _open_tar(fh, layer) as tar:
        try:
            for member in _members(tar):
                path = normalise(member.name)
                base = posixpath.basename(path)
                parent = posixpath.dirname(path)
                if base == OPAQUE_MARKER:
                    changes.opaque.add(parent)
                elif base.startswith(WHITEOUT_PREFIX):
                    changes.deleted.add(posixpath.join(parent, base[len(WHITEOUT_PREFIX):]))
                elif not path:
                    continue
                else:
                    if not member.isdir():
                        changes.replace(path)
                    changes.added.pop(path, None)
                    if not wanted(path):
                        continue
                    if member.islnk():   # a hard link to a file this layer holds: same content
                        target = changes.added.get(normalise(member.linkname))
                        if target is not None:
                            changes.added[path] = LayerFile(path=path, data=target.data, layer=layer.digest)
                    elif member.isfile() and member.size > MAX_SBOM_METADATA_BYTES:
                        warnings.append(f"layer {layer.digest}: {path} is {member.size} bytes, "
                                        f"over the {MAX_SBOM_METADATA_BYTES}-byte cap: skipped")
                    elif member.isfile():
                        data = tar.extractfile(member).read()
                        changes.added[path] = LayerFile(path=path, data=data, layer=layer.digest)
        except (tarfile.TarError, EOFError, OSError, _InflateError) as exc:
            raise BundleError(f"layer {layer.digest}: corrupt or truncated tar ({exc})") from None
    return changes


class ChainMemo:
    """The merged files after each chain of bottom layers, shared between the images of one
    release (and their threads): images on the same base read its layers once. A chain is
    claimed by the first reader; the others wait for its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chains: dict[tuple[str, ...], Future] = {}

    def claim(self, chain: tuple[str, ...]) -> tuple[Future, bool]:
        """The chain's future, and whether the caller must compute it."""
        with self._lock:
            future = self._chains.get(chain)
            if future is None:
                future = self._chains[chain] = Future()
                return future, True
            return future, False


def read_layers(layers: Iterable[Layer], wanted: Callable[[str], bool],
                memo: ChainMemo | None = None) -> MergedFiles:
    """The wanted files of the image made of ``layers`` (lowest first), with whiteouts applied.
    ``memo``: reuse (and share) what other images with the same bottom layers found."""
    merged = MergedFiles()
    chain: tuple[str, ...] = ()
    for layer in layers:
        chain += (layer.digest,)
        future, mine = memo.claim(chain) if memo is not None else (None, True)
        if not mine:
            files, warnings = future.result()
            merged = MergedFiles(files=dict(files), warnings=list(warnings))
            continue
        try:
            _scan_layer(layer, wanted, merged.files, merged.warnings).apply_to(merged.files)
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
            raise
        if future is not None:
            future.set_result((dict(merged.files), tuple(merged.warnings)))
    return merged
