"""Small filesystem helpers every writer uses: atomic writes and canonical JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, BinaryIO


def canonical_json(data: Any) -> str:
    """Sorted keys, 2-space indent, trailing newline: the on-disk JSON of labbuild."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block succeeds.

    The temp file lives in the same directory (so the rename is atomic), is
    fsynced before the rename, and is removed when the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


WRITEBACK_EVERY = 32 << 20


class WriteBehind:
    """``write`` to ``fh``, asking the kernel to start writing out each ``every`` bytes
    (``posix_fadvise(DONTNEED)`` starts writeback of dirty pages without waiting for
    it): the disk works while a big file streams in, so the final fsync has little
    left, and the written file does not push other data out of the page cache.
    ``fh`` may be seeked between writes (positions come from ``fh.tell()``)."""

    def __init__(self, fh: BinaryIO, every: int = WRITEBACK_EVERY) -> None:
        self.fh, self.every = fh, every
        try:
            self.fd: int | None = fh.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None      # not a file (BytesIO): nothing to start
        self._kicked = fh.tell() if self.fd is not None else 0

    def write(self, data: bytes) -> int:
        n = self.fh.write(data)
        if self.fd is not None:
            at = self.fh.tell()
            if at - self._kicked >= self.every or at < self._kicked:
                self.fh.flush()
                lo = min(at, self._kicked)
                os.posix_fadvise(self.fd, lo, abs(at - self._kicked), os.POSIX_FADV_DONTNEED)
                self._kicked = at
        return n

    def flush(self) -> None:
        self.fh.flush()


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_writer(path, mode) as fh:
        fh.write(data)


class CapExceeded(ValueError):
    """A file is larger than labbuild will read (see ``builder.limits``), or not a regular file."""


def read_capped(path: str | os.PathLike, cap: int) -> bytes:
    """The bytes of regular file ``path``; CapExceeded when it is larger than ``cap``
    bytes or not a regular file (a device such as /dev/zero never ends)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CapExceeded(f"{path} is not a regular file")
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise CapExceeded(f"{path} is larger than {cap} bytes, the limit for this kind of file")
    return data


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
