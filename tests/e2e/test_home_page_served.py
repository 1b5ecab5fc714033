"""The front door's home page as the phase4 release ships it, served by a real nginx.

The nginx is the real-application test image (tests/apps/recipes/nginx: Debian's nginx with the
official image's contract); the files, the nginx configuration, the mounts and the health check
are the rendered phase4 release's, taken from `docker compose config` of its compose.yaml. Then
headless Chromium reads the page from it: every service of the profile is linked, and every
runbook link answers 200 with the bundle's runbook, as text.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urljoin

import httpx
from builder.blueprint import load_lab
from builder.lockfile import Lock
from builder.render import ReleaseInput, render_text_files
from support.dockerenv import require_compose
from apps.build import recipe_image
from test_homepage import _chromium, _Page

REPO = Path(__file__).resolve().parents[2]


def _release(tmp_path: Path) -> tuple[Path, dict]:
    lab = load_lab(REPO)
    lock = Lock(lab=lab.name, inputs="home-test", platforms=lab.platforms, services={})
    files = render_text_files(ReleaseInput(lab=lab, lock=lock, profile="phase4", version="0.0.0",
                                           labbuild_version="test"))
    root = tmp_path / "releases" / "0.0.0"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    keys = [line.split("=", 1)[0] for line in files["secrets.env.example"].splitlines() if "=" in line
            and not line.startswith("#")]
    (root / "secrets.env").write_text("".join(f"{k}=x{i}\n" for i, k in enumerate(keys)))
    proc = subprocess.run([*require_compose(), "-p", "home", "-f", "compose.yaml", "--env-file", "lab.env",
                           "--env-file", "secrets.env", "config", "--format", "json"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)["services"]["home"]


def test_the_home_page_is_served_by_nginx_as_the_release_wires_it(tmp_path, docker_engine) -> None:
    root, home = _release(tmp_path)
    image = recipe_image(docker_engine, "nginx")
    access = json.loads((root / "access" / "lab.json").read_text())
    mounts = [f"{m['source']}:{m['target']}:ro" for m in home["volumes"]]
    name = f"home-test-{uuid.uuid4().hex[:8]}"
    docker_engine.containers.run(image.ref, name=name, detach=True, volumes=mounts,
                                 ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        container = docker_engine.containers.get(name)
        deadline = time.monotonic() + 30
        while True:
            container.reload()
            port = (container.ports.get("8080/tcp") or [{}])[0].get("HostPort")
            # the release's own health check, run in the container as the engine would
            health = container.exec_run(home["healthcheck"]["test"][1:])
            if port and health.exit_code == 0:
                break
            assert container.status == "running" and time.monotonic() < deadline, container.logs().decode()[-2000:]
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}/"
        with httpx.Client(timeout=10) as client:
            page = client.get(base)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in page.headers["content-security-policy"]
            for svc, entry in access["services"].items():
                assert f'href="{entry["url"]}"' in page.text, svc
                runbook = client.get(urljoin(base, entry["runbook"]))
                assert runbook.status_code == 200, svc
                assert runbook.headers["content-type"].startswith("text/plain"), runbook.headers
                assert runbook.content == (root / entry["runbook"]).read_bytes()
            assert client.get(urljoin(base, "runbooks/no-such-service.md")).status_code == 404
            assert client.get(urljoin(base, "config/authelia/configuration.yml")).status_code == 404
            assert client.get(urljoin(base, "lab.json")).status_code == 404
        # what a browser makes of it: every service and runbook link in the DOM Chromium built
        dom = _Page(_chromium(tmp_path, "--dump-dom", "--window-size=390,1600", base))
        for svc, entry in access["services"].items():
            assert entry["url"] in dom.hrefs and entry["runbook"] in dom.hrefs, svc
    finally:
        docker_engine.containers.get(name).remove(force=True)
    assert access["services"], "phase4 has web UIs behind the door"

