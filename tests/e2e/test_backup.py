"""Backups, restores, pre-upgrade snapshots and rollback with data, on the real engine.

Every lab here is an ``AirgapLab`` (busybox images from the test registry,
image bundles, installed offline). Data is written into the volumes through
the containers, and compared as bytes (sha256 of every file, owners, modes,
link targets) after the round trip.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.cli import main
from builder.install.apply import install_bundle, uninstall
from builder.backups.backupfile import TOP, read_backup_manifest

from labkit import Service, free_port, http_get, path_with_venv, two_service_lab

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BB = "/bin/busybox"


def container(engine, lab: str, service: str):
    (c,) = engine.containers.list(all=True, filters={"label": [f"com.docker.compose.project={lab}",
                                                                f"com.docker.compose.service={service}"]})
    return c


def sh(engine, lab: str, service: str, cmd: str) -> str:
    code, out = container(engine, lab, service).exec_run(["/bin/sh", "-c", cmd])
    assert code == 0, out
    return out.decode()


def fingerprint(engine, lab: str, service: str, path: str = "/data") -> str:
    """Every entry under ``path``: type, owner, mode, size, sha256 or link target — as one text."""
    return sh(engine, lab, service,
              f"cd {path} && {BB} find . | {BB} sort | while IFS= read -r f; do "
              f"if [ -L \"$f\" ]; then echo \"L $f -> $({BB} readlink \"$f\")\"; "
              f"elif [ -d \"$f\" ]; then echo \"D $f $({BB} stat -c '%u:%g %a' \"$f\")\"; "
              f"else echo \"F $f $({BB} stat -c '%u:%g %a %s' \"$f\") $({BB} sha256sum < \"$f\")\"; fi; done")


def write_data(engine, lab: str, service: str, big_mib: int = 0) -> None:
    sh(engine, lab, service,
       f"echo precious > /data/note && {BB} mkdir -p /data/sub/deeper && "
       f"{BB} dd if=/dev/urandom of=/data/sub/random.bin bs=1k count=300 2>/dev/null && "
       f"echo owned > /data/sub/deeper/owned && {BB} chown 1000:1000 /data/sub/deeper/owned && "
       f"{BB} chmod 640 /data/sub/deeper/owned && {BB} ln -s sub/random.bin /data/link && "
       f"printf 'no newline' > '/data/sub/name with spaces'")
    if big_mib:
        sh(engine, lab, service, f"{BB} dd if=/dev/urandom of=/data/big.bin bs=1M count={big_mib} 2>/dev/null")


def installed_pair(airgap, engine, tmp_path: Path):
    """labkit's two-service lab (web has the volume and the secrets), released, installed offline."""
    lab = two_service_lab(airgap)
    bundle = lab.release("1.0.0")
    lab.offline(engine)
    target = tmp_path / "inst"
    assert install_bundle(bundle, target, timeout=60).ok
    return lab, bundle, target


