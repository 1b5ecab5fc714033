"""builder.operate.check: `labbuild check` reads an install through the one manifest model
and refuses what is not an install (no engine needed here; tests/e2e runs it for real)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.format.manifest import Manifest
from builder.cli import main
from builder.errors import InstallError
from builder.operate.check import installation, read_install
from builder.host.health import Probe


def _labbuild(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _service(image: str, ports=(), health=None) -> dict:
    return {"image": image, "digest": "sha256:" + "0" * 64, "verified": False, "config_digests": {},
            "ports": list(ports), "health": health, "depends_on": [], "volumes": [], "secrets": [],
            "runbook": f"runbooks/{image}.md"}


def _manifest(**services) -> dict:
    return {"format": 1, "lab": "lab-x", "name": "lab-x-base-1.2.0", "version": "1.2.0", "profile": "base",
            "inputs": "sha256:" + "1" * 64, "labbuild": "0.1.0", "offline": False, "platforms": [],
            "services": services, "files": {}}


def test_installation_reads_ports_and_health_through_the_one_manifest_model():
    data = _manifest(web=_service("r/web:1", ports=[
        {"name": "http", "container": 80, "host": 8081, "bind": "127.0.0.1", "protocol": "tcp"},
        {"name": "internal", "container": 9000, "host": None, "bind": "127.0.0.1", "protocol": "tcp"},
        {"name": "v6", "container": 81, "host": 8082, "bind": "::1", "protocol": "tcp"}],
        health={"port": "v6", "host_port": 8082, "path": "/ready", "scheme": "http", "status": [200, 204],
                "start_period": "30s", "timeout": "1m30s"}),
        worker=_service("r/worker:1"))
    manifest = Manifest.from_json(data)
    inst = installation(manifest, Path("/i/current"), Path("/i"))
    assert inst.project == "lab-x" and inst.version == "1.2.0"
    web = inst.services["web"]
    assert [(p.name, p.host, p.bind) for p in web.ports] == [("http", 8081, "127.0.0.1"), ("v6", 8082, "::1")]
    assert web.health == Probe(service="web", host_port=8082, path="/ready", scheme="http", status=(200, 204),
                               start_period=30.0, request_timeout=30.0, container_port=81, bind="::1")
    assert web.health.url == "http://[::1]:8082/ready"          # where the port is published, not 127.0.0.1
    assert inst.services["worker"].health is None and inst.services["worker"].ports == ()
    assert installation(manifest, Path("m"), Path("/i"), project="cli").project == "cli"


def _install_dir(tmp_path: Path, manifest) -> Path:
    release = tmp_path / "inst" / "releases" / "1.2.0"
    release.mkdir(parents=True)
    (release / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    (tmp_path / "inst" / "current").symlink_to("releases/1.2.0")
    return tmp_path / "inst"


@pytest.mark.parametrize("case,message", [
    ("missing", "holds no installed lab"),
    ("empty", "holds no installed lab"),
    ("no-manifest", "manifest.json is missing"),
    ("bad-json", "not valid JSON"),
    ("no-services", "malformed manifest"),
])
def test_check_refuses_what_is_not_an_install(tmp_path, capsys, case, message):
    if case == "missing":
        target = tmp_path / "nope"
    elif case == "empty":
        target = tmp_path
    elif case == "no-manifest":
        (tmp_path / "inst" / "releases" / "1").mkdir(parents=True)
        (tmp_path / "inst" / "current").symlink_to("releases/1")
        target = tmp_path / "inst"
    else:
        target = _install_dir(tmp_path, "{not json" if case == "bad-json" else {"lab": "x"})
    with pytest.raises(InstallError, match=message):
        read_install(target)
    rc, out, err = _labbuild(capsys, "--json", "check", "--dir", str(target))
    assert rc == 1 and json.loads(out)["ok"] is False and "Traceback" not in err


def test_check_rejects_an_unknown_service(tmp_path, capsys):
    target = _install_dir(tmp_path, _manifest(web=_service("r/web:1")))
    rc, _, err = _labbuild(capsys, "check", "--dir", str(target), "--service", "wbe")
    assert rc == 1 and "not installed" in err and "installed: web" in err


