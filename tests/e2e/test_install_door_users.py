"""`labbuild install`, upgrade, rollback and uninstall of releases with the front door (issue 23), on
the real engine: the first install writes the first admin before compose up and shows the password
once (stdout and --json), upgrades and rollbacks keep the file byte for byte, a release without the
door leaves it alone, uninstall keeps it.

The bundles are labkit's two-service lab (busybox images, installed offline) whose release also
carries access/lab.json in the contract's shape: render writes that file when the front door is on
(helper "door"); here the test adds it to the rendered text files of the release it builds, so it
is listed, hashed and verified like every member.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from labkit import two_service_lab
from test_users import ACCESS, check_digest

from builder.cli import main
from builder.install.apply import install_bundle, rollback, uninstall

pytestmark = [pytest.mark.docker, pytest.mark.slow]
USERS = Path("access") / "users_database.yml"


def _door_release(lab, version: str, monkeypatch, door: bool = True) -> Path:
    import builder.bundle.pack as pack

    real = pack.render_text_files

    def with_door(ri):
        files = real(ri)
        if door:
            files["access/lab.json"] = json.dumps(ACCESS, indent=2, sort_keys=True) + "\n"
        return files

    monkeypatch.setattr(pack, "render_text_files", with_door)
    try:
        return lab.release(version)
    finally:
        monkeypatch.setattr(pack, "render_text_files", real)


def test_first_install_makes_the_admin_once_upgrades_and_rollbacks_keep_it(airgap, docker_engine, tmp_path, capsys,
                                                                           monkeypatch):
    import builder.host.userdb as userdb

    monkeypatch.setattr(userdb, "RELOAD_SPACING", 0.0)
    lab = two_service_lab(airgap)
    first, second = _door_release(lab, "1.0.0", monkeypatch), _door_release(lab, "1.0.1", monkeypatch)
    plain = _door_release(lab, "1.0.2", monkeypatch, door=False)
    lab.offline(docker_engine)
    target = tmp_path / "inst"

    rc = main(["--json", "install", str(first), "--dir", str(target), "--timeout", "60"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    result = json.loads(out.out)
    admin = result["first_admin"]
    assert admin["name"] == "admin" and admin["file"] == str(target / USERS)
    assert admin["password"] not in out.err                  # shown once: in the result only
    assert result["services"] == {"api": "healthy", "web": "healthy"}
    users = yaml.safe_load((target / USERS).read_text())["users"]
    check_digest(users["admin"]["password"], admin["password"])
    assert stat.S_IMODE((target / "access").stat().st_mode) == 0o700
    assert stat.S_IMODE((target / USERS).stat().st_mode) == 0o600
    log = (target / "audit.log").read_text()
    assert admin["password"] not in log and users["admin"]["password"] not in log
    entries = [e for e in map(json.loads, log.splitlines()) if e["command"] == "install"]
    assert len(entries) == 3, entries        # the secrets, the front door's keys (DIR/door), the first admin
    before = (target / USERS).read_bytes()

    rc = main(["install", str(second), "--dir", str(target), "--timeout", "60"])    # the upgrade
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "first admin" not in out.out + out.err and (target / USERS).read_bytes() == before
    r = rollback(target, timeout=60)
    assert r.ok and r.first_admin is None and "first_admin" not in r.to_json()
    assert (target / USERS).read_bytes() == before
    r = install_bundle(plain, target, timeout=60)            # a release without the door
    assert r.ok and r.first_admin is None and (target / USERS).read_bytes() == before

    uninstall(target)
    assert (target / USERS).read_bytes() == before           # kept, like DIR/.env
    r = install_bundle(first, target, timeout=60)            # installed again: the users are still there
    assert r.ok and r.first_admin is None and (target / USERS).read_bytes() == before
    uninstall(target, volumes=True)
    assert not (target / "access").exists()
