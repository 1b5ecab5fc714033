"""No window for a first visitor (issue 23): a service whose admin install claims by a [[provision]] call
publishes no host port until that call has succeeded (builder/install/unpublished.py).

Real engine, registry and compose; the apps are STAND-INS (busybox httpd with a CGI setup endpoint that
hands its "owner" to the first caller, as Flowise's /api/v1/account/register does): Flowise itself is
not among the real-application test images (tests/apps), so its own setup page is not run here.

Shown: while install runs, a "visitor" hammers the app's host port with its own claim and never gets
an answer before install's claim (made at the container's address) has won; afterwards the port is
published and the visitor's claim is refused. A claim that fails leaves its service unpublished, also
for a plain `docker compose up -d` in DIR; the next install publishes a service claimed before at once.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from builder.host.compose import UNPUBLISHED_FILE, wrapper_unpublished
from builder.install.apply import install_bundle
from labkit import Service
from support.registry import free_port

pytestmark = [pytest.mark.docker]

ADMIN = "admin@local-ai-lab.localhost"

# /www/cgi-bin/setup: the first POST owns the app (its body kept in /data/owner), later ones get 400
CGI = r"""#!/bin/sh
body=$(/bin/busybox head -c "${CONTENT_LENGTH:-0}")
if [ -e /data/owner ]; then
  printf 'HTTP/1.0 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{"message":"already setup"}'
elif [ "$FAIL" = 1 ]; then
  printf 'HTTP/1.0 422 Unprocessable\r\nContent-Type: application/json\r\n\r\n{"message":"refused"}'
else
  printf '%s' "$body" > /data/owner
  printf 'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"ok":true}'
fi
"""
PRELUDE = ("/bin/busybox mkdir -p /www/cgi-bin && /bin/busybox printf '%s' '" + CGI.replace("'", "'\\''")
           + "' > /www/cgi-bin/setup && /bin/busybox chmod 755 /www/cgi-bin/setup")

PROVISION = """
[secrets.LAB_ADMIN_PASSWORD]
generate = "password"
description = "the owner's password"
show = true
rotate = false
rotate_reason = "set once by the provisioning call"

