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
