"""Issue 11, runtime half, on the real engine and compose: a slow first start within its
start_period, plain `docker compose` in DIR across upgrade and rollback, doctor and install's
preflight, the GPU refusal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from builder.cli import main
from builder.errors import LabbuildError
from builder.install.apply import install_bundle, rollback
from builder.install.doctor import doctor
from labkit import Service, free_port, http_get


def _ps_services(lab, install_dir) -> dict[str, str]:
    """service -> image of `docker compose ps --format json` run plainly in DIR."""
    proc = lab.compose(install_dir, "ps", "--format", "json")
    assert proc.returncode == 0 and not proc.stderr.strip().startswith("no configuration file"), proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if not rows and proc.stdout.strip().startswith("["):
        rows = json.loads(proc.stdout)
    return {r["Service"]: r["Image"] for r in rows}


def test_slow_start_within_start_period_and_plain_compose_in_dir_across_upgrade_and_rollback(
        airgap, docker_engine, tmp_path):
    lab = airgap
    lab.services = {
        "slow": Service("slow", free_port(), start_delay=6, start_period="60s"),
        "api": Service("api", free_port(), depends_on=("slow",)),
    }
    for svc in lab.services.values():
        lab.push(svc)
    lab.write()
    lab.lock()
    v1 = lab.release("1.0.0")
    lab.services["api"].version = "2"
    lab.push(lab.services["api"])
    lab.write()
    lab.lock()
    v2 = lab.release("1.1.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    lines: list[str] = []

    # --timeout 2: slow answers only after ~6 s, within its start_period of 60 s
    result = install_bundle(v1, target, timeout=2, say=lines.append, live=False)
    assert result.ok, result.failure
    assert result.services["slow"].state == "healthy" and result.services["slow"].seconds > 2
    assert result.services["api"].state == "healthy"
    assert "cd " in "\n".join(lines) and "docker compose up -d" in "\n".join(lines)

    # plain `docker compose` in DIR: no -p/-f/--env-file, no COMPOSE_* in the environment
    assert set(_ps_services(lab, target)) == {"slow", "api"}
    logs = lab.compose(target, "logs", "--no-color", "api")
    assert logs.returncode == 0 and "no configuration file" not in logs.stderr
    out = lab.compose(target, "exec", "-T", "api", "/bin/busybox", "cat", "/www/version")
    assert out.stdout.strip() == "1", out.stderr
    secrets_before = (target / ".env").read_text()

    up = install_bundle(v2, target, timeout=20, live=False)
    assert up.ok, up.failure
    assert set(_ps_services(lab, target)) == {"slow", "api"}
    assert lab.compose(target, "exec", "-T", "api", "/bin/busybox", "cat", "/www/version").stdout.strip() == "2"
    assert "releases/1.1.0/compose.yaml" in (target / "compose.yaml").read_text()
    restarted = lab.compose(target, "restart", "api")
    assert "error" not in restarted.stderr.lower(), restarted.stderr

    back = rollback(target, timeout=20, live=False)
    assert back.ok, back.failure
    assert set(_ps_services(lab, target)) == {"slow", "api"}
    assert lab.compose(target, "exec", "-T", "api", "/bin/busybox", "cat", "/www/version").stdout.strip() == "1"
    assert http_get(lab.services["api"].port, "/version") == (200, "1\n")
    assert (target / ".env").read_text() == secrets_before   # the operator's file is never rewritten


def test_doctor_names_a_taken_port_and_passes_when_it_is_free(airgap, docker_engine, tmp_path, capsys):
    from labkit import two_service_lab
    lab = two_service_lab(airgap, multiarch_web=False)
    bundle = lab.release("1.0.0")
    port = lab.services["api"].port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        report = doctor(bundle, tmp_path / "inst")
        assert not report.ok
        (bad,) = report.failures
        assert bad.name == "port api/http" and str(port) in bad.detail
        me = Path("/proc/self/comm").read_text().strip()
        assert f"taken by {me} (pid {os.getpid()})" in bad.detail     # the process is named
        assert str(port) in bad.fix
        assert main(["--json", "doctor", str(bundle), "--dir", str(tmp_path / "inst")]) == 1
        data = json.loads(capsys.readouterr().out)
        assert data["ok"] is False and any(c["state"] == "fail" and str(port) in c["detail"] for c in data["checks"])

        # install runs the same preflight first and stops before touching anything
        with pytest.raises(LabbuildError) as exc:
            install_bundle(bundle, tmp_path / "inst", timeout=20)
        assert "nothing was changed" in exc.value.message and str(port) in exc.value.message
        assert not (tmp_path / "inst").exists()
        assert not docker_engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={lab.name}"})
    report = doctor(bundle, tmp_path / "inst")
    assert report.ok, report.render_table()
    names = {c.name for c in report.checks}
    assert {"engine", "compose", "port api/http", "port web/http", "disk", "memory", "dir"} <= names
    assert main(["doctor", str(bundle), "--dir", str(tmp_path / "inst")]) == 0
    assert "all checks passed" in capsys.readouterr().out


def test_an_upgrade_does_not_count_the_lab_s_own_ports_as_taken(airgap, docker_engine, tmp_path):
    from labkit import two_service_lab
    lab = two_service_lab(airgap, multiarch_web=False)
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    assert install_bundle(bundle, tmp_path / "inst", timeout=20).ok
    report = doctor(bundle, tmp_path / "inst")
    assert report.ok, report.render_table()
    assert any("own" in c.detail for c in report.checks if c.name.startswith("port "))
    assert install_bundle(bundle, tmp_path / "inst", timeout=20).ok   # reinstall: its preflight passes too


def test_gpu_is_refused_clearly_without_the_nvidia_runtime(airgap, docker_engine, tmp_path):
    """No GPU on this machine: --gpu must stop before anything is touched, naming the toolkit."""
    from builder.install.doctor import nvidia_present
    if nvidia_present(docker_engine)[0]:
        pytest.skip("this host has the NVIDIA runtime: the refusal cannot be shown here")
    lab = airgap
    lab.services = {"gpu": Service("gpu", free_port())}
    lab.push(lab.services["gpu"])
    lab.write()
    path = lab.root / "blueprints" / "services" / "gpu.toml"
    path.write_text(path.read_text() + '\n[resources]\nmemory = "64m"\ngpus = "all"\n')
    lab.lock()
    bundle = lab.release("1.0.0")
    with pytest.raises(LabbuildError) as exc:
        install_bundle(bundle, tmp_path / "inst", gpu=True)
    assert "gpu" in exc.value.message and "NVIDIA Container Toolkit" in exc.value.message
    assert not (tmp_path / "inst").exists()
    # without --gpu the same bundle installs (the reservation lives only in compose.gpu.yaml)
    lab.offline(docker_engine)
    result = install_bundle(bundle, tmp_path / "inst", timeout=20)
    assert result.ok, result.failure
    assert "compose.gpu.yaml" not in (tmp_path / "inst" / "compose.yaml").read_text()
    assert (tmp_path / "inst" / "current" / "compose.gpu.yaml").is_file()
    config = subprocess.run(["docker-compose", "config"], cwd=tmp_path / "inst", capture_output=True, text=True)
    assert "nvidia" not in config.stdout and "gpu" in config.stdout


def test_an_online_bundle_pulls_each_image_before_up_outside_any_health_budget(airgap, docker_engine, tmp_path):
    from builder.bundle.release import build_release
    from labkit import two_service_lab
    lab = two_service_lab(airgap, multiarch_web=False)
    online = build_release(lab.root, "1.0.0", out_dir=tmp_path / "dist", progress=False).bundle
    # the registry stays up; the engine has never held this lab's repositories by digest
    lines: list[str] = []
    result = install_bundle(online, tmp_path / "inst", timeout=20, say=lines.append, live=False)
    assert result.ok, result.failure
    text = "\n".join(lines)
    assert "pulling 2 image(s) before starting" in text
    for svc in ("web", "api"):
        assert f"pulled {lab.image_name(svc)}@{lab.services[svc].digest}" in text
    assert text.index("pulled") < text.index("docker compose up -d")
    again: list[str] = []
    assert install_bundle(online, tmp_path / "inst", timeout=20, say=again.append, live=False).ok
    assert not any("pulling" in line for line in again)   # present by digest: nothing to pull


def test_a_service_with_only_an_in_container_healthcheck_is_awaited_on_the_engines_health(
        airgap, docker_engine, tmp_path):
    """Like every shipped *-db (pg_isready in [healthcheck], no [health]): install waits until the
    engine says healthy, instead of calling it healthy the moment it starts."""
    lab = airgap
    check = ('\n[healthcheck]\ntest = ["CMD-SHELL", "test -f /tmp/ready"]\ninterval = "1s"\nretries = 30\n')
    lab.services = {"db": Service("db", free_port(), health=False, extra=check,
                                  prelude="(/bin/busybox sleep 4; /bin/busybox touch /tmp/ready) & true")}
    lab.push(lab.services["db"])
    lab.write()
    lab.lock()
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    result = install_bundle(bundle, tmp_path / "inst", timeout=60)
    db = result.services["db"]
    assert result.ok and db.state == "healthy" and "the engine says healthy" in db.detail, db
    assert db.seconds >= 2.5                                # it waited for the healthcheck, not for the start
    (c,) = docker_engine.containers.list(filters={"label": f"com.docker.compose.project={lab.name}"})
    assert c.attrs["State"]["Health"]["Status"] == "healthy"
