"""Provisioning calls ([[provision]], issue 23) made by the install side against a real HTTP server
in a container, on the real engine, through a port published on 127.0.0.1.

The server is a STAND-IN for the setup endpoints of n8n, Flowise and Dify, which cannot be built
here (no image of theirs in tests/apps): a few lines of Python's http.server, run by the Python of
the tests/apps litellm image, answering as the cited upstream sources do: n8n's
POST /rest/owner/setup (200, then 400 "Instance owner already setup"), Dify's POST /console/api/init
(201 with a session cookie marked Secure, then 403 already_setup) and POST /console/api/setup (refused
without that session: 401 not_init_validated; 201; then 403 already_setup). It records every body
it decodes, so the test sees what the app would get.

Shown: the steps run in order with one cookie jar; every free-text value (quotes, backslashes,
non-ASCII) reaches the app as exactly that string (the body is made by the JSON encoder); a second
run counts the "already set up" answers as done (with a loud warning in an install dir whose
DIR/audit.log holds no record that labbuild made it: a first visitor may own it); a failure names the step and shows the answer with
every value used replaced by ***; DIR/audit.log records each run with its keys and never a value.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid

import httpx
import pytest

from apps.build import recipe_image
from builder.blueprint import load_lab
from builder.bundle.pack import manifest_provision
from builder.format.manifest import Manifest
from builder.install.provision import provision_services
from labkit import path_with_venv
from support.dockerenv import require_tool
from test_blueprint import blueprint, make_lab

pytestmark = [pytest.mark.docker]

INIT = "Lab1-init0123456789abcdefghij"
PASSWORD = 'Lab1-pw "quoted" \\ back\\slash ünï ${N8N__X} </script>'

SERVER = r'''
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
state = {"owner": None, "dify": None, "received": []}
class H(BaseHTTPRequestHandler):
    def answer(self, status, obj, cookie=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"ok": True})
        if self.path == "/received":
            return self.answer(200, state["received"])
        self.answer(404, {})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["received"].append({"path": self.path, "body": body, "cookie": self.headers.get("Cookie", "")})
        if self.path == "/rest/owner/setup":          # n8n: owner.controller.js, ownership.service.js
            if state["owner"]:
                return self.answer(400, {"code": 400, "message": "Instance owner already setup"})
            state["owner"] = body["email"]
            return self.answer(200, {"data": {"email": body["email"]}})
        if self.path == "/console/api/init":          # Dify: init_validate.py
            if state["dify"]:
                return self.answer(403, {"code": "already_setup", "status": 403})
            if body.get("password") != os.environ["INIT_PASSWORD"]:
                return self.answer(401, {"code": "init_validate_failed"})
            return self.answer(201, {"result": "success"}, "session=validated; Path=/; HttpOnly; Secure")
        if self.path == "/console/api/setup":         # Dify: setup.py
            if state["dify"]:
                return self.answer(403, {"code": "already_setup", "status": 403})
            if "session=validated" not in self.headers.get("Cookie", ""):
                return self.answer(401, {"code": "not_init_validated"})
            state["dify"] = body["email"]
            return self.answer(201, {"result": "success"})
        if self.path == "/echo":                       # an app that echoes what it was sent, refusing it
            return self.answer(422, {"message": "refused", "got": body})
        self.answer(404, {})
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
'''


def say(text: str) -> None:
    print(text, file=sys.stderr)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def python_image(docker_engine, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    return recipe_image(docker_engine, "litellm", say).ref     # its Python runs the stand-in


@pytest.fixture
def standin(docker_engine, python_image):
    """The stand-in app, published on two 127.0.0.1 ports: ``(container, [port, port])``."""
    ports = _free_ports(2)
    c = docker_engine.containers.run(
        python_image, ["-c", SERVER], entrypoint=["/opt/litellm/bin/python3"], detach=True,
        name=f"labbuild-test-provision-{uuid.uuid4().hex[:8]}", environment={"INIT_PASSWORD": INIT},
        ports={"8080/tcp": [("127.0.0.1", ports[0]), ("127.0.0.1", ports[1])]},
        labels={"org.local-ai-lab.test": "provision"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{ports[0]}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, c.logs().decode()
            time.sleep(0.3)
        yield c, ports
    finally:
        c.remove(force=True)


def _step(path: str, status: str, already: str, body: str) -> str:
    return f'''
    [[provision]]
    description = "call {path}"
    port = "http"
    path = "{path}"
    status = {status}
    {already}
    [provision.json]
    {body}
    '''


HEALTH = '\n[health]\nport = "http"\npath = "/health"\n'


def _manifest(tmp_path, ports: list[int]) -> Manifest:
    app = blueprint("app", host=ports[0], extra='''
        [secrets.ADMIN_PASSWORD]
        generate = "password"
        description = "the admin's password"
        show = true
        [secrets.INIT_PASSWORD]
        generate = "password"
        ''' + _step("/rest/owner/setup", "[200]", 'already_status = [400]\nalready_text = "Instance owner already setup"',
                    'email = "admin@local-ai-lab.localhost"\nfirstName = "Lab \\"Admin\\""\n'
                    'password = "${secret:app.ADMIN_PASSWORD}"')
        + _step("/console/api/init", "[201]", 'already_status = [403]\nalready_text = "already_setup"',
                'password = "${secret:app.INIT_PASSWORD}"')
        + _step("/console/api/setup", "[201]", 'already_status = [403]\nalready_text = "already_setup"',
                'email = "admin@local-ai-lab.localhost"\nname = "Lab Admin"\npassword = "${secret:app.ADMIN_PASSWORD}"')
        + HEALTH)
    bad = blueprint("bad", host=ports[1], depends_on='["app"]', extra=_step(
        "/echo", "[200]", "", 'password = "${secret:app.ADMIN_PASSWORD}"') + HEALTH)
    lab = load_lab(make_lab(tmp_path / "lab", {"app": app, "bad": bad}))

    def service(name: str) -> dict:
        bp = lab.services[name]
        return {"image": "x/y:1", "digest": "sha256:" + "0" * 64, "verified": True, "config_digests": {},
                "ports": [], "health": None, "depends_on": [], "volumes": [], "runbook": f"runbooks/{name}.md",
                "secrets": [f"{name.upper()}__{s.name}" for s in bp.secrets],
                "provision": [manifest_provision(bp, p).to_json() for p in bp.provision]}
    return Manifest.loads(json.dumps({
        "format": 1, "lab": "lab", "name": "lab-all-1.0.0", "version": "1.0.0", "profile": "all", "inputs": "i",
        "labbuild": "t", "offline": False, "platforms": ["linux/amd64"], "files": {},
        "services": {"app": service("app"), "bad": service("bad")}}).encode())


def test_provisioning_claims_the_admin_once_with_exact_values_and_logs_no_value(tmp_path, standin):
    container, ports = standin
    manifest = _manifest(tmp_path, ports)
    inst = tmp_path / "inst"
    inst.mkdir()
    escaped = PASSWORD.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    (inst / ".env").write_text(f'APP__ADMIN_PASSWORD="{escaped}"\nAPP__INIT_PASSWORD={INIT}\n', "utf-8")
    said: list[str] = []

    first = provision_services(inst, manifest, {"app"}, said.append)
    assert first["app"].state == "done", first["app"].detail
    got = httpx.get(f"http://127.0.0.1:{ports[0]}/received").json()
    assert [r["path"] for r in got] == ["/rest/owner/setup", "/console/api/init", "/console/api/setup"]
    assert got[0]["body"] == {"email": "admin@local-ai-lab.localhost", "firstName": 'Lab "Admin"', "password": PASSWORD}
    assert got[1]["body"] == {"password": INIT}
    assert got[2]["cookie"] == "session=validated"     # the init step's session reached the setup step
    assert got[2]["body"]["password"] == PASSWORD

    again = provision_services(inst, manifest, {"app"}, said.append)
    assert again["app"].state == "already", again["app"].detail
    assert again["app"].warning == "" and not [s for s in said if "WARNING" in s]   # labbuild made it itself

    # another install dir (no record that labbuild made it) finds the admin taken: said loudly, every time
    other = tmp_path / "other"
    other.mkdir()
    (other / ".env").write_text((inst / ".env").read_text("utf-8"), "utf-8")
    for _ in range(2):
        heard: list[str] = []
        taken = provision_services(other, manifest, {"app"}, heard.append)["app"]
        assert taken.state == "already" and "app was set up before, but not by labbuild" in taken.warning
        assert str(other / "current" / "runbooks" / "app.md") in taken.warning
        assert taken.to_json()["warning"] == taken.warning
        assert [h for h in heard if h.startswith("WARNING: app was set up before")]
    details = [json.loads(line)["detail"] for line in (other / "audit.log").read_text().splitlines()]
    assert details and all(d.startswith("app: already: ") and d.endswith("(not made by labbuild)") for d in details)

    failed = provision_services(inst, manifest, {"bad"}, said.append)["bad"]
    assert failed.state == "failed" and "step 1 (POST /echo" in failed.detail and "answered 422" in failed.detail
    assert "***" in failed.detail and PASSWORD not in failed.detail and "pw" not in failed.detail

    assert provision_services(inst, manifest, set(), said.append) == {}     # unhealthy services: not called
    audit = (inst / "audit.log").read_text("utf-8")
    entries = [json.loads(line) for line in audit.splitlines()]
    assert [(e["command"], e["outcome"], e["services"]) for e in entries] == [
        ("provision", "ok", ["app"]), ("provision", "ok", ["app"]), ("provision", "failed", ["bad"])]
    assert entries[0]["keys"] == ["APP__ADMIN_PASSWORD", "APP__INIT_PASSWORD"]
    for text in (audit, "\n".join(said)):
        assert PASSWORD not in text and INIT not in text and "Lab1-pw" not in text


def test_an_unpublished_port_is_probed_and_provisioned_at_the_containers_address(tmp_path, docker_engine,
                                                                                  python_image):
    """The front door publishes no UI port: install reaches the app at its address on the lab network."""
    from dataclasses import replace
    from functools import partial

    from builder.format.manifest import ManifestHealth
    from builder.host.engine import container_address
    from builder.host.health import Probe, probe_once

    project = f"prov{uuid.uuid4().hex[:8]}"
    net = docker_engine.networks.create(f"{project}_lab")
    address = partial(container_address, docker_engine, project)
    health = ManifestHealth(port="http", host_port=None, path="/health", scheme="http")
    probe = Probe.from_health("app", health, container_port=8080, address=partial(address, "app"))
    assert probe is not None and not probe_once(probe)[0]        # no container yet: not healthy
    c = docker_engine.containers.run(
        python_image, ["-c", SERVER], entrypoint=["/opt/litellm/bin/python3"], detach=True, network=net.name,
        name=f"{project}-app-1", environment={"INIT_PASSWORD": INIT},
        labels={"com.docker.compose.project": project, "com.docker.compose.service": "app"})
    try:
        deadline = time.monotonic() + 30
        while not (seen := probe_once(probe))[0]:
            assert time.monotonic() < deadline, (seen, c.logs().decode())
            time.sleep(0.3)
        assert c.attrs["HostConfig"]["PortBindings"] in ({}, None)    # nothing published
        manifest = _manifest(tmp_path, [1, 2])
        steps = tuple(replace(p, host_port=None, container_port=8080) for p in manifest.services["app"].provision)
        manifest.services["app"] = replace(manifest.services["app"], provision=steps)
        inst = tmp_path / "inst"
        inst.mkdir()
        (inst / ".env").write_text(f"APP__ADMIN_PASSWORD=Lab1-plain\nAPP__INIT_PASSWORD={INIT}\n", "utf-8")
        from builder.install.provision import run_steps
        assert run_steps("app", steps, {}, retry_for=0).state == "failed"        # no address: no way to it
        done = provision_services(inst, manifest, {"app"}, say, address=address)["app"]
        assert done.state == "done", done.detail
        rc, out = c.exec_run(["/opt/litellm/bin/python3", "-c",
                              "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:8080/received').read().decode())"])
        assert [r["path"] for r in json.loads(out)] == ["/rest/owner/setup", "/console/api/init", "/console/api/setup"]
    finally:
        c.remove(force=True)
        net.remove()


# --------------------------------------------------------------------------- through `labbuild install`

BB = "/bin/busybox"
# A busybox-httpd CGI standing in for an app's owner setup (n8n's answers): the first POST stores the
# body in the volume and answers 200; every later one answers 400 "Instance owner already setup".
CGI = (b"#!/bin/sh\n"
       b"if [ -e /data/owner.json ]; then printf 'HTTP/1.0 400 Bad Request\\r\\nContent-Type: application/json"
       b"\\r\\n\\r\\n{\"code\":400,\"message\":\"Instance owner already setup\"}'; exit 0; fi\n"
       b"/bin/busybox head -c \"$CONTENT_LENGTH\" > /data/owner.json\n"
       b"printf 'HTTP/1.0 200 OK\\r\\nContent-Type: application/json\\r\\n\\r\\n{\"data\":{}}'\n")
APP = '''
[secrets.LAB_ADMIN_PASSWORD]
generate = "password"
length = 24
prefix = "Lab1-"
description = "Password of admin@local-ai-lab.localhost"
show = true
rotate = false
rotate_reason = "set once by the provisioning call"

[[provision]]
description = "claim the owner"
port = "http"
path = "/cgi-bin/setup"
status = [200]
already_status = [400]
already_text = "Instance owner already setup"
[provision.json]
email = "admin@local-ai-lab.localhost"
password = "${secret:app.LAB_ADMIN_PASSWORD}"
'''


def _cgi_lab(lab, engine):
    """A one-service air-gapped lab whose app is the CGI stand-in, released with its image: (lab, bundle, port)."""
    import base64

    from labkit import Service, free_port

    lab.salt = lab.name
    prelude = (f"{BB} mkdir -p /www/cgi-bin && echo {base64.b64encode(CGI).decode()} | {BB} base64 -d "
               f"> /www/cgi-bin/setup && {BB} chmod 755 /www/cgi-bin/setup")
    port = free_port()
    lab.services = {"app": Service("app", port, volume=True, extra=APP, prelude=prelude)}
    lab.update()
    bundle = lab.release("1.0.0")
    lab.offline(engine)
    return lab, bundle, port


def test_labbuild_install_claims_the_owner_shows_the_password_once_and_reinstalls_as_already(
        airgap, docker_engine, tmp_path, capsys):
    from builder.cli import main

    lab, bundle, _ = _cgi_lab(airgap, docker_engine)
    target = tmp_path / "inst"

    code = main(["--json", "install", str(bundle), "--dir", str(target), "--timeout", "60"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["provisioned"] == {"app": {"state": "done", "detail": "/cgi-bin/setup: done"}}
    value = dict(line.split("=", 1) for line in (target / ".env").read_text().splitlines())["APP__LAB_ADMIN_PASSWORD"]
    assert value.startswith("Lab1-") and f"shown once (kept in {target / '.env'} as APP__LAB_ADMIN_PASSWORD): {value}" \
        in out.err
    (c,) = docker_engine.containers.list(filters={"label": [f"com.docker.compose.project={lab.name}",
                                                             "com.docker.compose.service=app"]})
    rc, body = c.exec_run([BB, "cat", "/data/owner.json"])
    assert rc == 0 and json.loads(body) == {"email": "admin@local-ai-lab.localhost", "password": value}

    code = main(["--json", "install", str(bundle), "--dir", str(target), "--timeout", "60"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["provisioned"]["app"]["state"] == "already"
    assert value not in out.err and value not in out.out          # shown once: only when generated
    entries = [json.loads(line) for line in (target / "audit.log").read_text().splitlines()]
    assert [(e["command"], e["keys"]) for e in entries if e["command"] == "provision"] == [
        ("provision", ["APP__LAB_ADMIN_PASSWORD"])] * 2
    assert value not in (target / "audit.log").read_text()

    # a lab whose admin labbuild did not make (an earlier release's install.sh, say): no provision record.
    # The test drops them from audit.log, which labbuild itself never rewrites.
    (target / "audit.log").write_text("".join(line + "\n" for line in (target / "audit.log").read_text().splitlines()
                                              if '"command": "provision"' not in line))
    code = main(["install", str(bundle), "--dir", str(target), "--timeout", "60"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "app: no host port until install has claimed the admin" in out.err      # unpublished again meanwhile
    assert "WARNING: app was set up before, but not by labbuild in this install dir" in out.out
    assert "publishing app now that install has claimed the admin" in out.err
    assert httpx.get(f"http://127.0.0.1:{lab.services['app'].port}/healthz", timeout=5).status_code == 200


def test_install_sh_prints_the_calls_and_the_printed_command_claims_the_owner(airgap, docker_engine, tmp_path):
    """install.sh cannot make the calls: it says so and prints curl commands; run as printed (the
    ${KEY} replaced by its DIR/.env value, as the message says), the command claims the owner."""
    import subprocess
    import tarfile

    lab, bundle, port = _cgi_lab(airgap, docker_engine)
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    with tarfile.open(bundle) as tar:
        tar.extractall(unpack, filter="data")
    (top,) = unpack.iterdir()
    target = tmp_path / "inst"
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--timeout", "60"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # until the call is made the app publishes no host port: the call goes to its container's address
    assert "NOT DONE: app publishes no host port until these calls are made" in p.stderr
    (c,) = docker_engine.containers.list(filters={"label": [f"com.docker.compose.project={lab.name}",
                                                             "com.docker.compose.service=app"]})
    assert not c.attrs["HostConfig"]["PortBindings"]
    ip = next(iter(c.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    lines = p.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  curl "))
    command = "\n".join([lines[start].strip(), lines[start + 1], lines[start + 2]])
    assert command == (
        f"curl -sS -b cookies.txt -c cookies.txt -X POST -H 'Content-Type: application/json' --data-binary @- "
        f"http://{ip}:8080/cgi-bin/setup <<'BODY'\n"
        '{"email":"admin@local-ai-lab.localhost","password":"${APP__LAB_ADMIN_PASSWORD}"}\nBODY')
    value = dict(line.split("=", 1) for line in (target / ".env").read_text().splitlines())["APP__LAB_ADMIN_PASSWORD"]
    assert value not in p.stderr and value not in p.stdout
    ran = subprocess.run(["sh", "-c", command.replace("${APP__LAB_ADMIN_PASSWORD}", value)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0 and '{"data":{}}' in ran.stdout, ran
    (c,) = docker_engine.containers.list(filters={"label": [f"com.docker.compose.project={lab.name}",
                                                             "com.docker.compose.service=app"]})
    rc, body = c.exec_run([BB, "cat", "/data/owner.json"])
    assert rc == 0 and json.loads(body) == {"email": "admin@local-ai-lab.localhost", "password": value}
    # published once the operator says it is claimed
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--timeout", "60", "--claimed", "app"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
