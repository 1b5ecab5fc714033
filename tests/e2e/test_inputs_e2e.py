"""Operator-supplied inputs on the real engine (issue 11): a missing supplied secret stops
install before anything is loaded; an optional service waits for its input without failing
the install, `status`/`check` say why, and installing again once the key exists starts it;
install.sh does the same under dash; Prometheus gets its scrape credential from DIR/.env.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from builder.cli import main
from builder.install.apply import install_bundle

from labkit import Service, free_port, http_get
from test_faults import unpacked as unpack

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KEY = "TUNNEL__TUNNEL_TOKEN"
TUNNEL = '''
[env]
MODE = "tunnel"
[metrics]
port = "http"
path = "/healthz"

[secrets.TUNNEL_TOKEN]
supplied = true
description = "Zero Trust > Networks > Tunnels: copy the token"
'''
APP = '''
[secrets.MASTER_KEY]
generate = "token"
length = 20
prefix = "sk-"

[metrics]
port = "http"
path = "/healthz"
bearer_secret = "${secret:app.MASTER_KEY}"
'''


def inputs_lab(lab, *, optional: bool):
    """app (sk- key, scraped with it) + prometheus + tunnel (supplied token; optional or not)."""
    lab.services = {
        "app": Service("app", free_port(), extra=APP),
        "prometheus": Service("prometheus", free_port()),
        "tunnel": Service("tunnel", free_port(), extra=TUNNEL),
    }
    lab.optional = ["tunnel"] if optional else []
    for svc in lab.services.values():
        lab.push(svc)
    lab.write()
    lab.lock()
    return lab


def lab_containers(engine, lab: str) -> dict[str, object]:
    return {c.labels["com.docker.compose.service"]: c
            for c in engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={lab}"})}


def exec_in(container, cmd: str) -> str:
    code, out = container.exec_run(["/bin/sh", "-c", cmd])
    assert code == 0, out
    return out.decode()


def env_values(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def images_present(engine, lab) -> list[str]:
    return [ref for ref in sorted(lab.refs) if engine.images.list(name=ref)]


def test_missing_supplied_secret_stops_install_before_anything_is_loaded(airgap, docker_engine, tmp_path, capsys):
    lab = inputs_lab(airgap, optional=False)
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    started = time.monotonic()
    assert main(["install", str(bundle), "--dir", str(target)]) == 1
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert f"{KEY} (for tunnel): Zero Trust > Networks > Tunnels: copy the token" in err
    assert str(target / ".env") in err and "nothing was installed" in err
    print(f"install stopped after {elapsed:.2f}s")   # seconds, not a health timeout (300 s)
    assert not target.exists()                         # nothing in DIR
    assert images_present(docker_engine, lab) == []    # nothing loaded
    assert lab_containers(docker_engine, lab.name) == {}

    # the operator supplies it: the same bundle installs, and the service gets exactly that value
    target.mkdir()
    (target / ".env").write_text(f"{KEY}=token-from-cloudflare\n")
    result = install_bundle(bundle, target, timeout=60)
    assert result.ok, result.failure
    assert result.services["tunnel"].state == "healthy"
    assert exec_in(lab_containers(docker_engine, lab.name)["tunnel"], "echo $TUNNEL_TOKEN").strip() == \
        "token-from-cloudflare"
    assert env_values(target / ".env")[KEY] == "token-from-cloudflare"   # never regenerated


def test_optional_service_waits_for_its_input_and_starts_once_it_is_supplied(airgap, docker_engine, tmp_path,
                                                                           capsys):
    lab = inputs_lab(airgap, optional=True)
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert main(["--json", "install", str(bundle), "--dir", str(target), "--timeout", "60"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["services"] == {"app": "healthy", "prometheus": "healthy", "tunnel": "not-started"}
    assert out["details"]["tunnel"] == f"needs {KEY}"
    found = lab_containers(docker_engine, lab.name)
    assert "tunnel" not in found and found["app"].status == "running"
    assert images_present(docker_engine, lab) == sorted(lab.refs)          # installed: its image is loaded

    # not started: no scrape target (an empty file_sd file), so no TargetDown for it
    prom = lab_containers(docker_engine, lab.name)["prometheus"]
    assert exec_in(prom, "cat /etc/prometheus/optional-targets/tunnel.json").strip() == "[]"
    assert "/etc/prometheus/optional-targets/tunnel.json" in exec_in(prom, "cat /etc/prometheus/prometheus.yml")

    # status and check: not started, and why; neither fails for that reason alone
    assert main(["status", "--dir", str(target)]) == 0
    text = capsys.readouterr().out
    assert f"tunnel: not started: needs {KEY}" in text
    assert main(["--json", "status", "--dir", str(target)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["ok"] and st["services"]["tunnel"]["health"] == "not-started"
    assert main(["check", "--dir", str(target)]) == 0
    assert f"not started: needs {KEY}" in capsys.readouterr().out

    # the sk- key reached the app and, as a file, Prometheus; its value is in no file of the bundle
    secrets = env_values(target / ".env")
    master = secrets["APP__MASTER_KEY"]
    assert master.startswith("sk-") and len(master) == 3 + 20
    prom = lab_containers(docker_engine, lab.name)["prometheus"]
    assert exec_in(prom, "cat /etc/prometheus/secrets/app") == master
    assert "credentials_file: /etc/prometheus/secrets/app" in exec_in(prom, "cat /etc/prometheus/prometheus.yml")
    assert master.encode() not in bundle.read_bytes()
    for f in (target / "current").rglob("*"):
        if f.is_file():
            assert master not in f.read_text(errors="replace"), f

    # the operator adds the token; installing the same bundle again starts the service
    with open(target / ".env", "a") as fh:
        fh.write(f"{KEY}=token-from-cloudflare\n")
    result = install_bundle(bundle, target, timeout=60)
    assert result.ok and result.services["tunnel"].state == "healthy", result.failure
    tunnel = lab_containers(docker_engine, lab.name)["tunnel"]
    assert exec_in(tunnel, "echo $TUNNEL_TOKEN").strip() == "token-from-cloudflare"
    assert http_get(lab.services["tunnel"].port, "/healthz")[0] == 200
    prom = lab_containers(docker_engine, lab.name)["prometheus"]           # once it runs, it is a target
    assert json.loads(exec_in(prom, "cat /etc/prometheus/optional-targets/tunnel.json")) == [
        {"labels": {"service": "tunnel"}, "targets": ["tunnel:8080"]}]
    assert main(["--json", "status", "--dir", str(target)]) == 0
    assert json.loads(capsys.readouterr().out)["services"]["tunnel"]["health"] == "healthy"


def dash_install(top, target, *args):
    return subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--timeout", "60", *args],
                          capture_output=True, text=True, env={**os.environ}, timeout=300)


def test_install_sh_stops_on_a_missing_supplied_secret_and_waits_for_optional_ones(airgap, docker_engine,
                                                                                 tmp_path):
    lab = inputs_lab(airgap, optional=False)
    required = lab.release("1.0.0")
    lab.optional = ["tunnel"]                 # the same lab with tunnel optional, as a new version
    lab.write()
    lab.lock()
    optional = lab.release("1.1.0")
    lab.offline(docker_engine)

    # required and missing: exit 1 naming the key and the file; no image loaded, DIR untouched
    target = tmp_path / "inst"
    top = unpack(required, tmp_path / "u1")
    started = time.monotonic()
    p = dash_install(top, target)
    print(f"install.sh stopped after {time.monotonic() - started:.2f}s (incl. sha256sum -c of the bundle)")
    assert p.returncode == 1, p.stderr
    assert f"missing: {KEY} (for tunnel): Zero Trust > Networks > Tunnels: copy the token" in p.stderr
    assert f"missing from {target}/.env; nothing was installed" in p.stderr
    assert not target.exists() and images_present(docker_engine, lab) == []

    # optional and missing: installs, leaves it stopped, exits 0
    top = unpack(optional, tmp_path / "u2")
    p = dash_install(top, target)
    assert p.returncode == 0, p.stderr
    assert f"tunnel is optional and not started: needs {KEY}" in p.stderr
    found = lab_containers(docker_engine, lab.name)
    assert "tunnel" not in found and found["app"].status == "running"
    master = env_values(target / ".env")["APP__MASTER_KEY"]
    assert master.startswith("sk-") and len(master) == 3 + 20 and set(master[3:]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert exec_in(found["prometheus"], "cat /etc/prometheus/secrets/app") == master
    assert KEY not in env_values(target / ".env")
    assert exec_in(found["prometheus"], "cat /etc/prometheus/optional-targets/tunnel.json").strip() == "[]"

    # the key arrives: the same install.sh starts it
    with open(target / ".env", "a") as fh:
        fh.write(f"{KEY}=token-from-cloudflare\n")
    p = dash_install(top, target)
    assert p.returncode == 0, p.stderr
    tunnel = lab_containers(docker_engine, lab.name)["tunnel"]
    assert tunnel.status == "running"
    assert exec_in(tunnel, "echo $TUNNEL_TOKEN").strip() == "token-from-cloudflare"
    prom = lab_containers(docker_engine, lab.name)["prometheus"]     # install.sh writes what install writes
    assert json.loads(exec_in(prom, "cat /etc/prometheus/optional-targets/tunnel.json")) == [
        {"labels": {"service": "tunnel"}, "targets": ["tunnel:8080"]}]