[[provision]]
description = "claim the owner"
port = "http"
path = "/cgi-bin/setup"
status = [200]
already_status = [400]
already_text = "already setup"
[provision.json]
email = "{email}"
password = "${{secret:{name}.LAB_ADMIN_PASSWORD}}"
"""


def post(port: int, email: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("POST", "/cgi-bin/setup", body=json.dumps({"email": email}),
                     headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def owner(engine, project: str, service: str) -> str:
    (c,) = engine.containers.list(all=True, filters={"label": [f"com.docker.compose.project={project}",
                                                                f"com.docker.compose.service={service}"]})
    code, out = c.exec_run(["/bin/busybox", "cat", "/data/owner"])
    return out.decode() if code == 0 else ""


def bindings(engine, project: str, service: str) -> dict:
    (c,) = engine.containers.list(filters={"label": [f"com.docker.compose.project={project}",
                                                      f"com.docker.compose.service={service}"]})
    return c.attrs["HostConfig"]["PortBindings"] or {}


def test_a_provisioned_service_is_unpublished_until_install_has_claimed_it(airgap, docker_engine, tmp_path):
    lab = airgap
    app, bad = Service("app", free_port(), volume=True, prelude=PRELUDE), Service("bad", free_port(), volume=True,
                                                                                 prelude="export FAIL=1; " + PRELUDE)
    app.extra = PROVISION.format(email=ADMIN, name="app")
    bad.extra = PROVISION.format(email=ADMIN, name="bad")
    lab.services = {"app": app, "bad": bad}
    lab.update()
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"

    seen: list[tuple[float, int]] = []          # (time, status) of every visitor claim that got an answer
    stop = threading.Event()

    def visitor() -> None:
        while not stop.is_set():
            try:
                seen.append((time.monotonic(), post(app.port, "visitor@example.com")))
            except OSError:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=visitor, daemon=True)
    thread.start()
    said: list[str] = []
    try:
        result = install_bundle(bundle, target, timeout=120, say=said.append)
    finally:
        stop.set()
        thread.join()
    assert seen and 200 not in [s for _, s in seen], seen                            # the visitor never won
    assert json.loads(owner(docker_engine, lab.name, "app"))["email"] == ADMIN       # install did
    assert result.provisioned["app"].state == "done" and result.services["app"].state == "healthy"
    assert not result.ok and "bad: provisioning failed" in result.failure
    assert "bad publishes no host port until it succeeds" in result.failure
    assert post(app.port, "visitor@example.com") == 400
    assert any("app, bad: no host port until install has claimed" in s for s in said), said

    # app is published now; bad stays unpublished, also for an operator's plain `docker compose up -d`
    assert "8080/tcp" in bindings(docker_engine, lab.name, "app")
    assert bindings(docker_engine, lab.name, "bad") == {}
    assert wrapper_unpublished(target) == ("bad",) and "bad:" in (target / UNPUBLISHED_FILE).read_text()
    p = lab.compose(target, "up", "-d")
    assert p.returncode == 0, p.stderr
    assert bindings(docker_engine, lab.name, "bad") == {}
    with pytest.raises(OSError):
        post(bad.port, "visitor@example.com")
    from builder.operate.status import status as install_status
    status = install_status(target).services
    # still unpublished: probed at its container's address, and status says why it has no host port
    assert (status["app"].health, status["bad"].health) == ("healthy", "healthy")
    assert "no host port until install has claimed its admin" in status["bad"].detail
    assert "127.0.0.1" not in status["bad"].detail

    # the next install: app was claimed here before, so it is published from the start (no recreate)
    (c,) = docker_engine.containers.list(filters={"label": [f"com.docker.compose.project={lab.name}",
                                                             "com.docker.compose.service=app"]})
    again = install_bundle(bundle, target, timeout=120, say=said.append)
    assert again.provisioned["app"].state == "already" and not again.provisioned["app"].warning
    (c2,) = docker_engine.containers.list(filters={"label": [f"com.docker.compose.project={lab.name}",
                                                              "com.docker.compose.service=app"]})
    assert c2.id == c.id and wrapper_unpublished(target) == ("bad",)


def test_install_sh_keeps_it_unpublished_prints_the_calls_to_its_address_and_publishes_when_claimed(
        airgap, docker_engine, tmp_path):
    """The same under install.sh (dash), which makes no call itself: healthy at the container's address,
    the printed call goes there, and `install.sh --claimed app` publishes the port."""
    import subprocess
    import tarfile

    lab = airgap
    app = Service("app", free_port(), volume=True, prelude=PRELUDE)
    app.extra = PROVISION.format(email=ADMIN, name="app")
    lab.services = {"app": app}
    lab.update()
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    target = tmp_path / "inst-sh"

    def run_sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--timeout", "60", *args],
                              capture_output=True, text=True, cwd=tmp_path)

    p = run_sh()
    assert p.returncode == 0, p.stderr
    assert bindings(docker_engine, lab.name, "app") == {}
    (c,) = docker_engine.containers.list(filters={"label": [f"com.docker.compose.project={lab.name}",
                                                             "com.docker.compose.service=app"]})
    ip = next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    assert f"app: waiting for http://{ip}:8080/healthz healthy" in p.stderr
    assert "NOT DONE: app publishes no host port until these calls are made" in p.stderr
    assert f"http://{ip}:8080/cgi-bin/setup <<'BODY'" in p.stderr
    assert f"sh install.sh --dir {target} --claimed app" in p.stderr
    with pytest.raises(OSError):
        post(app.port, "visitor@example.com")
    # the operator makes the printed call (from this host, at the container's address)
    conn = http.client.HTTPConnection(ip, 8080, timeout=5)
    conn.request("POST", "/cgi-bin/setup", body=json.dumps({"email": ADMIN}))
    assert conn.getresponse().status == 200
    conn.close()
    p = run_sh("--claimed", "app")
    assert p.returncode == 0, p.stderr
    assert "app: recorded as claimed" in p.stderr and "app: its calls succeeded before" in p.stderr
    assert "8080/tcp" in bindings(docker_engine, lab.name, "app") and wrapper_unpublished(target) == ()
    assert post(app.port, "visitor@example.com") == 400
    assert json.loads(owner(docker_engine, lab.name, "app"))["email"] == ADMIN
