"""The front door's user file in backups (issue 23), on the real engine: backed up like DIR/.env
(sealed with it), put back only with `restore --users` (checked first, written only at
DIR/access/users_database.yml, 0600), kept by `uninstall`, deleted by `uninstall --volumes`; crafted
backups change nothing.

The lab is labkit's two-service lab installed offline (``test_backup.installed_pair``); its users
file is written with ``builder.host.userdb`` as `labbuild users` writes it.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import yaml
from test_backup import cli, container, fingerprint, installed_pair, sh, write_data

from builder.backups.backupfile import TOP, BackupWriter, read_backup_manifest, reserve_for
from builder.host.userdb import hash_password, write_database
from builder.install.apply import uninstall

pytestmark = [pytest.mark.docker, pytest.mark.slow]
USERS = Path("access") / "users_database.yml"


def _user(name: str, role: str) -> dict:
    return {"displayname": name, "password": hash_password(f"{name}-password-1"), "email": "", "groups": [role],
            "disabled": False}


@pytest.fixture(autouse=True)
def _no_spacing(monkeypatch):
    import builder.host.userdb as userdb

    monkeypatch.setattr(userdb, "RELOAD_SPACING", 0.0)


def test_users_are_backed_up_sealed_restored_with_users_only_and_kept_by_uninstall(airgap, docker_engine, tmp_path,
                                                                                   capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_database(target, {"ada": _user("ada", "admin"), "bo": _user("bo", "analyst")})
    saved_users = (target / USERS).read_bytes()

    code, out, err = cli(capsys, "backup", "--dir", str(target), "--out", str(tmp_path / "b.backup.tar"))
    assert code == 0, err
    assert set(out["members"]) == {"env/.env", "access/users_database.yml", "volumes/web/data.tar"}
    with tarfile.open(out["path"]) as tar:
        assert tar.extractfile(f"{TOP}/access/users_database.yml").read() == saved_users
    backup = Path(out["path"])
    last = json.loads((target / "audit.log").read_text().splitlines()[-1])
    assert last["command"] == "backup" and "access/users_database.yml" in last["detail"]

    key = X25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    code, out, err = cli(capsys, "backup", "--dir", str(target), "--recipient", str(tmp_path / "k.pub"))
    assert code == 0, err
    sealed = Path(out["path"])
    digest = yaml.safe_load(saved_users)["users"]["ada"]["password"]
    assert digest.encode() not in sealed.read_bytes() and b"ada" not in sealed.read_bytes()

    # the users change; a restore without --users leaves them, and says the backup holds others
    write_database(target, {"ada": _user("ada", "admin"), "carl": _user("carl", "user")})
    changed = (target / USERS).read_bytes()
    code, out, err = cli(capsys, "restore", str(backup), "--dir", str(target))
    assert code == 0, err
    assert out["users_restored"] is False and (target / USERS).read_bytes() == changed
    assert "--users puts them back" in err

    code, out, err = cli(capsys, "restore", str(sealed), "--dir", str(target), "--users",
                         "--identity", str(tmp_path / "k.pem"))
    assert code == 0, err
    assert out["users_restored"] is True and out["secrets_restored"] == []
    assert (target / USERS).read_bytes() == saved_users
    assert stat.S_IMODE((target / USERS).stat().st_mode) == 0o600
    entries = [json.loads(line) for line in (target / "audit.log").read_text().splitlines()]
    assert entries[-1]["command"] == "restore --users" and entries[-1]["keys"] == []
    assert digest not in (target / "audit.log").read_text()
    code, out, _ = cli(capsys, "restore", str(backup), "--dir", str(target), "--users")   # again: nothing changes
    assert code == 0 and out["users_restored"] is False

    uninstall(target)
    assert (target / USERS).read_bytes() == saved_users           # kept, like DIR/.env
    from builder.install.apply import install_bundle
    assert install_bundle(bundle, target, timeout=60).ok
    assert (target / USERS).read_bytes() == saved_users           # a door-less release leaves it alone
    uninstall(target, volumes=True)
    assert not (target / USERS).exists() and not (target / "access").exists()
    last = json.loads((target / "audit.log").read_text().splitlines()[-1])
    assert last["command"] == "uninstall --volumes" and "users" in last["detail"]


def _crafted(good: Path, out: Path, users: bytes | None, extra: dict[str, bytes] | None = None) -> None:
    """A self-consistent backup (every hash right) of ``good``'s members, its user file ``users``."""
    bm = read_backup_manifest(good)
    bm.members = {}
    with tarfile.open(good) as src, open(out, "wb") as fh:
        writer = BackupWriter(fh, bm, reserve_for(8))
        writer.add("env/.env", src.extractfile(f"{TOP}/env/.env"))
        if users is not None:
            writer.add("access/users_database.yml", io.BytesIO(users))
        for name, data in (extra or {}).items():
            writer.add(name, io.BytesIO(data))
        writer.add("volumes/web/data.tar", src.extractfile(f"{TOP}/volumes/web/data.tar"), service="web",
                   volume="data")
        writer.finish()


def test_crafted_user_files_and_links_are_refused_before_anything_changes(airgap, docker_engine, tmp_path, capsys):
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_database(target, {"ada": _user("ada", "admin")})
    write_data(docker_engine, lab.name, "web")
    good = tmp_path / "good.backup.tar"
    assert cli(capsys, "backup", "--dir", str(target), "--out", str(good), "web")[0] == 0
    sh(docker_engine, lab.name, "web", "echo changed > /data/note")
    now, web_id, users = fingerprint(docker_engine, lab.name, "web"), container(docker_engine, lab.name, "web").id, \
        (target / USERS).read_bytes()
    cases = {
        "no users": (b"users: {}\n", "has no users"),
        "not yaml": (b"users: [\n", "not valid YAML"),
        "not a user file": (b"users:\n  eve: 3\n", "users.eve: must be a mapping"),
        "missing": (None, "holds no front-door user file"),
    }
    for name, (content, why) in cases.items():
        crafted = tmp_path / f"crafted-{name.replace(' ', '-')}.backup.tar"
        _crafted(good, crafted, content)
        code, out, _ = cli(capsys, "restore", str(crafted), "--dir", str(target), "--users", "--secrets")
        assert code == 1 and why in out["error"], (name, out)
    # a member name that climbs out is refused by the backup's own walk
    climbing = tmp_path / "climbing.backup.tar"
    _crafted(good, climbing, users, extra={"access/../../../escaped": b"planted"})
    code, out, _ = cli(capsys, "restore", str(climbing), "--dir", str(target), "--users")
    assert code == 1 and "escaped" in out["error"], out
    # DIR/access made a link to elsewhere: never written through
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(target / "access", tmp_path / "access.real")
    (target / "access").symlink_to(outside)
    code, out, _ = cli(capsys, "restore", str(good), "--dir", str(target), "--users")
    assert code == 1 and "is a link" in out["error"], out
    assert list(outside.iterdir()) == []
    (target / "access").unlink()
    os.rename(tmp_path / "access.real", target / "access")

    assert container(docker_engine, lab.name, "web").id == web_id          # not removed, not recreated
    assert fingerprint(docker_engine, lab.name, "web") == now
    assert (target / USERS).read_bytes() == users
    assert not list(tmp_path.rglob("escaped"))
    assert "restore" not in (target / "audit.log").read_text()