def cli(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


@pytest.mark.parametrize("engine_archive", [False, True], ids=["host-directory", "engine-archive"])
def test_backup_uninstall_reinstall_restore_gives_the_same_bytes_and_secrets(airgap, docker_engine, tmp_path,
                                                                              capsys, engine_archive):
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_data(docker_engine, lab.name, "web")
    sh(docker_engine, lab.name, "web", f"{BB} ln /data/note /data/sub/hardnote")
    before = fingerprint(docker_engine, lab.name, "web")
    assert "F ./sub/deeper/owned 1000:1000 640" in before and "L ./link -> sub/random.bin" in before
    assert "F ./sub/name with spaces 0:0 644 10 " in before and "F ./sub/hardnote 0:0" in before
    secrets = (target / ".env").read_text()

    code, out, err = cli(capsys, "backup", "--dir", str(target), *(["--engine-archive"] * engine_archive))
    assert code == 0, err
    via_host = os.geteuid() == 0 and not engine_archive     # root beside the local engine reads the directory
    assert ("from its host directory" in err) == via_host
    assert ("through the engine's archive API" in err) == (not via_host)
    path = Path(out["path"])
    assert path.parent == target / "backups" and path.name.endswith(".backup.tar")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out["services"] == ["web"] and set(out["members"]) == {"env/.env", "volumes/web/data.tar"}
    assert out["restarted"] == {"web": "healthy"}          # the lab is left running as it was
    assert container(docker_engine, lab.name, "web").status == "running"
    assert http_get(lab.services["api"].port, "/healthz")[0] == 200
    m = read_backup_manifest(path)
    assert (m.lab, m.version, m.kind, m.profile) == (lab.name, "1.0.0", "backup", "all")
    assert m.services["web"].method == "volume" and m.members["volumes/web/data.tar"].volume == "data"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temp file left

    code, out, _ = cli(capsys, "backups", "--dir", str(target))
    assert code == 0 and [(b["kind"], b["version"], b["services"]) for b in out["backups"]] == [
        ("backup", "1.0.0", ["web"])]

    saved = tmp_path / "saved.backup.tar"
    os.replace(path, saved)
    uninstall(target, volumes=True)
    assert not (target / ".env").exists()
    assert install_bundle(bundle, target, timeout=60).ok
    assert "precious" not in fingerprint(docker_engine, lab.name, "web")
    assert (target / ".env").read_text() != secrets          # new secrets were generated

    code, out, err = cli(capsys, "restore", str(saved), "--dir", str(target), "--secrets")
    assert code == 0, err
    assert out["services"] == {"web": "healthy"} and out["secrets_restored"]
    assert fingerprint(docker_engine, lab.name, "web") == before
    from builder.host.dotenv import env_values
    assert env_values((target / ".env").read_text()) == env_values(secrets)
    token = env_values(secrets)["WEB__API_TOKEN"]
    assert sh(docker_engine, lab.name, "web", "echo $API_TOKEN").strip() == token   # recreated with it
    assert http_get(lab.services["api"].port, "/healthz")[0] == 200
    # the audit log outlived the uninstall and names every operation on the secrets, never a value
    log = (target / "audit.log").read_text()
    assert [(e["command"], e["outcome"]) for e in map(json.loads, log.splitlines())] == [
        ("install", "ok"), ("backup", "ok"), ("uninstall --volumes", "ok"), ("install", "ok"),
        ("restore --secrets", "ok")]
    assert not [v for v in env_values(secrets).values() if v in log]


def _flip_byte_in(path: Path, member: str) -> None:
    with tarfile.open(path) as tar:
        offset = tar.getmember(f"{TOP}/{member}").offset_data
    with open(path, "r+b") as fh:
        fh.seek(offset + 700)
        b = fh.read(1)
        fh.seek(offset + 700)
        fh.write(bytes([b[0] ^ 0xFF]))


def _rewrite_manifest(path: Path, **changes) -> None:
    """Change backup.json in place (same reserved size), keeping the members' hashes."""
    with tarfile.open(path) as tar:
        info = tar.getmember(f"{TOP}/backup.json")
        raw = tar.extractfile(info).read()
    data = json.loads(raw)
    data.update(changes)
    new = json.dumps(data).encode()
    assert len(new) <= info.size
    with open(path, "r+b") as fh:
        fh.seek(info.offset_data)
        fh.write(new + b" " * (info.size - len(new)))


def test_tampered_and_foreign_backups_are_refused_before_anything_changes(airgap, docker_engine, tmp_path, capsys):
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_data(docker_engine, lab.name, "web")
    good = tmp_path / "good.backup.tar"
    assert cli(capsys, "backup", "--dir", str(target), "--out", str(good), "web")[0] == 0
    sh(docker_engine, lab.name, "web", "echo changed > /data/note")
    now = fingerprint(docker_engine, lab.name, "web")
    web_id = container(docker_engine, lab.name, "web").id

    tampered = tmp_path / "tampered.backup.tar"
    tampered.write_bytes(good.read_bytes())
    _flip_byte_in(tampered, "volumes/web/data.tar")
    code, out, err = cli(capsys, "restore", str(tampered), "--dir", str(target))
    assert code == 1 and "member volumes/web/data.tar does not match" in out["error"]

    foreign = tmp_path / "foreign.backup.tar"
    foreign.write_bytes(good.read_bytes())
    _rewrite_manifest(foreign, lab="another-lab")
    code, out, _ = cli(capsys, "restore", str(foreign), "--dir", str(target))
    assert code == 1 and "backup of the lab 'another-lab'" in out["error"]

    code, out, _ = cli(capsys, "restore", str(good), "--dir", str(target), "api")
    assert code == 1 and "holds no backup of api" in out["error"]
    unknown = tmp_path / "unknown.backup.tar"
    unknown.write_bytes(good.read_bytes())
    _rewrite_manifest(unknown, services={"gone": {"method": "volume", "image": "x:1", "volumes": []}})
    code, out, _ = cli(capsys, "restore", str(unknown), "--dir", str(target))
    assert code == 1 and "gone: backed up from" in out["error"] and "not installed here" in out["error"]
    unlisted = tmp_path / "unlisted.backup.tar"
    unlisted.write_bytes(good.read_bytes())
    _rewrite_manifest(unlisted, members={})
    code, out, _ = cli(capsys, "restore", str(unlisted), "--dir", str(target))
    assert code == 1 and "member env/.env is not listed in backup.json" in out["error"]

    # nothing was touched: same container, same data
    assert container(docker_engine, lab.name, "web").id == web_id
    assert fingerprint(docker_engine, lab.name, "web") == now
    # the good one restores
    assert cli(capsys, "restore", str(good), "--dir", str(target))[0] == 0
    assert "precious" in sh(docker_engine, lab.name, "web", "cat /data/note")


def test_encrypted_backup_round_trip_needs_the_key(airgap, docker_engine, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_data(docker_engine, lab.name, "web")
    before = fingerprint(docker_engine, lab.name, "web")
    code, out, err = cli(capsys, "backup", "--dir", str(target), "--recipient", str(tmp_path / "k.pub"))
    assert code == 0, err
    sealed = Path(out["path"])
    assert sealed.name.endswith(".backup.enc") and out["encrypted"]
    assert b"precious" not in sealed.read_bytes() and b"WEB__API_TOKEN" not in sealed.read_bytes()
    assert [b["encrypted"] for b in cli(capsys, "backups", "--dir", str(target))[1]["backups"]] == [True]
    sh(docker_engine, lab.name, "web", f"{BB} rm -rf /data/sub /data/note")
    code, out, _ = cli(capsys, "restore", str(sealed), "--dir", str(target))
    assert code == 1 and "--identity" in out["hint"]
    assert cli(capsys, "restore", str(sealed), "--dir", str(target), "--identity", str(tmp_path / "k.pem"))[0] == 0
    assert fingerprint(docker_engine, lab.name, "web") == before
    assert not [p for p in sealed.parent.iterdir() if p.name.startswith(".")]   # the opened copy is gone


ONE_WAY = '[upgrade]\nmigrations = "one-way"\ndata_in = ["store"]\n'   # store: its "database"
# v1 refuses data a newer version migrated (like an old Alembic head meeting a newer revision)
V1_START = (f"[ -f /data/schema ] || echo 'schema 1' > /data/schema; "
            f"{BB} grep -qx 'schema 1' /data/schema || {{ echo 'cannot read a newer schema' >&2; exit 3; }}")
V2_START = "echo 'schema 2' > /data/schema"           # the forward-only migration


def test_upgrade_snapshots_and_one_way_rollback_needs_restore_data(airgap, docker_engine, tmp_path, capsys):
    lab = airgap
    lab.services = {"app": Service("app", free_port(), volume=True, prelude=V1_START, extra='\n' + ONE_WAY),
                    "store": Service("store", free_port(), volume=True),
                    "side": Service("side", free_port(), volume=True)}
    lab.update()
    v1 = lab.release("1.0.0")
    app = lab.services["app"]
    v1_id = app.image_id
    app.version, app.prelude = "2", V2_START
    lab.update("app")
    v2 = lab.release("1.1.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert install_bundle(v1, target, timeout=60).ok
    sh(docker_engine, lab.name, "app", "echo 'chat history' > /data/chats")
    sh(docker_engine, lab.name, "side", "echo 'side data' > /data/side")
    sh(docker_engine, lab.name, "store", "echo 'rows of 1.0.0' > /data/table")

    code, out, err = cli(capsys, "install", str(v2), "--dir", str(target), "--timeout", "60")
    assert code == 0, err
    # app's image changed; store holds app's data; side is left alone
    assert "snapshot before upgrading 1.0.0 -> 1.1.0: app, store" in err
    assert sh(docker_engine, lab.name, "app", "cat /data/schema") == "schema 2\n"
    sh(docker_engine, lab.name, "app", "echo 'written after the upgrade' >> /data/chats")
    sh(docker_engine, lab.name, "store", "echo 'rows migrated by 1.1.0' > /data/table")
    code, out, _ = cli(capsys, "backups", "--dir", str(target))
    (snap,) = out["backups"]
    assert (snap["kind"], snap["version"], snap["upgrade_to"], snap["services"]) == (
        "snapshot", "1.0.0", "1.1.0", ["app", "store"])

    code, out, _ = cli(capsys, "rollback", "--dir", str(target), "--timeout", "30")
    assert code == 1
    assert "cannot roll back app from 1.1.0 to 1.0.0 without its data" in out["error"]
    assert "--restore-data" in out["hint"] and Path(snap["path"]).name in out["hint"]
    assert (target / "current").resolve().name == "1.1.0"              # nothing changed
    assert container(docker_engine, lab.name, "app").status == "running"

    code, out, err = cli(capsys, "rollback", "--dir", str(target), "--restore-data", "--timeout", "60")
    assert code == 0, err
    assert out["services"] == {"app": "healthy", "side": "healthy", "store": "healthy"}
    assert out["version"] == "1.0.0"
    assert sh(docker_engine, lab.name, "app", "cat /data/schema") == "schema 1\n"
    assert sh(docker_engine, lab.name, "app", "cat /data/chats") == "chat history\n"
    assert container(docker_engine, lab.name, "app").attrs["Image"] == v1_id
    assert sh(docker_engine, lab.name, "store", "cat /data/table") == "rows of 1.0.0\n"
    assert sh(docker_engine, lab.name, "side", "cat /data/side") == "side data\n"    # untouched
    assert http_get(app.port, "/version") == (200, "1\n")


def test_snapshot_retention_keeps_the_last_n(airgap, docker_engine, tmp_path, capsys):
    lab = airgap
    lab.services = {"app": Service("app", free_port(), volume=True)}
    bundles = []
    for n in range(1, 4):
        lab.services["app"].version = str(n)
        lab.update()
        bundles.append(lab.release(f"1.{n}.0"))
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    for i, b in enumerate(bundles):
        assert install_bundle(b, target, timeout=60, keep_snapshots=1).ok
    code, out, _ = cli(capsys, "backups", "--dir", str(target))
    assert [(b["version"], b["upgrade_to"]) for b in out["backups"]] == [("1.2.0", "1.3.0")]


def _labbuild(*args: str) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).with_name("labbuild")), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PATH": path_with_venv()})


def test_kill_9_during_backup_and_restore(airgap, docker_engine, tmp_path, capsys):
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_data(docker_engine, lab.name, "web", big_mib=400)
    before = fingerprint(docker_engine, lab.name, "web")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    final = out_dir / "lab.backup.tar"

    # kill -9 while the volume streams into the temp file
    proc = _labbuild("backup", "--dir", str(target), "--out", str(final))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        temps = [p for p in out_dir.iterdir() if p.name.startswith(".")]
        if temps and temps[0].stat().st_size > 50 << 20:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail(f"the backup never started writing: {proc.communicate()}, {list(out_dir.iterdir())}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    assert container(docker_engine, lab.name, "web").status == "exited"   # kill -9 left it stopped

    # the next backup notices what the killed one stopped, starts it again and says so (class 14)
    code, out, err = cli(capsys, "backup", "--dir", str(target), "--out", str(final))
    assert code == 0 and out["recovered"] == ["web"] and "interrupted backup left web stopped" in err
    assert container(docker_engine, lab.name, "web").status == "running"
    assert not (target / ".labbuild-stopped.json").exists()
    assert [p.name for p in out_dir.iterdir()] == [final.name]         # the killed run's temp file swept
    sh(docker_engine, lab.name, "web", f"{BB} rm -rf /data/* && echo other > /data/other")

    # kill -9 while the volume is being written back
    proc = _labbuild("restore", str(final), "--dir", str(target))
    for line in proc.stderr:
        if "restoring volume" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # interrupted midway: the container was recreated but never started again
    assert container(docker_engine, lab.name, "web").status == "created"
    # run it again: it ends in the backed-up state
    code, out, err = cli(capsys, "restore", str(final), "--dir", str(target))
    assert code == 0, err
    assert fingerprint(docker_engine, lab.name, "web") == before


EXEC = ('[backup]\nmethod = "exec"\n'
        f'dump = ["{BB}", "tar", "-C", "/data", "-cf", "-", "."]\n'
        f'restore = ["/bin/sh", "-c", "{BB} rm -rf /data/* && {BB} tar -C /data -xf -"]\n')


def installed_db(lab, engine, tmp_path: Path, toml: str) -> Path:
    """``db`` (a volume and ``toml``) and its client ``app``, released, installed offline; the install dir."""
    lab.services = {"db": Service("db", free_port(), volume=True, extra='\n' + toml),
                    "app": Service("app", free_port(), depends_on=("db",))}
    lab.update()
    bundle = lab.release("1.0.0")
    lab.offline(engine)
    target = tmp_path / "inst"
    assert install_bundle(bundle, target, timeout=60).ok
    return target


def test_exec_method_streams_a_dump_out_and_back(airgap, docker_engine, tmp_path, capsys):
    lab = airgap
    target = installed_db(lab, docker_engine, tmp_path, EXEC)
    manifest = json.loads((target / "current" / "manifest.json").read_text())
    assert manifest["services"]["db"]["backup"]["method"] == "exec"
    write_data(docker_engine, lab.name, "db", big_mib=20)
    before = fingerprint(docker_engine, lab.name, "db")
    db_id = container(docker_engine, lab.name, "db").id

    code, out, err = cli(capsys, "backup", "--dir", str(target))
    assert code == 0, err
    assert set(out["members"]) == {"env/.env", "dumps/db.dump"} and out["members"]["dumps/db.dump"] > 20 << 20
    assert out["restarted"] == {}                          # exec: never stopped
    assert container(docker_engine, lab.name, "db").id == db_id
    with tarfile.open(out["path"]) as tar:   # the dump member is exactly what the command printed
        dump = tarfile.open(fileobj=tar.extractfile(f"{TOP}/dumps/db.dump"))
        assert "./sub/deeper/owned" in dump.getnames()

    sh(docker_engine, lab.name, "db", f"{BB} rm -rf /data/* && echo other > /data/other")
    app_id = container(docker_engine, lab.name, "app").id
    code, out, err = cli(capsys, "restore", out["path"], "--dir", str(target))
    assert code == 0, err
    assert fingerprint(docker_engine, lab.name, "db") == before
    assert "stopping app while db is restored" in err
    assert out["services"] == {"db": "healthy"}
    app = container(docker_engine, lab.name, "app")
    assert app.id == app_id and app.status == "running"        # stopped and started again, not recreated
    assert http_get(lab.services["app"].port, "/healthz")[0] == 200


def test_a_failing_dump_names_the_service(airgap, docker_engine, tmp_path, capsys):
    lab = airgap
    bad = EXEC.replace(f'dump = ["{BB}", "tar"', f'dump = ["/bin/sh", "-c", "echo broken >&2; exit 4", "tar"')
    target = installed_db(lab, docker_engine, tmp_path, bad)
    final = tmp_path / "x.backup.tar"
    code, out, _ = cli(capsys, "backup", "--dir", str(target), "--out", str(final))
    assert code == 1 and out["error"].startswith("db: dump command exited 4: broken")
    assert not final.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".x.backup")]


