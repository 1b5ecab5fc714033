"""builder.bundle.archive: the byte recipe of every bundle (reproducible tar and gzip)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

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
