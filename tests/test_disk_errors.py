"""Full and read-only disks (hardening round two, class 15): the message names the file and
the operation, the hint fits the errno — on real filesystems (tmpfs mounts, as root)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess

import pytest

from builder.backups.backupcrypt import encrypt_stream, load_recipient
from builder.backups.restore import opened_backup
from builder.errors import LabbuildError
from builder.host.labdir import dir_lock, stage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@contextlib.contextmanager
def tmpfs(path, size: str, *, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_unpacking_a_release_on_a_full_disk_names_the_file_and_says_free_space(tmp_path):
    with tmpfs(tmp_path / "dir", "64k") as d:
        with pytest.raises(LabbuildError) as err:
            stage(d, {"compose.yaml": b"x" * (512 * 1024)}, {})
        assert "cannot unpack the release (No space left on device)" in err.value.message
        assert str(d) in err.value.message and "free space on the filesystem holding" in err.value.hint
        assert not list((d / "releases").iterdir())              # nothing half-written kept


def test_a_read_only_install_dir_is_named_read_only_not_a_link_problem(tmp_path):
    with tmpfs(tmp_path / "dir", "1m") as d:
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        with pytest.raises(LabbuildError) as err:
            with dir_lock(d):
                pass
        assert "Read-only file system" in err.value.message and "read-only filesystem" in err.value.hint
        assert "link" not in err.value.hint


def test_opening_a_sealed_backup_on_a_full_disk_names_the_backup(tmp_path):
    pem, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "X25519", "-out", str(pem)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pub)], check=True)
    with tmpfs(tmp_path / "dir", "512k") as d:
        sealed = d / "lab.backup.enc"
        with open(sealed, "wb") as out:
            encrypt_stream(io.BytesIO(os.urandom(300 * 1024)), out, load_recipient(pub))
        with pytest.raises(LabbuildError) as err:
            with opened_backup(sealed, pem):
                pass
        assert f"{sealed}: cannot open the sealed backup" in err.value.message
        assert "No space left on device" in err.value.message and "free space" in err.value.hint
