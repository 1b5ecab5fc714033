"""builder.bundle.reader: the one hashing reader and the member rules of the archive walk."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from builder.bundle.reader import ScannedBundle, member_problem, read_member, walk_bundle


def test_read_member_hashes_keeps_and_passes_blocks_on():
    data = bytes(range(256)) * 10000
    seen: list[bytes] = []
    counted: list[int] = []
    read = read_member(io.BytesIO(data), keep=True, sink=seen.append, on_bytes=counted.append)
    assert read.sha256 == hashlib.sha256(data).hexdigest() and read.size == len(data)
    assert read.data == data and b"".join(seen) == data and sum(counted) == len(data)
    assert read_member(io.BytesIO(data)).data is None


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("name,kind,why", [
    ("/etc/passwd", tarfile.REGTYPE, "absolute"),
    ("top/../x", tarfile.REGTYPE, "'..'"),
    ("top/./x", tarfile.REGTYPE, "'..'"),
    ("other/x", tarfile.REGTYPE, "outside"),
    ("top/l", tarfile.SYMTYPE, "link"),
    ("top/h", tarfile.LNKTYPE, "link"),
    ("top/d", tarfile.CHRTYPE, "device"),
    ("top/f", tarfile.FIFOTYPE, "device or fifo"),
    ("loose", tarfile.REGTYPE, "outside the bundle's top directory"),
])
def test_unsafe_members_are_named(name, kind, why):
    assert why in member_problem(name, _info(name, kind, "x"), "top")


def test_walk_reports_duplicates_and_hands_over_safe_files(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(_info("top", tarfile.DIRTYPE))
        for body in (b"one", b"two"):
            info = _info("top/a.txt")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path = tmp_path / "b.tar"
    path.write_bytes(raw.getvalue())
    scan, got = ScannedBundle(), []
    walk_bundle(path, scan, lambda rel, member, fh: got.append((rel, fh.read())))
    assert scan.top == "top" and got == [("a.txt", b"one")]
    assert [p.message for p in scan.problems] == ["duplicate member name refused"]
