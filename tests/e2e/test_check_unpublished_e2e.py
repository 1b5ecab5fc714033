"""`labbuild check`, `labbuild status` (and what backup, restore and rotate await) behind the front door: a service whose health port is not
published is probed at its container's address on the lab network, as install awaits it
(``Probe.of`` and ``host.engine.service_endpoint``), and a service with only an in-container
healthcheck by the engine's health status — on the real engine, with real containers of the
tests/apps nginx image (built from Debian's nginx, the official image's contract) publishing nothing.

The control: "mute" runs the same image, but its health port (9999) has no listener, so it fails
with the connection refused at the container's address: the probe really dials there.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from apps.build import recipe_image
from builder.cli import main
from builder.host.labdir import read_manifest
from builder.host.health import await_installed
from labkit import path_with_venv
from support.dockerenv import require_tool

pytestmark = [pytest.mark.docker]


def say(text: str) -> None:
    print(text)


@pytest.fixture
def nginx_image(docker_engine, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    return recipe_image(docker_engine, "nginx", say).ref


def _service(port: dict, health: dict | None, healthcheck: bool = False) -> dict:
    return {"image": "docker.io/library/nginx:1.30.5-alpine", "digest": "sha256:" + "0" * 64, "verified": False,
            "config_digests": {}, "ports": [port], "health": health, "depends_on": [], "volumes": [], "secrets": [],
            "runbook": "runbooks/x.md", "healthcheck": healthcheck}


def _install_dir(tmp_path: Path, lab: str) -> Path:
    unpublished = {"name": "http", "container": 80, "host": None, "bind": "127.0.0.1", "protocol": "tcp"}
    services = {
        "web": _service(unpublished, {"port": "http", "host_port": None, "path": "/", "scheme": "http", "status": []}),
        "mute": _service({**unpublished, "name": "api", "container": 9999},
                         {"port": "api", "host_port": None, "path": "/", "scheme": "http", "status": []}),
        "engine": _service(unpublished, None, healthcheck=True),
    }
    manifest = {"format": 1, "lab": lab, "name": f"{lab}-base-1.0.0", "version": "1.0.0", "profile": "base",
                "inputs": "sha256:" + "1" * 64, "labbuild": "0.1.0", "offline": False, "platforms": [],
                "services": services, "files": {}}
    release = tmp_path / "inst" / "releases" / "1.0.0"
    release.mkdir(parents=True)
    (release / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "inst" / "current").symlink_to("releases/1.0.0")
    (tmp_path / "inst" / ".env").write_text("")
    return tmp_path / "inst"


def test_check_and_status_probe_unpublished_ports_at_the_containers_address(tmp_path, capsys, docker_engine,
                                                                             nginx_image) -> None:
    lab = f"chk{uuid.uuid4().hex[:8]}"
    inst = _install_dir(tmp_path, lab)
    net = docker_engine.networks.create(f"{lab}_lab")
    made = []
    try:
        for svc in ("web", "mute", "engine"):
            extra = {"healthcheck": {"test": ["CMD", "wget", "-q", "--spider", "http://127.0.0.1/"],
                                     "interval": 500_000_000, "timeout": 2_000_000_000, "retries": 3}} \
                if svc == "engine" else {}
            made.append(docker_engine.containers.run(
                nginx_image, detach=True, network=net.name, name=f"{lab}-{svc}-1",
                labels={"com.docker.compose.project": lab, "com.docker.compose.service": svc}, **extra))
        for c in made:
            c.reload()
            assert c.attrs["HostConfig"]["PortBindings"] in ({}, None)          # nothing published
        deadline = time.monotonic() + 60
        while (made[2].attrs["State"].get("Health") or {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, made[2].attrs["State"]
            time.sleep(0.5)
            made[2].reload()
        web_ip = made[0].attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]

        rc = main(["--json", "check", "--dir", str(inst)])
        out = capsys.readouterr()
        report = json.loads(out.out)
        assert "services" in report, (out.out, out.err)
        health = {n: next(c for c in s["checks"] if c["name"] == "health") for n, s in report["services"].items()}
        assert rc == 1 and not report["ok"]                       # mute fails; the others pass
        assert health["web"]["status"] == "pass" and health["web"]["detail"] == f"http://{web_ip}:80/ answered 200"
        assert health["engine"]["status"] == "pass" and health["engine"]["detail"] == "the engine says healthy"
        assert health["mute"]["status"] == "fail" and "ConnectionRefusedError" in health["mute"]["detail"]
        assert health["mute"]["detail"].startswith("http://" + made[1].attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"])

        rc = main(["--json", "status", "--dir", str(inst)])
        status = json.loads(capsys.readouterr().out)["services"]
        assert rc == 1
        assert {n: s["health"] for n, s in status.items()} == {"web": "healthy", "engine": "healthy", "mute": "unhealthy"}
        assert status["web"]["detail"] == f"http://{web_ip}:80/ answered 200"

        # what backup, restore and rotate await after starting services again: the same probes
        entries = read_manifest(inst / "current").services
        results = await_installed(docker_engine, lab, entries, {s: [] for s in entries}, 2.0)
        assert {s: r.state for s, r in results.items()} == {"web": "healthy", "engine": "healthy", "mute": "unhealthy"}
        assert results["web"].detail == f"http://{web_ip}:80/ answered 200"

        made[0].stop(timeout=2)                                   # web down: its check fails, not skipped
        rc = main(["--json", "check", "--dir", str(inst), "--service", "web"])
        checks = json.loads(capsys.readouterr().out)["services"]["web"]["checks"]
        assert rc == 1 and [c["status"] for c in checks] == ["fail", "fail"], checks
    finally:
        for c in made:
            c.remove(force=True)
        net.remove()