def test_a_full_disk_names_the_service_and_volume_and_leaves_the_lab_running(airgap, docker_engine, tmp_path):
    import resource

    lab, _, target = installed_pair(airgap, docker_engine, tmp_path)
    write_data(docker_engine, lab.name, "web")
    final = tmp_path / "full.backup.tar"

    def small_disk() -> None:   # writes past 200 KiB fail with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, 200 << 10))

    proc = subprocess.run([str(Path(sys.executable).with_name("labbuild")), "--json", "backup", "--dir", str(target),
                           "--out", str(final)], capture_output=True, text=True, preexec_fn=small_disk,
                          env={**os.environ, "PATH": path_with_venv()}, timeout=240)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["error"].startswith("web volume web_data: cannot write the backup (File too large)")
    assert "--out FILE" in out["hint"]
    assert not final.exists() and not list(tmp_path.glob(".full.backup.tar*"))
    assert container(docker_engine, lab.name, "web").status == "running"       # started again
    assert http_get(lab.services["web"].port, "/healthz")[0] == 200


def test_host_directory_only_when_the_engine_sees_that_very_directory(airgap, docker_engine, tmp_path):
    from builder.errors import BackupError
    from builder.backups.hostvolume import host_directory, tar_stream
    if os.geteuid() != 0:
        pytest.skip("the host-directory shortcut needs root")
    lab, _bundle, _target = installed_pair(airgap, docker_engine, tmp_path)
    web = container(docker_engine, lab.name, "web")
    (source,) = [m["Source"] for m in web.attrs["Mounts"] if m["Destination"] == "/data"]
    assert host_directory(docker_engine, web, "/data") == Path(source)
    assert host_directory(docker_engine, web, "/data/") == Path(source)
    assert host_directory(docker_engine, web, "/elsewhere") is None        # nothing mounted there
    made = []
    try:
        bind = tmp_path / "bind"
        bind.mkdir()
        made.append(docker_engine.containers.create(web.image.id, volumes={str(bind): {"bind": "/data"}}))
        volume = docker_engine.volumes.create(f"{lab.name}-nested")
        made.append(docker_engine.containers.create(web.image.id, volumes={volume.name: {"bind": "/data"}},
                                                    tmpfs={"/data/inner": ""}))
        bound, nested = (docker_engine.containers.get(c.id) for c in made)
        assert host_directory(docker_engine, bound, "/data") is None        # a bind mount: not a volume
        assert host_directory(docker_engine, nested, "/data") is None       # the engine's archive has /data/inner too
        # labbuild in another mount namespace sees another directory at the engine's path: never read it
        other = tmp_path / "other" / "_data"
        other.mkdir(parents=True)
        os.chmod(other, os.stat(source).st_mode & 0o7777)
        elsewhere = SimpleNamespace(id=web.id, attrs={**web.attrs, "Mounts": [
            {**m, "Source": str(other)} if m["Destination"] == "/data" else m for m in web.attrs["Mounts"]]})
        assert host_directory(docker_engine, elsewhere, "/data") is None
        os.utime(other, ns=(0, os.stat(source).st_mtime_ns))                # same mode and mtime: taken as the same
        assert host_directory(docker_engine, elsewhere, "/data") == other
    finally:
        for c in made:
            c.remove(force=True)
        docker_engine.volumes.get(f"{lab.name}-nested").remove(force=True)
    with pytest.raises(BackupError, match=r"web volume data: tar of .*gone exited 2") as caught:
        with tar_stream(tmp_path / "gone", "data", "web", "data") as pipe:
            pipe.read()
    assert (caught.value.service, caught.value.volume) == ("web", "data")


