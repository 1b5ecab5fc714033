"""builder.bundle.archive: the byte recipe of every bundle (reproducible tar and gzip)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading

import pytest

from builder.bundle.archive import DEFAULT_MTIME, BundleFile, gzip_writer, source_date_epoch, write_tar


def _tar(files, mtime=DEFAULT_MTIME) -> tuple[bytes, str]:
    out = io.BytesIO()
    sha = write_tar(out, "top", files, mtime=mtime)
    return out.getvalue(), sha


def test_members_are_sorted_normalised_and_the_hash_is_of_the_stream(tmp_path):
    src = tmp_path / "blob"
    src.write_bytes(b"blob")
    files = [BundleFile("z.txt", data=b"z"), BundleFile("a/b.sh", data=b"#!/bin/sh\n", executable=True),
             BundleFile("blobs/x", source=src, order=1)]
    data, sha = _tar(files)
    assert sha == hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["top", "top/a", "top/a/b.sh", "top/z.txt", "top/blobs", "top/blobs/x"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", DEFAULT_MTIME)}
    assert {m.name: m.mode for m in members}["top/a/b.sh"] == 0o755
    assert {m.name: m.mode for m in members}["top/z.txt"] == 0o644
    assert _tar(list(reversed(files)))[0] == data


def test_duplicate_members_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        _tar([BundleFile("a", data=b"1"), BundleFile("a", data=b"2")])


def test_gzip_header_has_no_name_and_no_time():
    out = io.BytesIO()
    with gzip_writer(out) as gz:
        gz.write(b"x")
    header = out.getvalue()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"
    assert gzip.decompress(out.getvalue()) == b"x"


def test_source_date_epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert source_date_epoch() == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    assert source_date_epoch() == DEFAULT_MTIME


def test_a_member_whose_download_starts_over_is_written_again(tmp_path):
    """The archive writer follows a download (``PendingBlob``); when the download starts
    over, the member's data is rewritten from its start: the same bytes and hash as a
    tar of the finished blob."""
    from builder.blobcache import BlobCache, Restarted, Tail
    from builder.bundle.fetch import PendingBlob
    from test_blobcache import Source, digest_of, fetch_in_thread

    data = os.urandom(300_000)
    cache = BlobCache(tmp_path / "cache")
    gate, restarts = threading.Event(), []

    class Followed(Tail):      # the download's first attempt goes on once the writer has packed a chunk of it
        def open(self):
            reader = super().open()
            read = reader.read

            def read_then_open_gate(n=-1):
                try:
                    block = read(n)
                except Restarted:
                    restarts.append(reader.pos)
                    raise
                gate.set()
                return block
            reader.read = read_then_open_gate
            return reader

    tail = Followed()
    digest = digest_of(data)
    member = PendingBlob("images/blobs/sha256/" + digest[7:], source=cache.path(digest), order=-1,
                         sha256_hint=digest[7:], known_size=len(data), tail=tail)
    other = BundleFile("z.txt", data=b"after the blob\n")
    src = Source(data, corrupt_first=1, gate=gate, chunk=50_000)
    thread = fetch_in_thread(cache, data, src, tail)
    with open(tmp_path / "followed.tar", "wb") as fh:
        followed = write_tar(fh, "top", [member, other], mtime=DEFAULT_MTIME)
    thread.join()
    assert src.offsets == [0, 0] and restarts == [0]
    plain = io.BytesIO()
    expected = write_tar(plain, "top", [BundleFile(member.arcname, source=cache.path(digest), order=-1), other],
                         mtime=DEFAULT_MTIME)
    assert followed == expected
    assert (tmp_path / "followed.tar").read_bytes() == plain.getvalue()
