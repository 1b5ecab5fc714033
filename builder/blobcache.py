"""A content-addressed blob cache: ``$XDG_CACHE_HOME/labbuild/blobs/sha256/<hex>``.

Image bundles are built from here. A blob enters the cache only through
``BlobCache.fetch`` (or ``put``), which streams the bytes into a ``.partial``
file while hashing them, and renames the file into place only when the bytes
hash to the digest and have the expected size. A blob that does not match is
discarded and fetched again (never kept). An interrupted download leaves its
``.partial`` file behind; the next fetch re-hashes what is there and asks the
registry for the rest (HTTP Range), so a multi-GiB pull resumes instead of
restarting.

Concurrency: one ``flock`` per digest, so threads and processes that want the
same blob wait for one download instead of racing. Cached blobs are made
read-only; ``link`` puts one somewhere else by reflink or hard link when the
filesystem allows, else by copy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator

from .errors import RegistryError

DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")

# opener(offset) opens the blob from byte ``offset`` and yields byte chunks; the
# iterable may say ``range_honoured = False`` when it restarts at byte 0.
Opener = Callable[[int], ContextManager[Iterable[bytes]]]


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/labbuild/blobs`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labbuild" / "blobs"


def hex_of(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; ValueError for anything else."""
    m = DIGEST_RE.match(digest)
    if not m:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return m.group(1)


