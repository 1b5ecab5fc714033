"""The template's testinfra test and `labbuild check` against a real running container.

A stub service — busybox httpd in a FROM-scratch image built here with
`docker build` — runs with the labels the lab puts on its containers and a
published 127.0.0.1 port. The test rendered by cookiecutter-service must
pass while it runs and fail once it is stopped; so must `labbuild check`
against a fake install whose manifest names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cookiecutter.main import cookiecutter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.dockerenv import require_docker
from support.registry import free_port

from builder.cli import main

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "cookiecutter-service"
BIN = Path(sys.executable).parent
STUB_PORT = 8080


@pytest.fixture(scope="module")
def stub_image(tmp_path_factory):
    """A local image serving /healthz and /metrics with busybox httpd; removed afterwards."""
    require_docker()
    import docker
    client = docker.from_env(timeout=120)
    ctx = tmp_path_factory.mktemp("stub-image")
    (ctx / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (ctx / "busybox").chmod(0o755)
    (ctx / "www").mkdir()
    (ctx / "www" / "healthz").write_text("ok\n")
    (ctx / "www" / "metrics").write_text("# TYPE up gauge\nup 1\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n"
        f'CMD ["/bin/busybox", "httpd", "-f", "-p", "{STUB_PORT}", "-h", "/www"]\n')
    tag = f"labbuild-test-stub-{uuid.uuid4().hex[:10]}:1"
    client.images.build(path=str(ctx), tag=tag, rm=True, pull=False)
    yield tag
    client.images.remove(tag, force=True)
    client.close()


@pytest.fixture
def run_stub(docker_engine, stub_image):
    """Start stub containers (labels, 127.0.0.1:PORT); every one is removed afterwards."""
    started = []

    def run(labels: dict[str, str], host_port: int):
        container = docker_engine.containers.run(
            stub_image, detach=True, name=f"labbuild-stub-{uuid.uuid4().hex[:10]}", labels=labels,
            ports={f"{STUB_PORT}/tcp": ("127.0.0.1", host_port)})
        started.append(container)
        _wait_http(f"http://127.0.0.1:{host_port}/healthz")
        return container

    yield run
    for container in started:
        container.remove(force=True)


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def _render(tmp_path: Path, **answers) -> Path:
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\ncookiecutters_dir: {tmp_path / 'cc'}\n")
    return Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers,
                             output_dir=str(tmp_path / "out"), config_file=str(config)))


def _run_rendered_test(test_file: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    clean.update(env, LAB_CHECK_TIMEOUT="2", PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    return subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-o", "addopts=", "--rootdir", str(test_file.parent), str(test_file)],
                          capture_output=True, text=True, env=clean, cwd=test_file.parent, timeout=120)


def test_rendered_test_passes_while_the_service_runs_and_fails_once_stopped(tmp_path, run_stub):
    name = f"stub-{uuid.uuid4().hex[:8]}"
    port = free_port()
    project = _render(tmp_path, service_name=name, container_port=str(STUB_PORT), host_port=str(port),
                      health_path="/healthz", metrics_path="/metrics")
    test_file = project / f"test_{name.replace('-', '_')}.py"
    container = run_stub({"org.local-ai-lab.service": name}, port)

    passing = _run_rendered_test(test_file)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "4 passed" in passing.stdout

    container.stop(timeout=1)
    failing = _run_rendered_test(test_file)
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "4 failed" in failing.stdout
    assert "exist but none is running" in failing.stdout
    assert f"nothing listens on 127.0.0.1:{port}" in failing.stdout


def test_rendered_test_finds_compose_labelled_containers_and_honours_overrides(tmp_path, run_stub):
    name = f"stub-{uuid.uuid4().hex[:8]}"
    project_name = f"proj{uuid.uuid4().hex[:8]}"
    port = free_port()
    # rendered for the default host port: the override points it at the real one
    project = _render(tmp_path, service_name=name, container_port=str(STUB_PORT), health_path="/healthz")
    test_file = project / f"test_{name.replace('-', '_')}.py"
    env_id = name.upper().replace("-", "_")
    run_stub({"com.docker.compose.service": name, "com.docker.compose.project": project_name}, port)

    result = _run_rendered_test(test_file, **{f"LAB_{env_id}_PORT": str(port),
                                              "LAB_COMPOSE_PROJECT": project_name})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 1 skipped" in result.stdout

    wrong_project = _run_rendered_test(test_file, **{f"LAB_{env_id}_PORT": str(port),
                                                     "LAB_COMPOSE_PROJECT": project_name + "x"})
    assert wrong_project.returncode == 1 and "no container labelled" in wrong_project.stdout


def test_rendered_test_checks_a_container_named_by_override(tmp_path, run_stub):
    name = f"stub-{uuid.uuid4().hex[:8]}"
    port = free_port()
    project = _render(tmp_path, service_name=name, container_port=str(STUB_PORT), host_port=str(port))
    test_file = project / f"test_{name.replace('-', '_')}.py"
    container = run_stub({}, port)  # no labels at all
    env_id = name.upper().replace("-", "_")

    assert _run_rendered_test(test_file).returncode == 1  # not findable by label
    result = _run_rendered_test(test_file, **{f"LAB_{env_id}_CONTAINER": container.name})
    assert result.returncode == 0, result.stdout + result.stderr


def _fake_install(tmp_path: Path, lab: str, services: dict) -> Path:
    release = tmp_path / "inst" / "releases" / "1.0.0"
    release.mkdir(parents=True)
    manifest = {"format": 1, "lab": lab, "name": f"{lab}-base-1.0.0", "version": "1.0.0", "profile": "base",
                "inputs": "sha256:" + "0" * 64, "labbuild": "0.1.0", "offline": False, "platforms": [],
                "files": {},
                "services": {name: {"digest": "sha256:" + "0" * 64, "verified": False, "config_digests": {},
                                    "depends_on": [], "volumes": [], "secrets": [], "runbook": f"runbooks/{name}.md",
                                    **svc} for name, svc in services.items()}}
    (release / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "inst" / "current").symlink_to("releases/1.0.0")
    return tmp_path / "inst"


def test_check_passes_on_a_running_install_and_fails_once_a_service_stops(tmp_path, run_stub, capsys):
    lab = f"lab{uuid.uuid4().hex[:8]}"
    web_port, api_port = free_port(), free_port()

    def service(port: int, health: bool) -> dict:
        return {"image": "stub:1",
                "ports": [{"name": "http", "container": STUB_PORT, "host": port, "bind": "127.0.0.1",
                           "protocol": "tcp"}],
                "health": {"port": "http", "host_port": port, "path": "/healthz", "scheme": "http",
                           "status": [], "start_period": "5s", "timeout": "2s"} if health else None}

    install = _fake_install(tmp_path, lab, {"web-ui": service(web_port, True), "api": service(api_port, False)})
    web = run_stub({"com.docker.compose.project": lab, "com.docker.compose.service": "web-ui"}, web_port)
    run_stub({"com.docker.compose.project": lab, "com.docker.compose.service": "api"}, api_port)

    rc = main(["--json", "check", "--dir", str(install)])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert rc == 0, out + err
    assert report["ok"] is True and sorted(report["services"]) == ["api", "web-ui"]
    assert [c["status"] for c in report["services"]["web-ui"]["checks"]] == ["pass", "pass", "pass"]
    assert [c["status"] for c in report["services"]["api"]["checks"]] == ["pass", "pass", "skip"]

    web.stop(timeout=1)
    rc = main(["check", "--dir", str(install)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "1/2 service(s) pass" in out
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert ("web-ui", "container", "FAIL") in rows and ("web-ui", "health", "FAIL") in rows
    assert ("api", "container", "PASS") in rows

    rc = main(["--json", "check", "--dir", str(install), "--service", "api", "--project", lab + "x"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and report["services"]["api"]["checks"][0]["status"] == "fail"


@pytest.mark.slow
def test_contributor_flow_new_service_lock_release_install_test_check(tmp_path, docker_engine, registry):
    """The CONTRIBUTING.md path end to end: scaffold, pin, release, install, test, check."""
    from support.oci import busybox_httpd_image, push_image

    with registry.client() as client:
        digest = push_image(client, "lab/stub", "1.0", busybox_httpd_image(STUB_PORT))
    lab_name = f"flow{uuid.uuid4().hex[:8]}"
    lab = tmp_path / "lab"
    (lab / "blueprints" / "services").mkdir(parents=True)
    (lab / "blueprints" / "lab.toml").write_text(
        f'[lab]\nname = "{lab_name}"\ndefault_profile = "base"\nplatforms = ["linux/amd64"]\n'
        '[profiles.base]\nservices = ["web-stub"]\n')
    install_dir, port = tmp_path / "inst", free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAB_")},
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}

    def labbuild(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "labbuild"), "--root", str(lab), *args], capture_output=True,
                              text=True, env=env, timeout=180)

    try:
        steps = [("new-service", "--no-input", "service_name=web-stub", f"image_name={registry.host}/lab/stub",
                  "image_tag=1.0", f"host_port={port}", "metrics_path=/metrics"),
                 ("lock", "--update", "web-stub"),
                 ("release", "1.0.0", "--out", str(tmp_path / "dist"))]
        for step in steps:
            result = labbuild(*step)
            assert result.returncode == 0, (step, result.stderr)
        assert digest in (lab / "blueprints/services/web-stub.toml").read_text()
        bundle = tmp_path / "dist" / f"{lab_name}-base-1.0.0.tar.gz"
        result = labbuild("install", str(bundle), "--dir", str(install_dir), "--timeout", "60")
        assert result.returncode == 0, result.stderr

        generated = lab / "tests" / "services"
        shutil.copy(REPO / "tests" / "services" / "conftest.py", generated / "conftest.py")
        pytest_cmd = [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=",
                      "--rootdir", str(lab), str(generated)]
        live = {**env, "LAB_INSTALL_DIR": str(install_dir), "LAB_CHECK_TIMEOUT": "2"}
        passing = subprocess.run(pytest_cmd, capture_output=True, text=True, env=live, cwd=lab, timeout=120)
        assert passing.returncode == 0 and "4 passed" in passing.stdout, passing.stdout + passing.stderr
        check = labbuild("--json", "check", "--dir", str(install_dir))
        assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True, check.stdout + check.stderr

        docker_engine.containers.list(filters={"label": f"com.docker.compose.project={lab_name}"})[0].stop(timeout=1)
        failing = subprocess.run(pytest_cmd, capture_output=True, text=True, env=live, cwd=lab, timeout=120)
        assert failing.returncode == 1 and "4 failed" in failing.stdout, failing.stdout + failing.stderr
        assert labbuild("check", "--dir", str(install_dir)).returncode == 1
    finally:
        if install_dir.exists():
            labbuild("uninstall", "--dir", str(install_dir), "--volumes")
        for c in docker_engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={lab_name}"}):
            c.remove(force=True)
        with contextlib.suppress(Exception):  # the pull left a repo@digest reference: drop only that one
            docker_engine.images.remove(f"{registry.host}/lab/stub@{digest}")
