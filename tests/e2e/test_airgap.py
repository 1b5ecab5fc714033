"""Air-gapped install, upgrade and rollback with the real engine, registry and compose.

Every test releases image bundles while the registry runs, then stops the
registry and removes every local copy of the images: whatever runs after
that came out of the bundle, and must be exactly the locked image.
"""

from __future__ import annotations

import json
import stat

import pytest

from builder.cli import main
from builder.install.apply import install_bundle, rollback, uninstall
from builder.operate.status import status

from labkit import http_get, two_service_lab

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def running_image_ids(engine, lab: str) -> dict[str, str]:
    return {c.labels["com.docker.compose.service"]: c.attrs["Image"]
            for c in engine.containers.list(filters={"label": f"com.docker.compose.project={lab}"})}


def exec_in(engine, lab: str, service: str, cmd: str) -> str:
    (c,) = engine.containers.list(filters={"label": [f"com.docker.compose.project={lab}",
                                                      f"com.docker.compose.service={service}"]})
    code, out = c.exec_run(["/bin/sh", "-c", cmd])
    assert code == 0, out
    return out.decode()


def test_offline_install_upgrade_rollback_keep_data_and_secrets(airgap, docker_engine, tmp_path, capsys):
    lab = two_service_lab(airgap)
    v1 = lab.release("1.0.0")
    locked_v1 = {s: lab.services[s].image_id for s in lab.services}
    lab.services["web"].version = "2"          # a new image version of one service
    lab.push(lab.services["web"])
    lab.write()
    lab.lock()
    v2 = lab.release("1.1.0")
    assert v1.suffix == ".tar" and v2.suffix == ".tar"
    assert lab.services["web"].image_id != locked_v1["web"]
    lab.offline(docker_engine)
    with pytest.raises(Exception):
        docker_engine.images.get(f"{lab.image_name('web')}:1")

    target = tmp_path / "inst"
    # --- install 1.0.0 through the CLI, offline
    assert main(["--json", "install", str(v1), "--dir", str(target), "--timeout", "60"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["services"] == {"api": "healthy", "web": "healthy"}
    assert (target / "current").resolve() == target / "releases" / "1.0.0"
    assert http_get(lab.services["web"].port, "/version") == (200, "1\n")
    assert http_get(lab.services["api"].port, "/healthz")[0] == 200
    lock1 = json.loads((target / "current" / "lock.json").read_text())
    assert running_image_ids(docker_engine, lab.name) == {
        s: lock1["services"][s]["platforms"]["linux/amd64"]["config"] for s in ("api", "web")}
    # 1.0.0 holds version 1 of web, 1.1.0 will hold version 2 — two different IDs
    assert running_image_ids(docker_engine, lab.name)["web"] == locked_v1["web"]

    env = target / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    secrets_v1 = env.read_text()
    assert "WEB__API_TOKEN=" in secrets_v1 and "WEB__DB_PASSWORD=" in secrets_v1
    token = secrets_v1.split("WEB__API_TOKEN=")[1].split()[0]
    assert len(token) == 24
    assert token not in capsys.readouterr().err  # never printed
    assert exec_in(docker_engine, lab.name, "web", "echo $API_TOKEN").strip() == token
    exec_in(docker_engine, lab.name, "web", "echo precious > /data/note")

    # --- upgrade to 1.1.0 (new web image), still offline
    api_container = docker_engine.containers.list(
        filters={"label": [f"com.docker.compose.project={lab.name}", "com.docker.compose.service=api"]})[0].id
    r2 = install_bundle(v2, target, timeout=60)
    assert r2.ok, r2.failure
    assert r2.previous == "1.0.0" and (target / "previous").resolve().name == "1.0.0"
    assert http_get(lab.services["web"].port, "/version") == (200, "2\n")
    assert exec_in(docker_engine, lab.name, "web", "cat /data/note").strip() == "precious"
    assert env.read_text() == secrets_v1
    assert running_image_ids(docker_engine, lab.name)["web"] == lab.services["web"].image_id
    api_after = docker_engine.containers.list(
        filters={"label": [f"com.docker.compose.project={lab.name}", "com.docker.compose.service=api"]})[0].id
    assert api_after == api_container   # api's definition did not change: compose left it alone
    st = status(target)
    assert st.ok and st.version == "1.1.0" and all(s.image_ok for s in st.services.values())

    # --- rollback: version 1 runs again, data and secrets kept
    rb = rollback(target, timeout=60)
    assert rb.ok and rb.version == "1.0.0"
    assert http_get(lab.services["web"].port, "/version") == (200, "1\n")
    assert exec_in(docker_engine, lab.name, "web", "cat /data/note").strip() == "precious"
    assert env.read_text() == secrets_v1
    assert running_image_ids(docker_engine, lab.name)["web"] == locked_v1["web"]

    assert main(["status", "--dir", str(target)]) == 0
    assert main(["uninstall", "--dir", str(target), "--volumes"]) == 0
    assert not docker_engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={lab.name}"})
    assert not docker_engine.volumes.list(filters={"label": f"com.docker.compose.project={lab.name}"})


def test_install_sh_under_dash_offline_then_upgrade(airgap, docker_engine, tmp_path):
    import subprocess
    import tarfile

    lab = two_service_lab(airgap)
    v1 = lab.release("1.0.0")
    lab.services["web"].version = "2"
    lab.push(lab.services["web"])
    lab.write()
    lab.lock()
    v2 = lab.release("1.1.0")
    lab.offline(docker_engine)

    target = tmp_path / "inst-sh"

    def run_sh(bundle):
        unpack = tmp_path / f"unpack-{bundle.stem}"
        if not unpack.exists():
            unpack.mkdir()
            with tarfile.open(bundle) as tar:
                tar.extractall(unpack, filter="data")
        (top,) = unpack.iterdir()
        return subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--timeout", "60"],
                              capture_output=True, text=True, cwd=tmp_path)

    p = run_sh(v1)
    assert p.returncode == 0, p.stderr
    assert "image IDs match the lock: 2 of 2 services checked" in p.stderr
    for svc in ("web", "api"):
        assert f"{svc}: waiting for http://127.0.0.1:{lab.services[svc].port}/healthz" in p.stderr
    assert p.stderr.index("web: waiting") < p.stderr.index("api: waiting")   # dependency order
    assert http_get(lab.services["web"].port, "/version") == (200, "1\n")
    lock1 = json.loads((target / "current" / "lock.json").read_text())
    assert running_image_ids(docker_engine, lab.name) == {
        s: lock1["services"][s]["platforms"]["linux/amd64"]["config"] for s in ("api", "web")}
    env = target / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    secrets = env.read_text()
    token = secrets.split("WEB__API_TOKEN=")[1].split()[0]
    password = secrets.split("WEB__DB_PASSWORD=")[1].split()[0]
    assert len(token) == 24 and len(password) == 20 and password.isalnum()
    assert token not in p.stderr + p.stdout
    exec_in(docker_engine, lab.name, "web", "echo kept > /data/note")

    p = run_sh(v2)
    assert p.returncode == 0, p.stderr
    assert http_get(lab.services["web"].port, "/version") == (200, "2\n")
    assert exec_in(docker_engine, lab.name, "web", "cat /data/note").strip() == "kept"
    assert env.read_text() == secrets
    assert (target / "previous").resolve().name == "1.0.0"
    # installing 1.0.0 again with install.sh moves the links, never into a release dir
    p = run_sh(v1)
    assert p.returncode == 0, p.stderr
    assert (target / "current").resolve().name == "1.0.0" and (target / "previous").resolve().name == "1.1.0"
    assert not [x for x in (target / "releases").rglob(".*.new")]
    p = run_sh(v2)
    assert p.returncode == 0, p.stderr
    assert (target / "previous").resolve().name == "1.0.0"
    # the Python side understands an install.sh install
    st = status(target)
    assert st.ok and st.version == "1.1.0"
    rb = rollback(target, timeout=60)
    assert rb.ok and http_get(lab.services["web"].port, "/version") == (200, "1\n")
    uninstall(target, volumes=True)
