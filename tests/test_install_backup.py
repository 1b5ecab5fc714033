"""The backup file format, its encryption, the fit and snapshot rules, and the shipped methods — no engine.

The real-engine chain (backup, restore, snapshots, rollback --restore-data,
kill -9) is tests/e2e/test_backup.py.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from markdown_it import MarkdownIt

from builder.blueprint import load_lab
from builder.blueprint.schema import blueprint_schema
from builder.format.manifest import Manifest
from builder.errors import BackupError, BundleError, InstallError
from builder.escape import markdown_code
from builder.backups import backupcrypt
from builder.backups.backup import list_backups, sweep_leftovers
from builder.backups.backupcrypt import decrypt_stream, encrypt_stream, load_identity, load_recipient
from builder.backups.backupfile import (TOP, BackupManifest, BackupService, BackupVolume, BackupWriter,
                                        read_backup_manifest, reserve_for, verify_backup)
from builder.backups.restore import check_fits
from builder.host.dotenv import env_values, replace_values
from builder.backups.snapshots import (changed_services, find_snapshot, one_way_services, prune_snapshots,
                                       rollback_snapshot)

from test_escape import TEXT

REPO = Path(__file__).resolve().parents[1]


def _service(image: str, *, volumes=("data",), backup=None, migrations=None, data_in=(), depends_on=()) -> dict:
    d = {"image": image, "digest": "sha256:" + "0" * 64, "verified": False,
         "config_digests": {"linux/amd64": "sha256:" + image.encode().hex().ljust(64, "0")[:64]},
         "ports": [], "health": None, "depends_on": list(depends_on),
         "volumes": [{"name": v, "volume": f"{image.split(':')[0]}_{v}", "target": f"/{v}", "read_only": False}
                     for v in volumes],
         "secrets": [], "runbook": "runbooks/x.md"}
    if backup:
        d["backup"] = backup
    if migrations:
        d["migrations"] = migrations
    if data_in:
        d["data_in"] = list(data_in)
    return d


def _manifest(version: str = "1.0.0", lab: str = "lab-x", **services) -> Manifest:
    return Manifest.from_json({"format": 1, "lab": lab, "name": f"{lab}-all-{version}", "version": version,
                               "profile": "all", "inputs": "sha256:" + "1" * 64, "labbuild": "0.1.0",
                               "offline": True, "platforms": ["linux/amd64"], "services": services, "files": {}})


def _backup_manifest(kind="backup", version="1.0.0", upgrade_to=None, created="2026-11-26T05:00:00Z",
                     lab="lab-x", services=("web",)) -> BackupManifest:
    return BackupManifest(kind=kind, lab=lab, version=version, profile="all", release=version, created=created,
                          labbuild="0.1.0", upgrade_to=upgrade_to,
                          services={s: BackupService("volume", f"{s}:1", (BackupVolume("data", f"{s}_data", "/data"),))
                                    for s in services})


def write_backup(path: Path, members: dict[str, bytes], **kw) -> BackupManifest:
    manifest = _backup_manifest(**kw)
    with open(path, "wb") as fh:
        writer = BackupWriter(fh, manifest, reserve_for(len(members)))
        for name, data in members.items():
            writer.add(name, io.BytesIO(data), service="web")
        writer.finish()
    return manifest


MEMBERS = {"env/.env": b"WEB__TOKEN=abc\n", "volumes/web/data.tar": bytes(range(256)) * 5000,
           "dumps/db.dump": b""}


# --------------------------------------------------------------------------- the file format

def test_backup_file_is_a_plain_tar_with_its_manifest_first_and_verifies(tmp_path):
    path = tmp_path / "b.backup.tar"
    written = write_backup(path, MEMBERS)
    with tarfile.open(path) as tar:   # an independent reader: Python's tarfile ...
        names = tar.getnames()
        assert names[:2] == [TOP, f"{TOP}/backup.json"]
        assert {n: tar.extractfile(n).read() for n in names[2:]} == {f"{TOP}/{k}": v for k, v in MEMBERS.items()}
        assert all(m.mode in (0o600, 0o700) and m.uid == 0 and m.uname == "" for m in tar.getmembers())
    if shutil.which("tar"):            # ... and GNU tar
        listing = subprocess.run(["tar", "-tvf", str(path)], capture_output=True, text=True, check=True).stdout
        assert f"{len(MEMBERS['volumes/web/data.tar'])} " in listing and "dumps/db.dump" in listing
    assert read_backup_manifest(path).to_json() == written.to_json()
    verified = verify_backup(path)
    assert verified.members["volumes/web/data.tar"].size == 1280000
    assert json.loads(json.dumps(verified.to_json())) == written.to_json()


def test_a_changed_member_is_refused_by_name(tmp_path):
    path = tmp_path / "b.backup.tar"
    write_backup(path, MEMBERS)
    with tarfile.open(path) as tar:
        offset = tar.getmember(f"{TOP}/volumes/web/data.tar").offset_data
    raw = bytearray(path.read_bytes())
    raw[offset + 4242] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match=r"member volumes/web/data.tar does not match its recorded sha256"):
        verify_backup(path)


def test_a_truncated_backup_is_refused(tmp_path):
    path = tmp_path / "b.backup.tar"
    write_backup(path, MEMBERS)
    path.write_bytes(path.read_bytes()[:600000])
    with pytest.raises(BackupError, match="corrupt or truncated|is missing"):
        verify_backup(path)


def test_a_file_that_is_no_backup_is_refused(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("something/else.txt")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(BackupError, match="not a labbuild backup"):
        verify_backup(path)
    with pytest.raises(BackupError, match="not a labbuild backup"):
        read_backup_manifest(path)


def test_a_manifest_of_the_wrong_types_is_refused_with_its_key_path(tmp_path):
    path = tmp_path / "b.backup.tar"
    write_backup(path, MEMBERS)
    with tarfile.open(path) as tar:
        info = tar.getmember(f"{TOP}/backup.json")
        data = json.loads(tar.extractfile(info).read())
    data["created"] = 20261126
    new = json.dumps(data).encode()
    raw = bytearray(path.read_bytes())
    raw[info.offset_data:info.offset_data + info.size] = new + b" " * (info.size - len(new))
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match=r"backup.json is malformed .*created: expected str, got int"):
        verify_backup(path)


def test_listing_reads_only_the_head_and_skips_temp_files(tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    write_backup(root / "lab-x-1.0.0-a.backup.tar", MEMBERS)
    (root / ".lab-x-1.0.0-b.backup.tar.x1y2.tmp").write_bytes(b"partial")
    (root / "broken.backup.tar").write_bytes(b"garbage" * 100)
    entries = {e.path.name: e for e in list_backups(tmp_path)}
    assert set(entries) == {"lab-x-1.0.0-a.backup.tar", "broken.backup.tar"}
    assert entries["lab-x-1.0.0-a.backup.tar"].to_json()["services"] == ["web"]
    assert "not a readable backup" in entries["broken.backup.tar"].problem


def test_leftovers_of_killed_backups_and_restores_are_swept(tmp_path):
    keep = [tmp_path / "a.backup.tar", tmp_path / ".keep-me", tmp_path / ".notes.tmp"]
    gone = [tmp_path / ".a.backup.tar.k2j3.tmp", tmp_path / ".b.backup.enc.x.tmp", tmp_path / ".a.backup.tar.77.open"]
    for p in keep + gone:
        p.write_bytes(b"x")
    assert sorted(sweep_leftovers(tmp_path)) == sorted(gone)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


# --------------------------------------------------------------------------- encryption

@pytest.fixture
def keys(tmp_path):
    """An X25519 key pair made by OpenSSL (an independent producer of the key files)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    pem, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "X25519", "-out", str(pem)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pub)], check=True)
    return load_identity(pem), load_recipient(pub)


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 5000])
def test_sealing_round_trips_at_chunk_edges(keys, monkeypatch, size):
    monkeypatch.setattr(backupcrypt, "CHUNK", 1024)
    identity, recipient = keys
    data = bytes((i * 7) % 251 for i in range(size))
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(data), sealed, recipient)
    assert len(sealed.getvalue()) == backupcrypt.HEADER_SIZE + size + 16 * max(1, -(-size // 1024))
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(sealed.getvalue()), out, identity, "x")
    assert out.getvalue() == data


def test_sealed_backups_refuse_flips_truncation_and_other_keys(keys, monkeypatch, tmp_path):
    monkeypatch.setattr(backupcrypt, "CHUNK", 1024)
    identity, recipient = keys
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(b"x" * 3000), sealed, recipient)
    raw = sealed.getvalue()
    flipped = bytearray(raw)
    flipped[backupcrypt.HEADER_SIZE + 1040 + 3] ^= 1
    with pytest.raises(BackupError, match="chunk 1 does not authenticate"):
        decrypt_stream(io.BytesIO(bytes(flipped)), io.BytesIO(), identity, "x")
    cut = raw[:backupcrypt.HEADER_SIZE + 2 * 1040]          # the final chunk dropped
    with pytest.raises(BackupError, match="chunk 1 does not authenticate"):
        decrypt_stream(io.BytesIO(cut), io.BytesIO(), identity, "x")
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    with pytest.raises(BackupError, match="encrypted to another key"):
        decrypt_stream(io.BytesIO(raw), io.BytesIO(), X25519PrivateKey.generate(), "x")


