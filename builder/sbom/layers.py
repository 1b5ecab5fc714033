"""The merged view of an image's layers, reduced to the small metadata files an SBOM reads.

An OCI image is an ordered list of layer tarballs (gzip or plain), lowest
first. Each layer changes the filesystem of those below it:

- a file or link at a path replaces what lower layers had there, and hides
  everything they had *under* that path; a directory merges with theirs;
- ``D/.wh.NAME`` deletes ``D/NAME`` (and all below it) from lower layers;
- ``D/.wh..wh..opq`` (opaque directory) hides everything lower layers had
  under ``D``; entries of the same layer stay.

``read_layers`` streams each layer once, front to back, never holding one in
memory: gzip is inflated a window at a time, only the files a ``wanted``
predicate selects are read, up to byte caps per file, per layer and for the
image's merged files (``MAX_SBOM_METADATA_BYTES``, ``MAX_SBOM_LAYER_BYTES``,
``MAX_SBOM_IMAGE_BYTES``); a file over one is skipped with a warning (at most
``MAX_SBOM_WARNINGS`` are listed, the rest counted). A layer tarball that
cannot be read is a BundleError. Whiteouts and replacements are applied to
what lower layers contributed once a layer has been read completely, so their
order inside a tarball does not matter; finding what they hide takes time
linear in the paths' lengths. A ``ChainMemo`` shared by the images of a
release reads a common base (the same bottom layers) once. The result names,
for every wanted file that survives, its content and the digest of the layer
it came from.
"""

from __future__ import annotations

import io
import posixpath
import re
import tarfile
import threading
import zlib
from bisect import bisect_left
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from ..errors import BundleError
from ..fsutil import FileRange
from ..limits import (MAX_SBOM_IMAGE_BYTES, MAX_SBOM_LAYER_BYTES, MAX_SBOM_METADATA_BYTES, MAX_SBOM_TAR_HEADER_BYTES,
                      MAX_SBOM_WARNINGS)

try:  # ISA-L inflates gzip 1.5-3x faster than zlib; same API, same checks (CRC32, size)
    from isal.isal_zlib import decompressobj as _decompressobj
    from isal.isal_zlib import error as _InflateError
except ImportError:  # pragma: no cover - isal is a dependency, but a wheel may be missing for a platform
    from zlib import decompressobj as _decompressobj
    from zlib import error as _InflateError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1 << 20                 # compressed bytes read at a time
_WINDOW = 1 << 20                # uncompressed bytes inflated at a time (gzip inflates up to 1032:1)
_TAR_HEADER = 512                # what a tracked file costs besides its path and bytes (its tar header)
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                     tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_GZIP_WBITS = zlib.MAX_WBITS | 16
_PAX_RECORD_LENGTH = re.compile(rb"([0-9]{1,20}) ")
_DIGIT_RUN = re.compile(rb"[0-9]{65}")


@dataclass(frozen=True)
class Layer:
    """One layer blob: its digest (``sha256:<hex>``) and where its bytes are."""

    digest: str
    path: Path
    offset: int = 0              # where the blob starts in ``path`` (a bundle archive being written)
    size: int | None = None      # its length there; None: the whole file


@dataclass(frozen=True)
class LayerFile:
    """A wanted file of the merged filesystem."""

    path: str          # normalised: relative, no leading "./" or "/"
    data: bytes
    layer: str         # digest of the layer that last wrote it


@dataclass
class MergedFiles:
    """What ``read_layers`` found: wanted files by path, plus warnings (skipped files and
    packages; the first ``MAX_SBOM_WARNINGS``, the others counted in ``unlisted``)."""

    files: dict[str, LayerFile] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unlisted: int = 0

    def warn(self, text: str) -> None:
        if len(self.warnings) < MAX_SBOM_WARNINGS:
            self.warnings.append(text)
        else:
            self.unlisted += 1

    def copy(self) -> MergedFiles:
        return MergedFiles(dict(self.files), list(self.warnings), self.unlisted)