class BlobCache:
    """Blobs by digest on local disk, verified on the way in."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.blobs = self.root / "sha256"
        self.partials = self.root / "partial"

    # ------------------------------------------------------------------ reading

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it is there yet)."""
        return self.blobs / hex_of(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        """True when the blob is cached (and has ``size`` bytes, when given)."""
        try:
            st = self.path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    # ------------------------------------------------------------------ writing

    def put(self, digest: str, data: bytes) -> Path:
        """Store bytes already in memory (manifests); RegistryError when they do not hash to ``digest``."""
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise RegistryError(f"content for {digest} hashes to {got}",
                                hint="the registry sent wrong bytes; try again or check the registry")
        if self.has(digest, len(data)):
            return self.path(digest)
        with self._locked(digest):
            if not self.has(digest, len(data)):
                partial = self._partial(digest)
                with open(partial, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                self._commit(partial, digest)
        return self.path(digest)

    def fetch(self, digest: str, size: int | None, opener: Opener, *, retries: int = 3,
              on_bytes: Callable[[int], None] | None = None, what: str = "", sync: bool = True,
              tail: "Tail | None" = None) -> tuple[Path, int]:
        """Make sure ``digest`` is cached, downloading it with ``opener`` when not.

        ``opener(offset)`` must yield the blob's bytes from ``offset`` on.
        ``on_bytes(n)`` is called for every chunk received (progress).
        Returns ``(path, downloaded_bytes)``; 0 downloaded means a cache hit.
        A download whose bytes do not match is discarded and retried up to
        ``retries`` times, then RegistryError.

        ``sync=False`` skips the fsync (a cold image release writes each blob
        twice, into the cache and into the archive; only the archive must be
        durable before the release ends): the blob is marked unsynced with
        this boot's id, and ``settle`` makes it durable (or re-verifies it,
        after a restart) before anyone trusts it again.

        ``tail``: told where each attempt writes and how far (``Tail.begin``,
        ``Tail.grew``), so a reader can follow the bytes as they arrive; the
        caller says ``Tail.end`` or ``Tail.fail`` when this returns or raises.
        """
        if self.has(digest, size):
            return self.path(digest), 0
        name = what or digest
        with self._locked(digest):
            if self.has(digest, size):  # another thread or process finished it meanwhile
                return self.path(digest), 0
            downloaded = 0
            problem = ""
            for _attempt in range(retries + 1):
                partial = self._partial(digest)
                h = hashlib.sha256()
                offset = 0
                if partial.exists():  # resume: re-hash what an earlier run already got
                    with open(partial, "rb") as fh:
                        while block := fh.read(1 << 20):
                            h.update(block)
                            offset += len(block)
                    if size is not None and offset > size:
                        if tail is not None:
                            tail.discard()
                        partial.unlink()
                        h, offset = hashlib.sha256(), 0
                total = offset
                try:
                    with open(partial, "ab") as out, opener(offset) as chunks:
                        if offset and not getattr(chunks, "range_honoured", True):
                            # the server ignored the Range: the body starts at byte 0
                            if tail is not None:
                                tail.discard()
                            out.truncate(0)
                            out.seek(0)
                            h, total = hashlib.sha256(), 0
                        if tail is not None:
                            tail.begin(partial, total)
                        for chunk in chunks:
                            out.write(chunk)
                            h.update(chunk)
                            total += len(chunk)
                            downloaded += len(chunk)
                            if tail is not None:
                                out.flush()
                                tail.grew(total)
                            if on_bytes:
                                on_bytes(len(chunk))
                            if size is not None and total > size:
                                break
                        out.flush()
                        if sync:
                            os.fsync(out.fileno())
                except RegistryError as exc:
                    # keep the partial file: the next attempt (or run) resumes it
                    problem = exc.message
                    continue
                got = "sha256:" + h.hexdigest()
                if got == digest and (size is None or total == size):
                    if not sync:   # the marker is journaled before the rename: a surviving name has its marker
                        self._unsynced(digest).parent.mkdir(parents=True, exist_ok=True)
                        self._unsynced(digest).write_text(_boot_id())
                    self._commit(partial, digest)
                    return self.path(digest), downloaded
                problem = (f"got {total} bytes hashing to {got}" if size is None or total <= size
                           else f"got more than the expected {size} bytes")
                if tail is not None:
                    tail.discard()                # before the file goes: no reader opens its successor early
                partial.unlink(missing_ok=True)  # wrong bytes are never kept
            raise RegistryError(f"{name}: could not download {digest} intact after {retries + 1} attempts: {problem}",
                                hint="the registry or the network corrupts data; check the registry and try again")

    def settle(self, digest: str) -> None:
        """Make a blob fetched with ``sync=False`` trustworthy before it is used again.

        Written during this boot: its bytes are in the page cache or on disk,
        an fsync makes them durable. Written before a restart: they may never
        have reached the disk, so the blob is re-hashed and dropped when wrong
        (``has`` is then False and the caller fetches it again).
        """
        marker = self._unsynced(digest)
        if not marker.exists():
            return
        with self._locked(digest):
            try:
                boot = marker.read_text()
            except FileNotFoundError:
                return
            path = self.path(digest)
            with contextlib.suppress(FileNotFoundError):
                if boot and boot == _boot_id():
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                else:
                    h = hashlib.sha256()
                    with open(path, "rb") as fh:
                        while block := fh.read(1 << 20):
                            h.update(block)
                    if "sha256:" + h.hexdigest() != digest:
                        path.unlink()
            marker.unlink(missing_ok=True)

    # ------------------------------------------------------------------ placing

    def link(self, digest: str, dest: str | os.PathLike) -> str:
        """Put blob ``digest`` at ``dest`` without copying where possible.

        Tries a reflink (copy-on-write clone), then a hard link, then a copy.
        Returns "reflink", "hardlink" or "copy".
        """
        return link_or_copy(self.path(digest), Path(dest))

    # ------------------------------------------------------------------ internals

    def _unsynced(self, digest: str) -> Path:
        return self.root / "unsynced" / hex_of(digest)

    def _partial(self, digest: str) -> Path:
        self.partials.mkdir(parents=True, exist_ok=True)
        return self.partials / f"{hex_of(digest)}.partial"

    def _commit(self, partial: Path, digest: str) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        os.chmod(partial, 0o444)
        os.replace(partial, self.path(digest))

    @contextlib.contextmanager
    def _locked(self, digest: str) -> Iterator[None]:
        self.partials.mkdir(parents=True, exist_ok=True)
        lock_path = self.partials / f"{hex_of(digest)}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # the lock file stays: unlinking it would race with waiters


class Restarted(Exception):
    """A followed download started over (its bytes were wrong, or the server ignored a
    Range): what the reader got so far is void; its next read starts at byte 0 again."""


class Tail:
    """A blob as ``BlobCache.fetch`` downloads it, for readers that follow its bytes as they
    arrive (a release packs a layer into its archive while the layer is still coming in).

    The fetch says ``begin(path, valid)`` at each attempt (a resumed partial file
    starts with ``valid`` good bytes), ``grew(total)`` once each chunk is in the
    file, and ``discard()`` before it cuts or deletes bytes that hashed wrong; its
    caller says ``end(path)`` when the blob is verified and cached, or ``fail(exc)``.
    A reader (``open()``) blocks until bytes are there. Bytes it read are only
    trusted once ``end`` is said: when an attempt keeps fewer bytes than a reader
    has read, that reader raises ``Restarted`` once and starts over.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._attempt = 0
        self._path: Path | None = None
        self._valid = 0          # bytes of the current attempt's file kept from before it began
        self._written = 0
        self._done = False
        self._error: BaseException | None = None

    def begin(self, path: Path, valid: int) -> None:
        with self._cond:
            self._attempt += 1
            self._path, self._valid, self._written = path, valid, valid
            self._cond.notify_all()

    def discard(self) -> None:
        """The bytes so far are void (their file is about to be cut or deleted): readers that read
        any start over; none opens a file until the next ``begin`` names one."""
        with self._cond:
            self._attempt += 1
            self._path, self._valid, self._written = None, 0, 0
            self._cond.notify_all()

    def grew(self, total: int) -> None:
        with self._cond:
            self._written = total
            self._cond.notify_all()

    def end(self, path: Path) -> None:
        with self._cond:
            if self._path is None:          # cached before this fetch began (another process): read it whole
                self._attempt += 1
                self._valid, self._written = 0, path.stat().st_size
            # else the last attempt's partial file, renamed to ``path``: open readers keep reading it
            self._path, self._done = path, True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def open(self) -> "TailReader":
        return TailReader(self)


class TailReader:
    """A file-like reader of a ``Tail`` (``read``, context manager); see ``Tail``."""

    def __init__(self, tail: Tail) -> None:
        self._tail = tail
        self._attempt = 0
        self._fd: int | None = None
        self.pos = 0

    def __enter__(self) -> "TailReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, n: int = -1) -> bytes:
        t = self._tail
        with t._cond:
            while True:
                if t._error is not None:
                    raise t._error
                if t._attempt != self._attempt:
                    if self.pos > t._valid:      # what this reader got is void
                        self.close()
                        self.pos, self._attempt = 0, -1
                        raise Restarted(f"{t._path or 'a blob'}: the download started over")
                    if t._path is None:          # discarded; the next attempt has not begun
                        t._cond.wait()
                        continue
                    try:
                        fd = os.open(t._path, os.O_RDONLY)
                    except FileNotFoundError:   # renamed into the cache a moment ago: ``end`` names it
                        t._cond.wait(0.05)
                        continue
                    self.close()
                    self._fd, self._attempt = fd, t._attempt
                if t._written > self.pos or t._done:
                    break
                t._cond.wait()
            avail = t._written - self.pos
        if avail <= 0:
            return b""
        data = os.pread(self._fd, avail if n < 0 else min(n, avail), self.pos)
        if not data:
            raise OSError(f"{t._path}: {avail} more bytes were announced but are not in the file")
        self.pos += len(data)
        return data


def _boot_id() -> str:
    """This boot's id (Linux), "" elsewhere: an unsynced blob from another boot is re-hashed."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _reflink(src: Path, dst: Path) -> bool:
    FICLONE = 0x40049409  # linux/fs.h; btrfs, xfs (reflink=1), bcachefs, overlay on those
    try:
        with open(src, "rb") as s, open(dst, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        return True
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        return False


def link_or_copy(src: Path, dst: Path) -> str:
    """Place ``src`` at ``dst`` by reflink, hard link or copy (in that order of preference)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    if _reflink(src, dst):
        return "reflink"
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    shutil.copyfile(src, dst)
    return "copy"