def _crafted(good: Path, out: Path, volume_tar: bytes) -> None:
    """A self-consistent backup (every hash right) whose web volume archive is ``volume_tar``."""
    import io

    from builder.backups.backupfile import BackupWriter, reserve_for

    bm = read_backup_manifest(good)
    bm.members = {}
    with tarfile.open(good) as src, open(out, "wb") as fh:
        writer = BackupWriter(fh, bm, reserve_for(8))
        writer.add("env/.env", src.extractfile(f"{TOP}/env/.env"))
        writer.add("volumes/web/data.tar", io.BytesIO(volume_tar), service="web", volume="data")
        writer.finish()


def _tar(*members: tuple[str, str, str]) -> bytes:
    from test_restore_paths import archive       # the one builder of crafted volume archives
    return archive(*members).getvalue()


@pytest.mark.parametrize("volume_tar", [
    _tar(("dir", "data", ""), ("file", "data/ok", "fine"), ("file", "etc/pwned", "planted")),
    _tar(("dir", "data", ""), ("sym", "data/l", "/etc"), ("file", "data/l/pwned", "planted")),
    b"\x01" * 4096,
], ids=["sibling-of-the-volume", "through-a-symlink", "malformed"])
def test_a_crafted_volume_archive_is_refused_before_the_volume_is_touched(airgap, docker_engine, tmp_path, capsys,
                                                                          volume_tar):
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    write_data(docker_engine, lab.name, "web")
    good = tmp_path / "good.backup.tar"
    assert cli(capsys, "backup", "--dir", str(target), "--out", str(good), "web")[0] == 0
    now = fingerprint(docker_engine, lab.name, "web")
    web_id = container(docker_engine, lab.name, "web").id
    crafted = tmp_path / "crafted.backup.tar"
    _crafted(good, crafted, volume_tar)
    code, out, _ = cli(capsys, "restore", str(crafted), "--dir", str(target))
    assert code == 1 and "volumes/web/data.tar" in out["error"], out
    assert container(docker_engine, lab.name, "web").id == web_id          # not removed, not recreated
    assert fingerprint(docker_engine, lab.name, "web") == now
    code, listing = container(docker_engine, lab.name, "web").exec_run([BB, "ls", "/etc"])
    assert b"pwned" not in listing


def test_a_backup_reports_services_that_should_run_but_do_not(airgap, docker_engine, tmp_path, capsys):
    lab, bundle, target = installed_pair(airgap, docker_engine, tmp_path)
    container(docker_engine, lab.name, "api").stop(timeout=5)      # not labbuild's doing
    code, out, err = cli(capsys, "backup", "--dir", str(target), "web")
    assert code == 0 and out["not_running"] == ["api"] and out["recovered"] == []
    assert "api not running (labbuild did not stop them)" in err
