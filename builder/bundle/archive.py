"""Reproducible tar archives: the byte-level recipe every bundle uses.

Members are built from scratch (never ``gettarinfo``), so nothing of the
build host leaks in: byte-order sorted names, regular files and directories
only, uid/gid 0, empty owner names, modes 0644/0755, one integer mtime
(``SOURCE_DATE_EPOCH`` or a constant), PAX format, and a gzip header with no
name and mtime 0. Files come from memory or are streamed from disk, so an
image bundle of many GiB never sits in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from ..blobcache import Restarted
from ..format.tar import DIRECTORY, END, padding, tar_header
from ..fsutil import sha256_bytes, sha256_file

COPY_BLOCK = 1 << 20
DEFAULT_MTIME = 315532800  # 1980-01-01T00:00:00Z: a constant, and valid in zip-era tools too


def source_date_epoch() -> int:
    """The archive mtime: SOURCE_DATE_EPOCH when set to an integer, else a constant."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else DEFAULT_MTIME


@dataclass(frozen=True)
class BundleFile:
    """One member of a bundle: bytes in memory, or a file on disk streamed in."""

    arcname: str                 # relative to the bundle's top directory, "/"-separated
    data: bytes | None = None
    source: Path | None = None
    executable: bool = False
    order: int = 0               # members sort by (order, arcname): image blobs (fetch.BLOB_ORDER = -1) lead
    sha256_hint: str | None = None  # hex digest already known (content-addressed blobs), skips re-hashing

    def __post_init__(self) -> None:
        if (self.data is None) == (self.source is None):
            raise ValueError(f"{self.arcname}: give exactly one of data or source")

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else open(self.source, "rb")

    def sha256(self) -> str:
        if self.sha256_hint is not None:
            return self.sha256_hint
        if self.data is not None:
            return sha256_bytes(self.data)
        return sha256_file(self.source)