def normalise(name: str) -> str:
    """A tar member name as a relative POSIX path ("./usr/x/" -> "usr/x")."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


@dataclass
class _LayerChanges:
    """What one layer does to the layers below it, gathered while it streams.

    Only a change that hides one of the lower layers' wanted files is kept (a
    layer may hold a million entries; we track a few thousand files). What lies
    under a directory ``d`` is found by bisecting the lower paths in sorted
    order, where it sits between ``d/`` and ``d0`` ('0' follows '/'): time
    linear in a path's length, where listing every ancestor of every path costs
    the square of a deep path's length.
    """

    lower: list[str]                                   # the lower layers' wanted paths, sorted
    added: dict[str, LayerFile] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)      # whiteouts and non-directories: the path and all below it
    opaque: set[str] = field(default_factory=set)      # directories whose lower contents vanish

    def _below(self, path: str) -> tuple[int, int]:
        """The span of ``lower`` strictly under directory ``path``."""
        if not path:
            return 0, len(self.lower)
        return bisect_left(self.lower, path + "/"), bisect_left(self.lower, path + "0")

    def _at(self, path: str) -> bool:
        i = bisect_left(self.lower, path)
        return i < len(self.lower) and self.lower[i] == path

    def hide(self, path: str) -> None:
        """A whiteout or a non-directory at ``path``: what lower layers had there and below is gone."""
        start, end = self._below(path)
        if start < end or self._at(path):
            self.hidden.add(path)

    def make_opaque(self, directory: str) -> None:
        start, end = self._below(directory)
        if start < end:
            self.opaque.add(directory)

    def apply_to(self, lower: dict[str, LayerFile]) -> None:
        for path in self.hidden:
            lower.pop(path, None)
        done = 0     # the spans in order, each lower path visited once however they nest
        for start, end in sorted(self._below(d) for d in self.hidden | self.opaque):
            for path in self.lower[max(start, done):end]:
                lower.pop(path, None)
            done = max(done, end)
        lower.update(self.added)


class _GzipForwardReader(io.RawIOBase):
    """A gzip stream's uncompressed bytes, readable and seekable *forward* only.

    What ``tarfile`` needs in its seeking mode ("r:"): skipping a member's
    data becomes decompress-and-drop in large chunks, several times faster
    than tarfile's own stream mode ("r|gz"), which reads in small pieces.
    Multi-member gzip files are followed; the gzip trailer (CRC32, size) of
    each member is checked by the inflater; a truncated stream raises ``EOFError``.
    At most ``_WINDOW`` bytes are inflated at once, so a small layer of zeros
    (gzip inflates up to 1032:1) never lands in memory whole.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = _decompressobj(_GZIP_WBITS)
        self._pending = b""    # compressed bytes read but not inflated yet
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
            if not self._pending:
                self._pending = self._raw.read(_CHUNK)
                if not self._pending:
                    if not self._inflate.eof:
                        raise EOFError("gzip stream ends early")
                    self._done = True
                    break
            if self._inflate.eof:      # the next gzip member
                self._inflate = _decompressobj(_GZIP_WBITS)
            self._buf = self._inflate.decompress(self._pending, _WINDOW)
            self._pending = self._inflate.unconsumed_tail + self._inflate.unused_data
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


# What reading a hostile tarball may raise, besides tarfile's own errors: tarfile lets through
# ValueError (bad numbers in sparse maps) and RecursionError (a long chain of extended headers).
_UNREADABLE = (tarfile.TarError, EOFError, OSError, _InflateError, ValueError, RecursionError)


def _pax_problem(records: bytes) -> str | None:
    """Why a pax header is not what POSIX frames ("LENGTH KEYWORD=VALUE\\n" records, LENGTH
    counting the whole record, then NUL padding) or holds a run of over 64 digits, else None.
    tarfile before Python 3.11.10 parses either in quadratic time (CVE-2024-6232: 64 KiB of
    "2 2 2 ..." cost 2.6 s and 1 GB; 16 KiB of digits 0.4 s), checked here in linear time."""
    pos = 0
    while pos < len(records) and records[pos]:
        length = _PAX_RECORD_LENGTH.match(records, pos)
        end = pos + int(length[1]) if length else 0
        if not (length and end <= len(records) and records[end - 1] == 0x0A
                and records.find(b"=", length.end() + 1, end) > 0):
            return f"a pax header record at byte {pos} is not LENGTH KEYWORD=VALUE"
        pos = end
    return "a pax header holds a run of over 64 digits" if _DIGIT_RUN.search(records) else None


class _Replay:
    """A file object with ``head`` put back in front of it (what tarfile reads after a header
    was read and checked here): read, tell and seek as tarfile uses them."""

    def __init__(self, head: bytes, raw) -> None:
        self._head, self._raw = head, raw

    def read(self, n: int) -> bytes:
        out, self._head = self._head[:n], self._head[n:]
        return out + self._raw.read(n - len(out)) if len(out) < n else out

    def tell(self) -> int:
        return self._raw.tell() - len(self._head)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        self._head = b""
        return self._raw.seek(pos, whence)


