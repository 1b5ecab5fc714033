"""A restored volume archive stays inside its volume (hardening round two, class 1): every
member is checked against the volume's own directory before anything is deleted."""

from __future__ import annotations

import io
import tarfile

import pytest

from builder.backups.restore import check_volume_archive
from builder.errors import BackupError


def archive(*members: tuple[str, str, str]) -> io.BytesIO:
    """(kind, name, data-or-link) -> a tar like the engine's archive of a volume."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra.encode()))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            info.linkname = extra
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_the_engines_own_archive_of_a_volume_passes():
    check_volume_archive(archive(("dir", "data", ""), ("file", "data/note", "x"), ("sym", "data/l", "note"),
                                 ("sym", "data/abs", "/etc/passwd"), ("hard", "data/h", "data/note"),
                                 ("dir", "data/sub", ""), ("file", "data/sub/f", "y")),
                         "/data", "b", "web", "web_data")


@pytest.mark.parametrize("members, why", [
    ([("file", "etc/pwned", "x")], "is not below data/"),
    ([("file", "data/../etc/pwned", "x")], "is not below data/"),
    ([("file", "/etc/pwned", "x")], "is not below data/"),
    ([("file", "database/x", "x")], "is not below data/"),
    ([("sym", "data/l", "/etc"), ("file", "data/l/pwned", "x")], "goes through a symlink"),
    ([("sym", "data", "/etc"), ("file", "data/pwned", "x")], "makes the volume's directory a symlink"),
    ([("hard", "data/h", "etc/shadow")], "is a hard link to"),
    ([("chr", "data/mem", "")], "is a device node"),
])
def test_members_that_would_write_outside_the_volume_are_refused(members, why):
    with pytest.raises(BackupError, match=why) as err:
        check_volume_archive(archive(*members), "/data/", "b.tar: volumes/web/data.tar", "web", "web_data")
    assert "outside volume web_data (/data/)" in err.value.message and "nothing was changed" in err.value.hint


def test_a_malformed_archive_is_refused_before_anything_is_deleted():
    with pytest.raises(BackupError, match="the volume's archive is malformed"):
        check_volume_archive(io.BytesIO(b"\x01" * 2048), "/data", "b", "web", "web_data")