class HashingWriter:
    """A write-only file object that hashes what passes through to ``inner``."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


class _BackgroundWriter:
    """Writes to ``inner`` from a thread, so hashing a block (caller) and writing the
    previous one overlap; at most ``depth`` blocks wait. ``close`` drains, joins and
    re-raises the first write error; a failed write also fails the next ``write``;
    ``rewind`` drains and cuts ``inner`` back to an offset (it must seek and truncate)."""

    _END = object()

    def __init__(self, inner: BinaryIO, depth: int = 8) -> None:
        self.inner = inner
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="labbuild-archive-writer")
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not self._END:
            if self._error is None:
                try:
                    self.inner.write(item)
                except BaseException as exc:  # handed to the caller
                    self._error = exc
            self._queue.task_done()

    def write(self, data: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(data)
        return len(data)

    def flush(self) -> None:
        pass

    def rewind(self, offset: int) -> None:
        self._queue.join()
        if self._error is not None:
            raise self._error
        self.inner.flush()
        self.inner.seek(offset)
        self.inner.truncate()

    def close(self) -> None:
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.inner.flush()


def _dirs_of(names: Iterable[str]) -> set[str]:
    dirs: set[str] = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


Entry = tuple[tuple[int, bytes], str, "BundleFile | None"]   # (sort key, name, file; None = a directory)


def archive_entries(files: list[BundleFile]) -> list[Entry]:
    """Every entry under the top directory in archive order: by ``(order, name bytes)``; a
    directory sorts with the smallest order of the files under it."""
    names = [f.arcname for f in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate bundle members: {', '.join(dup)}")
    entries: list[Entry] = []
    for d in _dirs_of(names):
        order = min(f.order for f in files if f.arcname.startswith(d + "/"))
        entries.append(((order, d.encode()), d, None))
    for f in files:
        entries.append(((f.order, f.arcname.encode()), f.arcname, f))
    entries.sort(key=lambda e: e[0])
    return entries


class TarStream:
    """The byte recipe of a bundle's tar, written entry by entry into ``out`` and hashed.

    The bytes of tarfile's "w|" PAX stream (headers from TarInfo.tobuf, data padded
    to 512, two zero blocks, then zeros up to a 10 KiB record), written directly:
    tarfile's stream buffer re-copies every block and cost a third of a 1 GiB image
    release. Writes go through a background thread, so hashing a block and writing
    the previous one overlap. ``write_tar`` writes all entries at once; a cold image
    release writes its blobs in place first (``bundle.direct``) and then the rest with
    ``after=`` — the same headers and calls, so the same bytes.

    A member still downloading is read as it arrives (``fetch.PendingBlob``); if its
    download starts over (``blobcache.Restarted``), its data is written again from
    the entry's start: the file is cut back there and the hash restored (``out``
    must then seek and truncate, as a file does).
    """

    def __init__(self, out: BinaryIO, top: str, mtime: int, *, after: "tuple[int, Any] | None" = None) -> None:
        """``after=(offset, sha256 object)``: the archive's first ``offset`` bytes are already
        written (and hashed into the given object, ``bundle.direct``); ``out`` is positioned there."""
        self.top, self.mtime = top, mtime
        self._writer = _BackgroundWriter(out)
        self.hashing = HashingWriter(self._writer)
        if after is not None:
            self.offset, self.hashing.hash = after
        else:
            self.offset = _put(self.hashing, tar_header(top, kind=DIRECTORY, mtime=mtime))

    def add(self, entries: Iterable[Entry], progress: Callable[[int], None] | None = None,
            placed: Callable[["BundleFile", int], None] | None = None) -> None:
        """Write ``entries``; ``placed(file, offset)`` is told where each file's data begins."""
        for _, name, f in entries:
            if f is None:
                self.offset += _put(self.hashing, tar_header(f"{self.top}/{name}", kind=DIRECTORY, mtime=self.mtime))
                continue
            size = f.size
            self.offset += _put(self.hashing, tar_header(f"{self.top}/{name}", size, mtime=self.mtime,
                                                         mode=0o755 if f.executable else 0o644))
            if placed:
                placed(f, self.offset)
            start = self.hashing.hash.copy()
            with f.open() as fh:
                left = size
                while True:
                    try:   # at the end, one more read: a followed download is only final when it ends
                        block = fh.read(min(COPY_BLOCK, left) if left else 1)
                    except Restarted:       # the download started over: so does this entry's data
                        self._writer.rewind(self.offset)
                        self.hashing.hash, left = start.copy(), size
                        continue
                    if not left:
                        if block:
                            raise OSError(f"{f.arcname}: file grew while being archived")
                        break
                    if not block:
                        raise OSError(f"{f.arcname}: file shrank while being archived")
                    self.hashing.write(block)
                    left -= len(block)
            self.offset += size + _put(self.hashing, padding(size))
            if progress:
                progress(size)

    def finish(self) -> str:
        """The trailer; returns the sha256 (hex) of the whole tar stream."""
        self.offset += _put(self.hashing, END)
        _put(self.hashing, tarfile.NUL * (-self.offset % tarfile.RECORDSIZE))
        self.hashing.flush()
        self.close()
        return self.hashing.hash.hexdigest()

    def close(self) -> None:
        """Drain and stop the writer thread (re-raises its first error)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def write_tar(out: BinaryIO, top: str, files: Iterable[BundleFile], *, mtime: int | None = None,
              progress: Callable[[int], None] | None = None) -> str:
    """Write a reproducible tar of ``files`` under directory ``top`` to ``out``.

    Returns the sha256 (hex) of the uncompressed tar stream. ``progress`` is
    called with the byte count of each file written.
    """
    mtime = source_date_epoch() if mtime is None else mtime
    entries = archive_entries(list(files))
    stream = TarStream(out, top, mtime)
    try:
        stream.add(entries, progress)
        return stream.finish()
    finally:
        stream.close()


def _put(out: "HashingWriter", data: bytes) -> int:
    if data:
        out.write(data)
    return len(data)


def gzip_writer(out: BinaryIO, level: int = 6) -> gzip.GzipFile:
    """A gzip stream with a reproducible header: no file name, mtime 0."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level)