class _LayerTarInfo(tarfile.TarInfo):
    """tarfile's member headers, bounded. The extended headers (pax, GNU long names) in front of
    one member may hold ``MAX_SBOM_TAR_HEADER_BYTES`` together, and global pax headers as much
    for the whole layer: tarfile reads each whole (an 8 GiB pax header inflates from 8 MiB of
    gzip) and follows a chain of them recursively. A pax header is checked before tarfile parses
    it (``_pax_problem``). GNU sparse maps of format 1.0 (tarfile reads them in quadratic time;
    no image layer holds a sparse file) are refused."""

    def _proc_member(self, tar):
        if self.type not in _EXTENDED_HEADERS:
            return super()._proc_member(tar)
        held = getattr(tar, "_sbom_header_bytes", 0)
        if held + self.size > MAX_SBOM_TAR_HEADER_BYTES:
            raise tarfile.SubsequentHeaderError(f"extended headers of over {MAX_SBOM_TAR_HEADER_BYTES} bytes")
        tar._sbom_header_bytes = held + self.size
        try:
            return super()._proc_member(tar)
        finally:
            if self.type != tarfile.XGLTYPE:     # a global header's records stay for the rest of the layer
                tar._sbom_header_bytes = held

    def _proc_pax(self, tar):
        head = tar.fileobj.read(self._block(self.size))
        problem = _pax_problem(head[:self.size])
        if problem:
            raise tarfile.SubsequentHeaderError(problem)
        raw, tar.fileobj = tar.fileobj, _Replay(head, tar.fileobj)
        try:
            return super()._proc_pax(tar)
        finally:
            tar.fileobj = raw

    def _proc_gnusparse_10(self, next, pax_headers, tar):
        raise tarfile.SubsequentHeaderError("a GNU sparse file (format 1.0)")


def _open_tar(fh: BinaryIO, layer: Layer) -> tarfile.TarFile:
    head = fh.read(4)
    fh.seek(0)
    if head == b"\x28\xb5\x2f\xfd":
        raise BundleError(f"layer {layer.digest}: zstd-compressed layers are not supported for SBOMs yet",
                          hint="the image's layers must be gzip or plain tar")
    source = _GzipForwardReader(fh) if head[:2] == b"\x1f\x8b" else fh   # plain tar: real seeks skip data
    try:
        return tarfile.open(fileobj=source, mode="r:", tarinfo=_LayerTarInfo)
    except _UNREADABLE as exc:
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


def _cost(path: str, size: int) -> int:
    """What a wanted file counts against the byte caps: its content, its path and a tar header."""
    return size + len(path) + _TAR_HEADER


def _scan_layer(layer: Layer, wanted: Callable[[str], bool], merged: MergedFiles) -> _LayerChanges:
    changes = _LayerChanges(lower=sorted(merged.files))
    held = sum(_cost(f.path, len(f.data)) for f in merged.files.values())    # by the lower layers
    read = 0                                                                  # from this layer

    def fits(path: str, size: int) -> bool:
        """Whether a wanted file of ``size`` bytes is read (and counted); if not, a warning says why."""
        nonlocal read
        cost = _cost(path, size)
        if size > MAX_SBOM_METADATA_BYTES:
            over = f"over the {MAX_SBOM_METADATA_BYTES}-byte cap"
        elif read + cost > MAX_SBOM_LAYER_BYTES:
            over = f"past the {MAX_SBOM_LAYER_BYTES}-byte cap per layer"
        elif held + read + cost > MAX_SBOM_IMAGE_BYTES:
            over = f"past the {MAX_SBOM_IMAGE_BYTES}-byte cap per image"
        else:
            read += cost
            return True
        merged.warn(f"layer {layer.digest}: {path} is {size} bytes, {over}: skipped")
        return False

    try:
        fh = (open(layer.path, "rb") if layer.size is None
              else io.BufferedReader(FileRange(layer.path, layer.offset, layer.size), 1 << 20))
    except OSError as exc:
        raise BundleError(f"layer {layer.digest}: cannot read {layer.path}: {exc.strerror}") from None
    with fh, _open_tar(fh, layer) as tar:
        try:
            for member in _members(tar):
                path = normalise(member.name)
                base = posixpath.basename(path)
                parent = posixpath.dirname(path)
                if base == OPAQUE_MARKER:
                    changes.make_opaque(parent)
                elif base.startswith(WHITEOUT_PREFIX):
                    changes.hide(posixpath.join(parent, base[len(WHITEOUT_PREFIX):]))
                elif not path:
                    continue
                else:
                    if not member.isdir():
                        changes.hide(path)
                    changes.added.pop(path, None)
                    if not wanted(path):
                        continue
                    if member.islnk():   # a hard link to a file this layer holds: same content
                        target = changes.added.get(normalise(member.linkname))
                        if target is not None and fits(path, len(target.data)):
                            changes.added[path] = LayerFile(path=path, data=target.data, layer=layer.digest)
                    elif member.isfile() and fits(path, member.size):
                        data = tar.extractfile(member).read()
                        changes.added[path] = LayerFile(path=path, data=data, layer=layer.digest)
        except _UNREADABLE as exc:
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
            merged = future.result().copy()
            continue
        try:
            _scan_layer(layer, wanted, merged).apply_to(merged.files)
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
            raise
        if future is not None:
            future.set_result(merged.copy())
    return merged
