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
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

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
    order: int = 0               # members sort by (order, arcname): 0 metadata first, 1 big blobs last
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


def _dirs_of(names: Iterable[str]) -> set[str]:
    dirs: set[str] = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def write_tar(out: BinaryIO, top: str, files: Iterable[BundleFile], *, mtime: int | None = None,
              progress: Callable[[int], None] | None = None) -> str:
    """Write a reproducible tar of ``files`` under directory ``top`` to ``out``.

    Returns the sha256 (hex) of the uncompressed tar stream. ``progress`` is
    called with the byte count of each file written.
    """
    mtime = source_date_epoch() if mtime is None else mtime
    files = list(files)
    names = [f.arcname for f in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate bundle members: {', '.join(dup)}")
    hashing = HashingWriter(out)
    entries: list[tuple[tuple, str, BundleFile | None]] = []
    for d in _dirs_of(names):
        order = min(f.order for f in files if f.arcname.startswith(d + "/"))
        entries.append(((order, d.encode()), d, None))
    for f in files:
        entries.append(((f.order, f.arcname.encode()), f.arcname, f))
    entries.sort(key=lambda e: e[0])
    # 1 MiB copies and stream buffer: fewer, larger writes (the bytes are the same: records stay 10 KiB)
    with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT, bufsize=COPY_BLOCK,
                      copybufsize=COPY_BLOCK) as tar:
        top_info = _info(top, mtime, directory=True)
        tar.addfile(top_info)
        for _, name, f in entries:
            if f is None:
                tar.addfile(_info(f"{top}/{name}", mtime, directory=True))
                continue
            info = _info(f"{top}/{name}", mtime, executable=f.executable)
            info.size = f.size
            with f.open() as fh:
                tar.addfile(info, fh)
            if progress:
                progress(info.size)
    hashing.flush()
    return hashing.hash.hexdigest()


def _info(name: str, mtime: int, *, directory: bool = False, executable: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if executable else 0o644
    return info


def gzip_writer(out: BinaryIO, level: int = 6) -> gzip.GzipFile:
    """A gzip stream with a reproducible header: no file name, mtime 0."""
    return gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level)
