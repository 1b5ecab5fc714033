"""Image bundles written in place: every blob goes once, straight to its final offset.

An image bundle is an uncompressed tar (``pack.BundlePlan.compressed`` is False
with images) whose blobs lead (``fetch.BLOB_ORDER``), sorted by name. A member's
header depends only on its name, size, mode and the archive mtime, and the
lock gives every blob's size, so the offset of every blob is known before its
first byte arrives. ``DirectArchive`` lays the head out (directory headers,
blob headers, zero padding: ``ftruncate`` makes the file that long, sparse),
then ``FETCH_WORKERS`` threads fill it with ``pwrite``, taking the blobs in
archive order (so the committer below hashes right behind them; taking the
biggest first left it the whole prefix to hash after the last copy): a blob is
downloaded into its place and hashed as it streams (a manifest through the
manifests API, then held to the lock where it lies), or copied in the kernel
(``os.copy_file_range``) from a verified bundle (``located``) or the blob
cache. A blob whose bytes hash wrong is written again over the same range,
so a byte flipped on the wire never reaches the bundle. Once the plan is
complete (SBOMs read the layers where they lie), ``finish`` writes the rest
with the same ``archive.TarStream`` calls as a one-pass write, so the bundle is
byte for byte what ``write_archive`` makes.

Resume: beside the archive, ``.<name>.partial``, is ``.<name>.journal``: a
first line naming the layout (top, mtime, every blob's name, size and digest)
and one line ``<hex> <offset> <size>`` per blob whose bytes are written and
verified. A worker takes its next blob only once its last one is in the
journal, so a release killed at any moment and run again re-downloads at most
the blobs that were in flight. The journal is a claim, not a proof: journaled
blobs are hashed again from the disk before they are kept (cheap next to a
download), so it needs no fdatasync of its own — after a power cut, a blob
whose bytes never reached the disk is simply fetched again. A journal of
another layout starts the archive afresh.

The record's sha256 is of the whole file. A side thread (the committer) hashes
the archive in order as it fills: headers and padding from memory, blob bytes
read back from the page cache (``preadv`` into one buffer; not an ``mmap``, whose
pages past a truncation by someone else are SIGBUS: 0.06 CPU-s/GiB more) as soon
as a worker says they are written, from the blob's start again if its download
starts over. So the hash is done when the last byte lands; the cost is one more
sha256 of every byte besides the blob's own digest check, on another thread.
Every ``SYNC_EVERY`` hashed bytes a side thread fdatasyncs the file
(``fsutil.Syncer``), so the final fsync has little left.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import queue
import threading
from concurrent.futures import InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import progress as shared_progress
from ..blobcache import hex_of
from ..errors import BundleError, RegistryError
from ..format.tar import DIRECTORY, padding, tar_header
from ..fsutil import SYNC_EVERY, Syncer, WriteBehind, drop_cached
from ..registry import RegistryClient
from .archive import COPY_BLOCK, BundleFile, TarStream, archive_entries
from .fetch import FETCH_WORKERS, DirectBlob
from .located import remember, stamp_of

JOURNAL_FORMAT = "labbuild-direct-archive 1"
RETRIES = 3
HASH_STEP = 32 << 20        # the committer hashes at most this much before it looks at the journal again
TELL_EVERY = 4 << 20        # a download tells the committer (and the bar) how far it is this often


class _Stopped(Exception):
    """The archive was aborted: the committer ends."""


@dataclass(frozen=True)
class Region:
    """One entry of the head: its header at ``offset``, then ``blob``'s bytes (None: a directory)."""

    offset: int
    header: bytes
    blob: DirectBlob | None

    @property
    def data(self) -> int:
        return self.offset + len(self.header)

    @property
    def end(self) -> int:
        size = self.blob.known_size if self.blob is not None else 0
        return self.data + size + len(padding(size))


