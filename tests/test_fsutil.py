"""fsutil.WriteBehind: writeback and syncs while a big file streams, errors never lost."""

from __future__ import annotations

import os
import threading
import time

import pytest

from builder import fsutil
from builder.fsutil import WriteBehind


def test_write_behind_syncs_from_a_side_thread_as_the_file_grows(tmp_path, monkeypatch):
    synced_by = []
    real = os.fdatasync

    def observed(fd):        # the real call, watched: which thread syncs
        synced_by.append(threading.current_thread().name)
        real(fd)
    monkeypatch.setattr(fsutil.os, "fdatasync", observed)
    block = os.urandom(1 << 16)
    with open(tmp_path / "big", "wb") as fh, WriteBehind(fh, every=1 << 18, sync_every=1 << 19) as out:
        for _ in range(64):                   # 4 MiB: a sync asked for every 512 KiB
            out.write(block)
    assert synced_by and set(synced_by) == {"labbuild-syncer"}
    assert (tmp_path / "big").stat().st_size == 64 << 16
    assert not any(t.name == "labbuild-syncer" for t in threading.enumerate())


def test_a_failed_sync_is_raised_not_lost():
    """The side thread syncs a dup of the writer's file: the error is the writer's to see
    (the final fsync on the same open file may not report it again)."""
    with open(os.devnull, "wb") as fh:       # fdatasync of a character device: EINVAL
        syncer = fsutil.Syncer(fh.fileno())
        syncer.poke()
        for _ in range(500):                 # the sync runs in the side thread
            if syncer.error:
                break
            time.sleep(0.01)
        with pytest.raises(OSError) as exc:
            syncer.poke()                    # the next write learns of it
        with pytest.raises(OSError):
            syncer.stop()                    # and so does close
    assert exc.value.errno == 22


def test_without_sync_every_there_is_no_side_thread(tmp_path):
    with open(tmp_path / "f", "wb") as fh:
        out = WriteBehind(fh, every=4096)
        out.write(b"x" * 10000)
        assert out._syncer is None
        out.close()


def test_a_file_range_reads_only_its_range_by_read_readinto_seek_and_through_a_buffer(tmp_path):
    """``FileRange`` stands for a blob inside a bundle: whatever way it is read (``read(n)``,
    ``read()``, ``readinto``, after a seek, past its end, through io.BufferedReader and
    tarfile's reads), it gives exactly its bytes and never one of its neighbours'."""
    import io
    data = os.urandom(3 * 4096 + 17)
    path = tmp_path / "archive"
    path.write_bytes(b"H" * 1000 + data + b"T" * 1000)
    r = fsutil.FileRange(path, 1000, len(data))
    assert r.read(10) == data[:10] and r.tell() == 10
    buf = bytearray(5000)
    assert r.readinto(buf) == 5000 and bytes(buf) == data[10:5010]
    assert r.read() == data[5010:] and r.read(1) == b"" and r.readinto(buf) == 0
    r.seek(-7, io.SEEK_END)
    assert r.read(100) == data[-7:]
    r.seek(0)
    with io.BufferedReader(r, buffer_size=1000) as buffered:
        assert buffered.read() == data
    assert r.closed
    other = os.open(path, os.O_RDONLY)     # may take the closed range's fd number
    try:
        for read in (lambda: r.read(10), lambda: r.readinto(buf)):
            with pytest.raises(ValueError):
                read()
    finally:
        os.close(other)
