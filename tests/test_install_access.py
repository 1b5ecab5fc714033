"""The install side of the front door's user file (issue 23): `labbuild install` and `rollback` of a
release with access/lab.json make DIR/access (0700) and, when there are no users, the first admin
(0600, argon2id checked with the reference implementation), shown once and audited without the
password; upgrades, rollbacks and door-less releases keep the file as it is.

The install dirs are real (``test_users.door_install``: a rendered release, DIR/current, DIR/.env);
a container of the real engine reads the file through the directory mount the provider gets.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from pathlib import Path

import pytest
import yaml
from test_users import ACCESS, audit_lines, check_digest, door_install

from builder.errors import InstallError
from builder.install.access import ensure_users, prepare_access_dir
from builder.render.door import USERS_TARGET

USERS = Path("access") / "users_database.yml"


@pytest.fixture
def inst(tmp_path, monkeypatch) -> Path:
    import builder.host.userdb as userdb

    monkeypatch.setattr(userdb, "RELOAD_SPACING", 0.0)
    return door_install(tmp_path)


def test_install_makes_the_access_dir_and_one_admin_shown_once(inst, tmp_path) -> None:
    release = inst / "current"
    made = ensure_users(inst, release, "install")
    assert made is not None and made.name == "admin" and made.file == inst / USERS
    assert stat.S_IMODE((inst / "access").stat().st_mode) == 0o700
    assert stat.S_IMODE((inst / USERS).stat().st_mode) == 0o600
    users = yaml.safe_load((inst / USERS).read_text())["users"]
    assert list(users) == ["admin"]
    assert users["admin"]["groups"] == ["admin"] and users["admin"]["disabled"] is False
    check_digest(users["admin"]["password"], made.password)      # argon2id, Authelia's defaults, verifies
    assert len(made.password) >= 24
    entries = audit_lines(inst)
    assert [(e["command"], e["services"], e["outcome"]) for e in entries] == [("install", ["authelia"], "ok")]
    assert "admin" in entries[0]["detail"]
    assert made.password not in (inst / "audit.log").read_text()
    assert made.to_json() == {"name": "admin", "password": made.password, "file": str(inst / USERS)}

    # the same install again (or an upgrade, or a rollback): the file is kept byte for byte, nothing audited
    before = (inst / USERS).read_bytes()
    assert ensure_users(inst, release, "install") is None
    assert ensure_users(inst, release, "rollback") is None
    assert (inst / USERS).read_bytes() == before and len(audit_lines(inst)) == 1


def test_a_release_without_the_front_door_leaves_an_existing_file_alone(inst, tmp_path) -> None:
    ensure_users(inst, inst / "current", "install")
    before = (inst / USERS).read_bytes()
    plain = door_install(tmp_path / "other", access=None)
    assert ensure_users(inst, plain / "current", "install") is None
    assert (inst / USERS).read_bytes() == before
    fresh = door_install(tmp_path / "fresh", access=None)
    assert ensure_users(fresh, fresh / "current", "install") is None
    assert not (fresh / "access").exists()


def test_existing_users_are_kept_and_a_widened_mode_is_narrowed(inst) -> None:
    (inst / "access").mkdir(mode=0o755)
    os.chmod(inst / "access", 0o755)
    text = "users:\n  ada:\n    displayname: Ada\n    password: \"$argon2id$v=19$m=65536,t=3,p=4$x$y\"\n" \
           "    groups: [admin]\n"
    (inst / USERS).write_text(text)
    os.chmod(inst / USERS, 0o644)
    assert ensure_users(inst, inst / "current", "install") is None
    assert (inst / USERS).read_text() == text
    assert stat.S_IMODE((inst / USERS).stat().st_mode) == 0o600
    assert stat.S_IMODE((inst / "access").stat().st_mode) == 0o700
    assert audit_lines(inst) == []


def test_an_empty_user_file_gets_the_first_admin(inst) -> None:
    (inst / "access").mkdir()
    (inst / USERS).write_text("users: {}\n")
    made = ensure_users(inst, inst / "current", "install")
    assert made is not None
    assert list(yaml.safe_load((inst / USERS).read_text())["users"]) == ["admin"]


@pytest.mark.parametrize("case", ["dir-link", "dir-file", "file-link", "file-dir", "broken-yaml", "bad-json"])
def test_links_odd_files_and_damage_are_refused_naming_the_path(inst, tmp_path, case) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    access = inst / "access"
    if case == "dir-link":
        access.symlink_to(outside)
    elif case == "dir-file":
        access.write_text("x")
    else:
        access.mkdir()
    if case == "file-link":
        (outside / "users_database.yml").write_text("users: {}\n")
        (access / "users_database.yml").symlink_to(outside / "users_database.yml")
    elif case == "file-dir":
        (access / "users_database.yml").mkdir()
    elif case == "broken-yaml":
        (access / "users_database.yml").write_text("users: [\n")
    elif case == "bad-json":
        (inst / "current" / "access" / "lab.json").write_text("{not json")
    with pytest.raises(InstallError) as err:
        ensure_users(inst, inst / "current", "install")
    assert str(inst) in err.value.message
    assert list(outside.iterdir()) in ([], [outside / "users_database.yml"])
    if case == "file-link":
        assert (outside / "users_database.yml").read_text() == "users: {}\n"
    assert audit_lines(inst) == []


def test_the_install_result_and_text_show_the_admin_once(inst, capsys) -> None:
    from builder.cli import Output
    from builder.commands.install import _render_install
    from builder.install.apply import InstallResult

    made = ensure_users(inst, inst / "current", "install")
    result = InstallResult(ok=True, dir=inst, lab="testlab", version="1.0.0", release=inst / "current",
                           started=False, first_admin=made)
    assert result.to_json()["first_admin"] == {"name": "admin", "password": made.password,
                                               "file": str(inst / USERS)}
    assert "first_admin" not in InstallResult(ok=True, dir=inst, lab="l", version="1", release=inst).to_json()
    _render_install(None, Output(inst, as_json=False), result, "installed")
    out = capsys.readouterr()
    assert out.out.count(made.password) == 1 and made.password not in out.err
    assert "labbuild users passwd admin" in out.out


def test_a_root_container_reads_the_0600_file_through_the_directory_mount(inst, docker_engine) -> None:
    """The provider's official image runs as uid 0 by default (Dockerfile ENV PUID=0; entrypoint.sh
    drops to PUID only): root in a container with the default capabilities reads the 0600 file
    through the mounted directory, whoever owns it on the host. The control: a non-root uid that is
    not the owner cannot — which is why the file is never made readable for others instead."""
    from apps.base import ensure_base

    base = ensure_base(docker_engine).ref
    made = ensure_users(inst, inst / "current", "install")
    os.chown(inst / "access", 4242, 4242)                   # an operator's uid, not root
    os.chown(inst / USERS, 4242, 4242)
    name = f"labbuild-test-access-{uuid.uuid4().hex[:8]}"
    mount = {str(inst / "access"): {"bind": USERS_TARGET, "mode": "ro"}}    # as the release mounts it
    try:
        out = docker_engine.containers.run(base, ["cat", f"{USERS_TARGET}/users_database.yml"], name=name,
                                           network_mode="none", volumes=mount, remove=False)
        assert out == (inst / USERS).read_bytes()
        assert made.password.encode() not in out
        with pytest.raises(Exception) as denied:
            docker_engine.containers.run(base, ["cat", f"{USERS_TARGET}/users_database.yml"], name=name + "-u",
                                         network_mode="none", volumes=mount, user="5151:5151", remove=False)
        assert "Permission denied" in str(denied.value)
    finally:
        for n in (name, name + "-u"):
            with contextlib.suppress(Exception):
                docker_engine.containers.get(n).remove(force=True)


def test_prepare_keeps_a_good_dir_as_it_is(inst) -> None:
    access = prepare_access_dir(inst)
    assert access == inst / "access" and stat.S_IMODE(access.stat().st_mode) == 0o700
    assert not (inst / USERS).exists()
    assert json.loads((inst / "current" / "access" / "lab.json").read_text())["provider"] == ACCESS["provider"]


def test_status_counts_users_enabled_and_admins_never_names(inst, tmp_path, capsys, docker_engine) -> None:
    from builder.cli import main
    from builder.host.userdb import write_database
    from builder.operate.status import user_counts

    made = ensure_users(inst, inst / "current", "install")
    users = yaml.safe_load((inst / USERS).read_text())["users"]
    users["zed-analyst"] = {**users["admin"], "groups": ["analyst"]}
    users["old-admin"] = {**users["admin"], "disabled": True}
    write_database(inst, users)
    warnings: list[str] = []
    assert user_counts(inst, inst / "current", warnings) == {"users": 3, "enabled": 2, "admins": 1}
    assert warnings == []
    rc = main(["--json", "status", "--dir", str(inst)])     # the lab's containers do not run here: exit 1
    out = capsys.readouterr()
    assert rc == 1 and json.loads(out.out)["users"] == {"users": 3, "enabled": 2, "admins": 1}
    assert "zed-analyst" not in out.out + out.err and made.password not in out.out + out.err
    assert users["admin"]["password"] not in out.out + out.err
    rc = main(["status", "--dir", str(inst)])
    assert "front door: 3 user(s), 2 enabled, 1 enabled admin(s)" in capsys.readouterr().out

    users["admin"]["disabled"] = True
    write_database(inst, users)
    assert user_counts(inst, inst / "current", warnings)["admins"] == 0
    assert "no enabled admin" in warnings[-1]
    (inst / USERS).write_text("users: [\n")
    assert user_counts(inst, inst / "current", warnings) is None and "not valid YAML" in warnings[-1]
    plain = door_install(tmp_path / "plain", access=None)
    assert user_counts(plain, plain / "current", []) is None