def layout(top: str, mtime: int, entries) -> tuple[bytes, list[Region]]:
    """The top directory's header and each head entry's region, exactly as ``TarStream`` writes them."""
    first = tar_header(top, kind=DIRECTORY, mtime=mtime)
    offset, regions = len(first), []
    for _, name, f in entries:
        if f is None:
            header = tar_header(f"{top}/{name}", kind=DIRECTORY, mtime=mtime)
        elif isinstance(f, DirectBlob):
            header = tar_header(f"{top}/{name}", f.known_size, mtime=mtime, mode=0o755 if f.executable else 0o644)
        else:
            raise BundleError(f"internal error: {name} is not a blob written in place", hint="report it")
        regions.append(Region(offset, header, f))
        offset = regions[-1].end
    return first, regions


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class DirectArchive:
    """The head of an image bundle's archive, filled in place while the rest of the plan is made
    (see the module docstring). ``finish(plan)`` writes the rest, fsyncs and renames; ``abort``
    stops the workers and keeps the partial archive and its journal for the next run."""

    def __init__(self, dest: Path, top: str, filename: str, blobs: list[BundleFile], *, mtime: int,
                 progress: Any = None, insecure_registries: tuple[str, ...] = ()) -> None:
        self.dest, self.top, self.mtime = dest, top, mtime
        self.tmp = dest.parent / f".{dest.name}.partial"
        self.journal = dest.parent / f".{dest.name}.journal"
        self.head = archive_entries(blobs)
        self.first, self.regions = layout(top, mtime, self.head)
        self.end = self.regions[-1].end if self.regions else len(self.first)
        self.blobs = [r for r in self.regions if r.blob is not None]
        self.resumed: set[str] = set()      # digests taken from the journal (re-hashed, not downloaded)
        self._cond = threading.Condition()
        self._verified: list[Region] = []   # waiting for the journal
        self._journaled: set[str] = set()
        self._error: BaseException | None = None
        self._stop = False
        self._hash = hashlib.sha256()
        self._progress: dict[str, tuple[int, int]] = {}     # digest -> (attempt, bytes written)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise BundleError(f"{dest.name} is being written by another labbuild process",
                              hint="wait for it to finish") from None
        try:
            self._lay_out()
        except BaseException:
            os.close(self.fd)
            raise
        for r in self.blobs:
            r.blob.slot.path, r.blob.slot.offset = self.tmp, r.data
        self._client = RegistryClient(insecure_registries=insecure_registries)
        self._bars = shared_progress.acquire(None if progress is None else bool(progress))
        self._task = self._bars.add_task(f"writing {filename}", total=self.end)
        self._jobs: "queue.Queue[Region]" = queue.Queue()
        for r in self.blobs:    # in archive order: the committer hashes right behind the writes
            self._jobs.put(r)
        self._workers = [threading.Thread(target=self._work, args=(os.dup(self.fd),), daemon=True,
                                          name="labbuild-direct") for _ in range(min(FETCH_WORKERS, len(self.blobs)))]
        self._syncer: Syncer | None = Syncer(self.fd)
        self._unsynced = 0
        self._committer = threading.Thread(target=self._commit, args=(os.dup(self.fd),), daemon=True,
                                           name="labbuild-direct-journal")
        for t in [*self._workers, self._committer]:
            t.start()

    # ------------------------------------------------------------------ layout and journal

    def _key(self) -> str:
        spec = [self.top, self.mtime, [[r.blob.arcname, r.blob.known_size, r.blob.digest] for r in self.blobs]]
        return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()

    def _lay_out(self) -> None:
        head = f"{JOURNAL_FORMAT} {self._key()}\n"
        done: set[str] = set()
        try:
            lines = self.journal.read_text(encoding="ascii").split("\n")
        except (OSError, UnicodeDecodeError):
            lines = []
        if lines and lines[0] + "\n" == head and os.fstat(self.fd).st_size >= self.end:
            places = {(hex_of(r.blob.digest), r.data, r.blob.known_size) for r in self.blobs}
            for line in lines[1:]:          # a torn last line (kill -9 mid-write) is not a place
                parts = line.split(" ")
                if len(parts) == 3 and all(p.isdigit() for p in parts[1:]) and \
                        (parts[0], int(parts[1]), int(parts[2])) in places:
                    done.add("sha256:" + parts[0])
        if done and lines[-1]:      # a torn last line: end it, so the next line stands alone
            with open(self.journal, "a", encoding="ascii") as fh:
                fh.write("\n")
        if not done:
            os.ftruncate(self.fd, 0)
            with open(self.journal, "w", encoding="ascii") as fh:
                fh.write(head)
                fh.flush()
                os.fsync(fh.fileno())
        os.ftruncate(self.fd, self.end)     # zeros: padding, and room for every blob
        self.resumed = done
        _pwrite_all(self.fd, self.first, 0)
        for r in self.regions:
            _pwrite_all(self.fd, r.header, r.offset)

    # ------------------------------------------------------------------ workers

    def _work(self, fd: int) -> None:
        """One worker, on its own dup of the archive's fd (an abort never closes it under a write)."""
        try:
            while not self._stop:
                try:
                    r = self._jobs.get_nowait()
                except queue.Empty:
                    return
                self._fill(r, fd)
                if r.blob.check is not None:    # a manifest (held to the lock) or config, where it now lies
                    r.blob.check(os.pread(fd, r.blob.known_size, r.data))
                with contextlib.suppress(InvalidStateError):
                    r.blob.slot.future.set_result(self.tmp)     # verified: the SBOMs may read it
                with self._cond:                # the next blob only once this one is journaled
                    self._verified.append(r)
                    self._cond.notify_all()
                    while r.blob.digest not in self._journaled and not self._stop:
                        self._cond.wait()
        except BaseException as exc:
            self._fail(exc)
        finally:
            os.close(fd)

    def _fail(self, exc: BaseException) -> None:
        """Stop everything; every blob not yet in place fails its readers with ``exc``."""
        with self._cond:
            self._error = self._error or exc
            self._stop = True
            self._cond.notify_all()
        for r in self.blobs:
            with contextlib.suppress(InvalidStateError):
                r.blob.slot.future.set_exception(self._error)

    def _fill(self, r: Region, fd: int) -> None:
        b = r.blob
        if b.digest in self.resumed and self._matches(r, fd):
            self._bars.advance(self._task, b.known_size)
            self._wrote(b.digest, b.known_size)
            return
        if b.local is not None:
            if self._copy(r, fd):
                return
            self._wrote(b.digest, 0, again=True)    # what was copied is void: hashed again from byte 0
        self._download(r, fd)

    def _matches(self, r: Region, fd: int) -> bool:
        h, pos, size = hashlib.sha256(), 0, r.blob.known_size
        while pos < size:
            block = os.pread(fd, min(COPY_BLOCK, size - pos), r.data + pos)
            if not block:
                return False
            h.update(block)
            pos += len(block)
        return "sha256:" + h.hexdigest() == r.blob.digest

    def _copy(self, r: Region, fd: int) -> bool:
        """Copy the blob from its verified local file; False when that file changed or vanished."""
        b = r.blob
        path, offset = b.local
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if b.stamp is not None and stamp_of(os.fstat(src)) != b.stamp:
                return False
            left, at = b.known_size, 0
            while left:     # in steps, so the committer hashes behind the copy
                n = os.copy_file_range(src, fd, min(left, HASH_STEP), offset + at, r.data + at)
                if n == 0:
                    return False
                left, at = left - n, at + n
                self._bars.advance(self._task, n)
                if b.stamp is not None:
                    self._wrote(b.digest, at)
            if b.stamp is not None and stamp_of(os.fstat(src)) != b.stamp:
                return False        # written to while it was copied
            if b.stamp is None and not self._matches(r, fd):
                return False        # the blob cache's file is not what its name says
            self._wrote(b.digest, b.known_size)
            return True
        finally:
            os.close(src)

    def _download(self, r: Region, fd: int) -> None:
        b = r.blob
        if b.manifest:      # small, through the manifests API, which checks its digest
            data = self._client.fetch_manifest(b.repo, b.digest).data
            if len(data) != b.known_size:
                raise RegistryError(f"{b.repo}: manifest {b.digest} has {len(data)} bytes, the lock says "
                                    f"{b.known_size}", hint="the lock is damaged; run `labbuild lock` again")
            _pwrite_all(fd, data, r.data)
            self._bars.advance(self._task, len(data))
            self._wrote(b.digest, len(data))
            return
        problem = ""
        h, pos, told = hashlib.sha256(), 0, 0
        for _attempt in range(RETRIES + 1):
            try:
                with self._client.open_blob(b.repo, b.digest, offset=pos) as chunks:
                    if pos and not chunks.range_honoured:
                        h, pos, told = hashlib.sha256(), 0, 0
                        self._wrote(b.digest, 0, again=True)
                    for chunk in chunks:
                        if self._stop:
                            raise BundleError("release aborted")
                        if pos + len(chunk) > b.known_size:
                            pos += len(chunk)
                            break
                        _pwrite_all(fd, chunk, r.data + pos)
                        h.update(chunk)
                        pos += len(chunk)
                        if pos - told >= TELL_EVERY:
                            self._bars.advance(self._task, pos - told)
                            self._wrote(b.digest, pos)
                            told = pos
            except RegistryError as exc:    # keep what arrived: the next attempt asks for the rest
                problem = exc.message
                continue
            got = "sha256:" + h.hexdigest()
            if pos == b.known_size and got == b.digest:
                self._bars.advance(self._task, pos - told)
                self._wrote(b.digest, pos)
                return
            problem = (f"got more than the expected {b.known_size} bytes" if pos > b.known_size
                       else f"got {pos} bytes hashing to {got}")
            h, pos, told = hashlib.sha256(), 0, 0        # wrong bytes: the same range is written again
            self._wrote(b.digest, 0, again=True)
        raise RegistryError(f"{b.repo}: could not download {b.digest} intact after {RETRIES + 1} attempts: "
                            f"{problem}", hint="the registry or the network corrupts data; check it and try again")

    # ------------------------------------------------------------------ journal and prefix hash

    def _commit(self, fd: int) -> None:
        """Journal verified blobs, and hash the archive in order as it fills."""
        try:
            buf = memoryview(bytearray(COPY_BLOCK))
            with open(self.journal, "a", encoding="ascii") as journal:
                self._hash.update(self.first)
                for r in self.regions:
                    self._hash.update(r.header)
                    if r.blob is not None:
                        self._hash_data(r, buf, fd, journal)
                        self._hash.update(padding(r.blob.known_size))
        except _Stopped:
            pass
        except BaseException as exc:
            self._fail(exc)
        finally:
            os.close(fd)

    def _hash_data(self, r: Region, buf: memoryview, fd: int, journal) -> None:
        """Hash ``r``'s bytes as they are written (read back from the page cache right away), from
        the region's start again whenever its download starts over; done once it is journaled."""
        b, start, pos, attempt = r.blob, self._hash.copy(), 0, 0
        while True:
            with self._cond:
                while True:
                    if self._stop:
                        raise _Stopped
                    batch, self._verified = self._verified, []
                    now, written = self._progress.get(b.digest, (0, 0))
                    if batch or now != attempt or written > pos:
                        break
                    if b.digest in self._journaled and pos == b.known_size:
                        return
                    self._cond.wait()
            if batch:
                self._journal(batch, fd, journal)
            if now != attempt:          # written again from its start: so is its hash
                self._hash, pos, attempt = start.copy(), 0, now
                continue
            end = min(written, pos + HASH_STEP)     # then look at the journal again
            self._unsynced += end - pos
            while pos < end:
                step = min(len(buf), end - pos)
                block = buf[:step]
                if os.preadv(fd, [block], r.data + pos) != step:
                    self._intact(fd, r.data + pos + step, short=True)
                self._hash.update(block)
                if self._progress[b.digest][0] != attempt:
                    break       # written over meanwhile: the next round starts the region's hash again
                pos += step
            self._intact(fd, self.end)      # cut short and filled again by a later write: holes, not bytes
            if self._unsynced >= SYNC_EVERY:     # to the disk as it goes (a side thread), not all at the end
                self._syncer.poke()
                self._unsynced = 0

    def _intact(self, fd: int, size: int, *, short: bool = False) -> None:
        """Raise, naming the file, when it is shorter than ``size`` bytes (or a read came up ``short``)."""
        if short or os.fstat(fd).st_size < size:
            raise BundleError(f"{self.tmp}: cut to {os.fstat(fd).st_size} bytes while this release wrote it "
                              f"(it must be at least {size}); something else truncated it",
                              hint="let nothing else write to the --out directory during a release, "
                                   "then run `labbuild release` again")

    def _journal(self, batch: list[Region], fd: int, journal) -> None:
        journal.write("".join(f"{hex_of(r.blob.digest)} {r.data} {r.blob.known_size}\n" for r in batch))
        journal.flush()
        with self._cond:
            self._journaled.update(r.blob.digest for r in batch)
            self._cond.notify_all()

    def _wrote(self, digest: str, written: int, *, again: bool = False) -> None:
        """A worker says how far its blob's bytes are in the file (``again``: from byte 0 anew)."""
        with self._cond:
            attempt, _ = self._progress.get(digest, (0, 0))
            self._progress[digest] = (attempt + 1 if again else max(attempt, 1), written)
            self._cond.notify_all()

    # ------------------------------------------------------------------ end

    def _wait(self) -> None:
        self._committer.join()
        for t in self._workers:
            t.join()
        if self._error is not None:
            raise self._error

    def finish(self, plan, accept: Callable[[str, str], None] | None = None) -> tuple[str, str]:
        """Write the rest of ``plan`` after the head; return ``(archive sha256, tar sha256)`` (the same)."""
        try:
            self._wait()
            entries = archive_entries(list(plan.files))
            begun = [(key, name) for key, name, _ in self.head]
            if plan.compressed or plan.top != self.top or [(k, n) for k, n, _ in entries[:len(begun)]] != begun:
                raise BundleError(f"internal error: {plan.filename} does not begin with the blobs written in place",
                                  hint="report it; `labbuild release` again writes it in one pass")
            documents: dict[str, tuple[int, int]] = {}     # SBOMs by sboms.document_key
            with os.fdopen(os.dup(self.fd), "r+b") as fh:
                fh.seek(self.end)
                with WriteBehind(fh, sync_every=SYNC_EVERY) as out:
                    stream = TarStream(out, self.top, self.mtime, after=(self.end, self._hash))
                    try:
                        stream.add(entries[len(begun):], lambda n: self._bars.advance(self._task, n),
                                   lambda f, at: documents.__setitem__(getattr(f, "key", ""), (at, f.size)))
                        sha = stream.finish()
                    finally:
                        stream.close()
                fh.flush()
                self._intact(fh.fileno(), fh.tell())     # not cut short meanwhile (and refilled with holes)
                fh.truncate()
                fh.flush()
                self._stop_syncer()
                os.fsync(fh.fileno())
                # on disk now: out of the page cache, on a side thread (0.14 s/GiB) while the rename goes on
                dropper = threading.Thread(target=drop_cached, args=(os.dup(fh.fileno()),), daemon=True)
                dropper.start()
            if accept:
                accept(sha, sha)
            os.replace(self.tmp, self.dest)
            with contextlib.suppress(OSError):
                dir_fd = os.open(self.dest.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            self.journal.unlink(missing_ok=True)
        except BaseException as exc:
            self.abort(exc)
            raise
        self._close()
        for r in self.blobs:
            r.blob.slot.path = self.dest
        documents.pop("", None)
        remember(self.dest, {r.blob.digest: (r.data, r.blob.known_size) for r in self.blobs}, documents)
        dropper.join()
        return sha, sha

    def abort(self, exc: BaseException | None = None) -> None:
        """Stop the workers; keep the partial archive and its journal (the next release resumes them)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in [self._committer, *self._workers]:
            t.join(timeout=5)       # a worker still waiting on the network ends at its next chunk
        self._fail(exc or BundleError("release aborted"))
        self._close()

    def _stop_syncer(self) -> None:
        """Stop the side thread's syncs (raising the error of one that failed)."""
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.stop()

    def _close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                self._stop_syncer()
            fd, self.fd = self.fd, None
            os.close(fd)
            self._client.close()
            shared_progress.release()