def test_only_x25519_public_keys_are_recipients(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    p = tmp_path / "ec.pub"
    p.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(BackupError, match="X25519"):
        load_recipient(p)
    (tmp_path / "junk.pub").write_text("nope")
    with pytest.raises(BackupError, match="not a PEM public key"):
        load_recipient(tmp_path / "junk.pub")


# --------------------------------------------------------------------------- does a backup fit?

def test_check_fits_refuses_other_labs_missing_services_methods_and_volumes():
    installed = _manifest(web=_service("web:1"), db=_service("db:1", backup={
        "method": "exec", "dump": ["dump"], "restore": ["restore"]}))
    bm = _backup_manifest(services=("web",))
    assert check_fits(bm, installed, [], Path("b")) == ["web"]
    with pytest.raises(BackupError, match="backup of the lab 'lab-y'; 'lab-x' is installed"):
        check_fits(_backup_manifest(lab="lab-y"), installed, [], Path("b"))
    with pytest.raises(BackupError, match="gone: backed up from lab-x 1.0.0 but not installed here"):
        check_fits(_backup_manifest(services=("web", "gone")), installed, [], Path("b"))
    with pytest.raises(BackupError, match="holds no backup of db"):
        check_fits(bm, installed, ["db"], Path("b"))
    with pytest.raises(BackupError, match="db: backed up by method volume, but the installed release restores it "
                                          "by method exec"):
        check_fits(_backup_manifest(services=("db",)), installed, [], Path("b"))
    other_volume = _manifest(web=_service("web:1", volumes=("cache",)))
    with pytest.raises(BackupError, match="holds volume data, the installed web has no such volume"):
        check_fits(bm, other_volume, [], Path("b"))


# --------------------------------------------------------------------------- snapshots and rollback rules

def test_upgrades_snapshot_changed_services_with_data_and_the_data_of_one_way_ones():
    old = _manifest("1.0.0", app=_service("app:1", volumes=()), db=_service("db:1"), web=_service("web:1"),
                    stateless=_service("stateless:1", volumes=()))
    new = _manifest("1.1.0", app=_service("app:2", volumes=(), migrations="one-way", data_in=("db",)),
                    db=_service("db:1"), web=_service("web:2"), stateless=_service("stateless:2", volumes=()))
    assert changed_services(old, new) == ["db", "web"]   # app keeps no data itself; db holds it
    assert one_way_services(new, old) == ["app"]
    assert one_way_services(old, old) == []
    assert changed_services(old, _manifest("1.0.1", app=_service("app:1", volumes=()), db=_service("db:1"),
                                           web=_service("web:1"), stateless=_service("stateless:1"))) == []


def test_rollback_of_one_way_services_needs_restore_data_and_the_right_snapshot(tmp_path):
    old = _manifest("1.0.0", app=_service("app:1"), side=_service("side:1"))
    new = _manifest("1.1.0", app=_service("app:2", migrations="one-way"), side=_service("side:2"))
    assert rollback_snapshot(tmp_path, _manifest("1.1.0", app=_service("app:2"), side=_service("side:2")), old,
                             restore_data=False) == ([], None)
    with pytest.raises(InstallError, match="no snapshot taken by the upgrade 1.0.0 -> 1.1.0 holds app"):
        rollback_snapshot(tmp_path, new, old, restore_data=True)
    with pytest.raises(InstallError, match="cannot roll back app from 1.1.0 to 1.0.0 without its data") as exc:
        rollback_snapshot(tmp_path, new, old, restore_data=False)
    assert "no pre-upgrade snapshot of app" in exc.value.hint
    root = tmp_path / "backups"
    root.mkdir()
    write_backup(root / "snapshot-a.backup.tar", MEMBERS, kind="snapshot", upgrade_to="1.1.0", services=("app",),
                 created="2026-11-26T01:00:00Z")
    write_backup(root / "snapshot-other.backup.tar", MEMBERS, kind="snapshot", version="0.9.0", upgrade_to="1.0.0",
                 services=("app",), created="2026-11-26T02:00:00Z")
    with pytest.raises(InstallError) as exc:
        rollback_snapshot(tmp_path, new, old, restore_data=False)
    assert "--restore-data restores the pre-upgrade snapshot snapshot-a.backup.tar of app" in exc.value.hint
    restore, snap = rollback_snapshot(tmp_path, new, old, restore_data=True)
    assert restore == ["app"] and snap.path.name == "snapshot-a.backup.tar"
    assert find_snapshot(tmp_path, "lab-x", "1.0.0", "1.1.0", ["app", "side"]) is None


def test_retention_keeps_the_newest_snapshots_of_the_lab_and_every_backup(tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    for i in range(5):
        write_backup(root / f"snapshot-{i}.backup.tar", MEMBERS, kind="snapshot", upgrade_to="2.0.0",
                     created=f"2026-11-26T0{i}:00:00Z")
    write_backup(root / "manual.backup.tar", MEMBERS, created="2026-11-25T00:00:00Z")
    write_backup(root / "snapshot-other-lab.backup.tar", MEMBERS, kind="snapshot", lab="lab-y", upgrade_to="2.0.0")
    gone = prune_snapshots(tmp_path, "lab-x", 3)
    assert sorted(p.name for p in gone) == ["snapshot-0.backup.tar", "snapshot-1.backup.tar"]
    assert sorted(p.name for p in root.iterdir()) == [
        "manual.backup.tar", "snapshot-2.backup.tar", "snapshot-3.backup.tar", "snapshot-4.backup.tar",
        "snapshot-other-lab.backup.tar"]


# --------------------------------------------------------------------------- formats shared with others

def test_manifest_omits_default_backup_fields_and_round_trips_set_ones():
    plain = _manifest(web=_service("web:1"))
    assert set(plain.to_json()["services"]["web"]) == {
        "image", "digest", "verified", "config_digests", "ports", "health", "healthcheck", "depends_on",
        "volumes", "secrets", "runbook"}
    full = _manifest(db=_service("db:1", backup={"method": "exec", "dump": ["a", "b"], "restore": ["c"]},
                                 migrations="one-way", data_in=("x",)))
    data = full.to_json()["services"]["db"]
    assert (data["backup"], data["migrations"], data["data_in"]) == (
        {"method": "exec", "dump": ["a", "b"], "restore": ["c"]}, "one-way", ["x"])
    assert Manifest.from_json(full.to_json()) == full
    with pytest.raises(BundleError, match="needs dump and restore"):
        _manifest(db=_service("db:1", backup={"method": "exec", "dump": ["a"]}))


@pytest.mark.parametrize("section, ok", [
    ({"backup": {"method": "exec", "dump": ["pg_dumpall"], "restore": ["psql"]}}, True),
    ({"backup": {"method": "volume"}}, True),
    ({"backup": {"method": "exec", "dump": ["pg_dumpall"]}}, False),      # no restore command
    ({"backup": {"dump": ["x"], "restore": ["y"]}}, False),                # commands need method exec
    ({"backup": {"method": "snapshot"}}, False),
    ({"upgrade": {"migrations": "one-way", "data_in": ["db-x"]}}, True),
    ({"upgrade": {"migrations": "sometimes"}}, False),
])
def test_schema_of_backup_and_upgrade(section, ok):
    doc = {"service": {"name": "svc", "description": "d", "phase": 0, "category": "app"},
           "image": {"name": "docker.io/x/y", "tag": "1", "digest": "sha256:" + "a" * 64}, **section}
    errors = list(jsonschema.Draft202012Validator(blueprint_schema()).iter_errors(doc))
    assert (not errors) == ok, errors


def test_env_values_are_replaced_in_place_and_missing_ones_appended():
    text, changed = replace_values("# kept\nA=1\nB=2\nB=3\nC=x y\n", {"B": "9", "D": "4", "C": "x y"})
    assert text == "# kept\nA=1\nB=9\nC=x y\nD=4\n" and changed == ["B", "D"]
    assert env_values(text) == {"A": "1", "B": "9", "C": "x y", "D": "4"}


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_markdown_code_renders_as_the_text(value):
    expected = re.sub(r"[\x00-\x1f\x7f]", " ", value)
    source = markdown_code(value)
    if not expected:
        assert source == ""
        return
    rendered = MarkdownIt("commonmark").render(f"run {source} now")
    code = re.fullmatch(r"<p>run <code>(.*)</code> now</p>\n", rendered, re.S)
    assert code, (source, rendered)
    assert html.unescape(code[1]).replace("\ufffd", " ") == expected


def test_markdown_code_of_the_shipped_commands():
    assert markdown_code("psql -f -") == "`psql -f -`"
    assert markdown_code("echo `id`\nrm") == "`` echo `id` rm ``"


# --------------------------------------------------------------------------- the shipped catalog

def test_shipped_postgres_services_dump_with_pg_dumpall_clean_if_exists_and_restore_with_psql():
    lab = load_lab(REPO)
    postgres = sorted(n for n, bp in lab.services.items() if bp.image.name == "docker.io/library/postgres")
    assert postgres == ["dify-db", "flowise-db", "langfuse-db", "litellm-db"]
    for name in postgres:
        bp = lab.services[name]
        assert bp.backup.method == "exec", name
        assert bp.backup.dump[:2] == ("sh", "-c") and bp.backup.restore[:2] == ("sh", "-c"), name
        dump, restore = shlex.split(bp.backup.dump[2]), shlex.split(bp.backup.restore[2])
        assert dump[0] == "pg_dumpall" and "-c" in dump and "--if-exists" in dump, name
        assert dump[dump.index("-U") + 1] == "$POSTGRES_USER" and "POSTGRES_USER" in bp.env, name
        assert not {"-f", "--file", "-t"} & set(dump), name      # the dump goes to stdout, unchanged
        # strict: every psql stops at the first SQL error (exit 3); sessions ended first; the dump read last, from stdin
        assert bp.backup.restore == lab.services["litellm-db"].backup.restore, name
        psqls = [restore[i:restore.index("-d", i) + 2] for i, word in enumerate(restore) if word == "psql"]
        assert len(psqls) == 2 and all(p[1:6] == ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U"] for p in psqls), psqls
        assert all(p[-3:] == ["$POSTGRES_USER", "-d", "postgres"] for p in psqls), psqls
        assert "pg_terminate_backend(pid)" in restore[restore.index("-c") + 1] and restore[-2:] == ["-f", "-"]
        assert restore[restore.index("sed") + 2].startswith("1,/^\\\\connect /{"), restore   # the roles part only


def test_shipped_one_way_services_name_data_services_they_depend_on():
    lab = load_lab(REPO)
    one_way = sorted(n for n, bp in lab.services.items() if bp.migrations == "one-way")
    assert {"open-webui", "langfuse", "litellm", "dify-api", "n8n"} <= set(one_way)
    for name in one_way:
        bp = lab.services[name]
        assert bp.volumes or bp.data_in, f"{name}: one-way but no data to restore"
        for held in bp.data_in:
            assert held in bp.depends_on, f"{name}: data_in {held} is not a dependency"
            assert lab.services[held].volumes or lab.services[held].backup.method == "exec"


def test_an_opened_sealed_backup_has_no_name_on_disk(keys, tmp_path, monkeypatch):
    """Hardening round two, class 5: the plaintext of a sealed backup is never a file with a
    name (no predictable temp name to pre-plant a symlink at, nothing left by a kill -9)."""
    from builder.backups import restore

    identity, recipient = keys
    pem = tmp_path / "id.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "X25519", "-out", str(pem)], check=True)
    pub = tmp_path / "id.pub"
    subprocess.run(["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pub)], check=True)
    sealed = tmp_path / "lab.backup.enc"
    with open(sealed, "wb") as out:
        encrypt_stream(io.BytesIO(b"SECRET=plaintext\n" * 100), out, load_recipient(pub))
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    for pid in range(os.getpid() - 2, os.getpid() + 3):      # the old predictable names, pre-planted
        (tmp_path / f".{sealed.name}.{pid}.open").symlink_to(victim)
    before = sorted(p.name for p in tmp_path.iterdir())
    with restore.opened_backup(sealed, pem) as plain:
        assert plain.read_bytes().startswith(b"SECRET=plaintext")
        assert sorted(p.name for p in tmp_path.iterdir()) == before     # nothing new with a name
    assert victim.read_text() == "untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_sweep_in_an_operators_directory_takes_only_that_outputs_temp_files(tmp_path):
    """backup --out ELSEWHERE (hardening round two, class 5): a killed backup's temp file of that
    output is swept by the next backup to it; nothing else of the operator's directory is."""
    mine = tmp_path / ".lab.backup.tar.k2j3.tmp"
    others = [tmp_path / ".other.backup.tar.x1.tmp", tmp_path / ".lab.backup.tar.notes", tmp_path / "lab.backup.tar"]
    for p in [mine, *others]:
        p.write_bytes(b"x")
    assert sweep_leftovers(tmp_path, name="lab.backup.tar") == [mine]
    assert sorted(tmp_path.iterdir()) == sorted(others)
