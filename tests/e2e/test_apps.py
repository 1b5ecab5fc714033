"""The catalog's data services, run for real: shipped blueprints with only their image replaced
by a local build of the real application (tests/apps), released as an image bundle and
installed with no registry left to pull from.

- litellm-db (PostgreSQL): healthy by the blueprint's own check (pg_isready), password auth
  as the official image sets it up, and its rows through `labbuild backup` (the blueprint's
  pg_dumpall), `uninstall --volumes`, `install` and `labbuild restore` (psql). Through an upgrade of
  LiteLLM and `rollback --restore-data`, and the restore over a server with sessions open:
  tests/e2e/test_apps_upgrade.py.
- langfuse-redis (Redis): healthy by its `redis-cli ... ping | grep -q PONG` as user redis,
  its password required, its AOF kept across a restart.
- node-red (Node-RED from npm): healthy by the shipped [health] probe through its published
  port and by the image's own HEALTHCHECK (node /healthcheck.js); its admin API refuses anonymous
  reads and deploys, and a flow deployed as admin (the password generated at install) is kept in
  /data across a restart. Its OpenID Connect sign-in: tests/e2e/test_node_red_sign_in.py.
- litellm (LiteLLM proxy from PyPI): started with the shipped command, config.yaml and env but no
  database (its Prisma engines cannot be fetched here), answers [health], guards /v1/models and
  [metrics] with the master key.
  Beside a test lab whose "ollama" is the Ollama protocol stand-in (tests/apps/recipes/ollama-standin:
  canned answers, not Ollama), it routes a chat completion for ollama/qwen2.5:0.5b to the stand-in,
  whose canned answer comes back.
- open-webui (Open WebUI from PyPI, CPU torch): beside the Ollama stand-in, its generated admin signs in
  and lists the stand-in's models, sign-up refused: tests/e2e/test_open_webui.py; its OpenID Connect
  role mapping: tests/e2e/test_open_webui_sign_in.py.
- jupyter (JupyterLab from PyPI): healthy by the shipped [health] probe and by the image's own
  HEALTHCHECK, its [metrics] open, its token required, a notebook in work/ kept across a restart.
- n8n (from npm), in the Prometheus test's profile: healthy by the shipped [health] (/healthz/readiness),
  as user node under tini, its [metrics] scraped up, no alert firing.
- dify (the gateway, nginx from Debian): the shipped default.conf loads in the real nginx and sends
  each route to its upstream (named by nginx's own error log; no Dify runs here).
- every image: the user and the tools of the official image (no curl where it has none),
  and Prometheus and node-exporter answer their [health] and [metrics] paths when started
  with the shipped blueprints' commands.

The first run builds the base and the images (about ten minutes: Debian's mirror, npm, PyPI; n8n
about seventeen more); later runs find them in the engine (tests/apps/base.py) and push them to the
test registry.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from apps.base import ensure_base
from apps.build import ensure_image, recipe_image
from apps.images import REPO, build_and_push
from apps.recipe import RECIPES
from apps.testlab import lock_services, make_test_lab
from builder.blueprint import load_lab
from builder.bundle.release import build_release
from builder.cli import main
from builder.install.apply import install_bundle, uninstall

from labkit import path_with_venv
from support.dockerenv import require_tool

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROFILE = "apps-test"


def say(text: str) -> None:
    print(text, file=sys.stderr)


@dataclass
class AppsLab:
    """One service of the shipped lab with its image built here, released and installed offline."""

    engine: object
    registry: object
    tmp: Path
    project: str = field(default_factory=lambda: f"apps-{uuid.uuid4().hex[:10]}")
    target: Path | None = None
    bundle: Path | None = None
    refs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    health: dict = field(default_factory=dict)     # service -> the install's HealthResult

    def install(self, app: str, service: str) -> None:
        start = time.monotonic()
        built = build_and_push(self.registry.host, only=[app], engine=self.engine, log=say,
                               storage=self.registry.storage)
        assert service in built.images, built.unbuilt
        self.timings["build+push"] = time.monotonic() - start
        ref = built.images[service]
        self.refs.append(ref.split("@")[0])           # the tag docker load gives it
        root = make_test_lab(self.tmp / "lab", {service: ref}, lab_name=self.project, profile=(PROFILE, [service]))
        lock_services(root, [service])
        self.bundle = Path(build_release(root, "1.0.0", profile=PROFILE, with_images=True,
                                         out_dir=self.tmp / "dist", progress=False).bundle)
        self.registry.stop()                           # offline from here: the bundle is the only source
        wait_ports_free(root, [service])
        self.target = self.tmp / "inst"
        start = time.monotonic()
        installed = install_bundle(self.bundle, self.target, timeout=120)
        assert installed.ok, installed.failure
        self.health = installed.services
        if load_lab(REPO).services[service].healthcheck:
            self.wait_healthy(service)       # else the install awaited the host-side [health] probe
        self.timings["install"] = time.monotonic() - start

    def container(self, service: str):
        (c,) = self.engine.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]})
        return c

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        """Until the engine reports the blueprint's own [healthcheck] healthy."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.container(service)
            health = c.attrs["State"].get("Health") or {}
            if health.get("Status") == "healthy":
                return
            if time.monotonic() > deadline or c.status == "exited":
                log = (health.get("Log") or [{}])[-1].get("Output", "")
                raise AssertionError(f"{service} is {c.status}/{health.get('Status')}: {log}\n"
                                     + c.logs(tail=30).decode(errors="replace"))
            time.sleep(1)

    def run(self, service: str, *argv: str, env: dict | None = None) -> tuple[int, str]:
        code, out = self.container(service).exec_run(list(argv), environment=env)
        return code, out.decode(errors="replace")

    def env(self, key: str) -> str:
        from builder.host.dotenv import env_values
        return env_values((self.target / ".env").read_text())[key]

    def cleanup(self) -> None:
        if self.target is not None:
            with contextlib.suppress(Exception):
                uninstall(self.target, volumes=True)
        label = {"label": f"com.docker.compose.project={self.project}"}
        for c in self.engine.containers.list(all=True, filters=label):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        for v in self.engine.volumes.list(filters=label):
            with contextlib.suppress(Exception):
                v.remove(force=True)
        for n in self.engine.networks.list(filters=label):
            with contextlib.suppress(Exception):
                n.remove()
        for ref in self.refs:                          # the cached build keeps its own tag
            with contextlib.suppress(Exception):
                self.engine.images.remove(ref, noprune=True)


def wait_ports_free(root: Path, services: list[str], timeout: float = 90) -> None:
    """Until the shipped host ports of ``services`` can be bound on 127.0.0.1: a container of an
    earlier test releases its docker-proxy a little after it is removed."""
    import socket
    lab_ = load_lab(root)
    ports = [p.host for s in services for p in lab_.services[s].ports if p.host]
    _lock_ports(ports)
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"127.0.0.1:{port} stays taken (another process holds it)") from None
            time.sleep(1)


_HELD: list = []      # the port locks this test holds (taken by wait_ports_free, released by shipped_ports)


@pytest.fixture
def shipped_ports():
    """The shipped blueprints publish fixed host ports (9090, 9100, 1880, 8888, ...), which two installs at
    once would fight over: a test holds one lock per host port its lab publishes (``wait_ports_free``
    takes them, whatever xdist worker runs it) until it ends, so tests of other services run beside it."""
    try:
        yield
    finally:
        while _HELD:
            _HELD.pop().close()        # closing the file releases its flock


def _lock_ports(ports: list[int], timeout: float = 1200) -> None:
    """One exclusive flock per port, in ascending order (no two tests wait on each other in a circle)."""
    import fcntl
    deadline = time.monotonic() + timeout
    for port in sorted(set(ports)):
        fh = open(Path(tempfile.gettempdir()) / f"labbuild-tests-port-{port}.lock", "w")
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    fh.close()
                    raise AssertionError(f"127.0.0.1:{port} stayed locked by another test for {timeout:.0f} s") from None
                time.sleep(0.5)
        _HELD.append(fh)


@pytest.fixture
def apps_lab(docker_engine, registry, tmp_path, monkeypatch, shipped_ports):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    require_tool("debootstrap")          # the base image's root filesystem (tests/apps/base.py)
    lab = AppsLab(docker_engine, registry, tmp_path)
    yield lab
    say(f"timings: {json.dumps({k: round(v, 1) for k, v in lab.timings.items()})}")
    lab.cleanup()


def cli(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


DB = "litellm-db"
SPEND = "SELECT count(*), sum(usd), md5(string_agg(key, ',' ORDER BY id)) FROM spend"


def psql(lab: AppsLab, sql: str, db: str = "postgres") -> str:
    """``psql`` inside the container, as the image lets a local user in (trust on the socket)."""
    code, out = lab.run(DB, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db, "-At", "-c", sql)
    assert code == 0, out
    return out.strip()


def password_login(lab: AppsLab, password: str) -> tuple[int, str]:
    """Log in over TCP on the container's own address: the `host all all all scram-sha-256` rule."""
    return lab.run(DB, "sh", "-c", 'psql -X -At -h "$(hostname -i)" -U postgres -d postgres -c "select current_user"',
                   env={"PGPASSWORD": password})


def test_the_real_postgres_of_litellm_db_keeps_its_rows_through_backup_uninstall_install_restore(apps_lab, capsys):
    lab = apps_lab
    lab.install("postgres", DB)
    assert lab.container(DB).attrs["Config"]["Healthcheck"]["Test"] == [
        "CMD", "pg_isready", "-U", "postgres", "-d", "postgres"]
    assert psql(lab, "show server_version").startswith("15.")
    assert password_login(lab, lab.env("LITELLM_DB__POSTGRES_PASSWORD")) == (0, "postgres\n")
    assert password_login(lab, "wrong")[0] != 0

    psql(lab, "CREATE DATABASE litellm")
    psql(lab, "CREATE TABLE spend (id serial PRIMARY KEY, key text, usd numeric);"
              "INSERT INTO spend (key, usd) SELECT 'sk-' || g, g * 0.25 FROM generate_series(1, 500) g", db="litellm")
    psql(lab, "CREATE ROLE reader LOGIN PASSWORD 'r'")
    rows = psql(lab, SPEND, db="litellm")
    assert rows.startswith("500|31312.50|")

    start = time.monotonic()
    code, out, err = cli(capsys, "backup", "--dir", str(lab.target), DB)
    assert code == 0, err
    assert out["services"] == [DB] and out["restarted"] == {}      # exec: dumped while running
    backup = lab.tmp / "litellm-db.backup.tar"
    Path(out["path"]).replace(backup)
    uninstall(lab.target, volumes=True)
    assert not lab.engine.volumes.list(filters={"label": f"com.docker.compose.project={lab.project}"})

    assert install_bundle(lab.bundle, lab.target, timeout=120).ok
    lab.wait_healthy(DB)
    assert psql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'litellm'") == "0"

    code, out, err = cli(capsys, "restore", str(backup), "--dir", str(lab.target), "--secrets", DB)
    assert code == 0, err
    lab.wait_healthy(DB)
    lab.timings["backup+uninstall+install+restore"] = time.monotonic() - start
    assert psql(lab, SPEND, db="litellm") == rows
    assert psql(lab, "SELECT rolname FROM pg_roles WHERE rolname = 'reader'") == "reader"
    # --secrets brought the backup's password back: it matches the restored role again
    assert password_login(lab, lab.env("LITELLM_DB__POSTGRES_PASSWORD"))[0] == 0


REDIS = "langfuse-redis"


def test_the_real_redis_of_langfuse_redis_is_healthy_by_its_shipped_check_and_keeps_its_aof(apps_lab):
    lab = apps_lab
    lab.install("redis", REDIS)
    c = lab.container(REDIS)
    assert c.attrs["Config"]["User"] == "redis"
    cli_ = 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning'
    assert lab.run(REDIS, "sh", "-c", f"{cli_} set lab kept && {cli_} config get appendonly") == (0, "OK\nappendonly\nyes\n")
    code, out = lab.run(REDIS, "redis-cli", "get", "lab")
    assert "NOAUTH" in out                                   # --requirepass holds
    c.restart()
    lab.wait_healthy(REDIS)
    assert lab.run(REDIS, "sh", "-c", f"{cli_} get lab") == (0, "kept\n")
    code, out = lab.run(REDIS, "sh", "-c", "id -u; ls /data/appendonlydir")
    assert code == 0 and out.startswith("999\n") and "appendonly.aof" in out


NODE_RED = "node-red"
# A flow deployed through the admin API: GET /lab answers "kept" (http in -> change -> http response).
LAB_FLOW = [
    {"id": "lab-tab", "type": "tab", "label": "lab"},
    {"id": "lab-in", "type": "http in", "z": "lab-tab", "url": "/lab", "method": "get", "wires": [["lab-set"]]},
    {"id": "lab-set", "type": "change", "z": "lab-tab", "wires": [["lab-out"]],
     "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": "kept", "tot": "str"}]},
    {"id": "lab-out", "type": "http response", "z": "lab-tab", "wires": []},
]


def test_the_real_node_red_passes_its_shipped_health_check_and_keeps_a_deployed_flow_in_data(apps_lab, capsys):
    """And its editor is never open: the admin API refuses anonymous reads and deploys; the user
    admin signs in with the password generated at install (DIR/.env) and deploys; after
    `labbuild secrets rotate` only the new password signs in."""
    lab = apps_lab
    lab.install("node-red", NODE_RED)
    bp = load_lab(REPO).services[NODE_RED]
    assert lab.health[NODE_RED].state == "healthy"        # [health]: GET / on the published 1880
    assert bp.healthcheck is None                         # the image's own HEALTHCHECK
    c = lab.container(NODE_RED)
    assert c.attrs["Config"]["User"] == "node-red"
    assert c.attrs["Config"]["Cmd"] == list(bp.command)   # --settings: the shipped settings.js
    assert lab.run(NODE_RED, "node", "/healthcheck.js") == (0, "")    # the image's HEALTHCHECK
    api = f"http://127.0.0.1:{bp.port('http').host}"
    full = {"Node-RED-Deployment-Type": "full"}
    assert httpx.get(f"{api}/auth/login").json()["type"] == "credentials"
    assert httpx.get(f"{api}/flows").status_code == 401
    assert httpx.post(f"{api}/flows", headers=full, json=LAB_FLOW).status_code == 401
    password = lab.env("NODE_RED__NODE_RED_ADMIN_PASSWORD")
    assert len(password) == 24 and password not in c.logs().decode(errors="replace")

    def token(pw: str) -> httpx.Response:          # the admin API's password grant, as the editor asks
        return httpx.post(f"{api}/auth/token", data={"client_id": "node-red-admin", "grant_type": "password",
                                                     "scope": "*", "username": "admin", "password": pw})
    assert token(password[:-1] + ("x" if password[-1] != "x" else "y")).status_code in (401, 403)
    answer = token(password)
    assert answer.status_code == 200, answer.text
    bearer = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    assert httpx.post(f"{api}/flows", headers=full | bearer, json=LAB_FLOW).status_code in (200, 204)
    assert lab.run(NODE_RED, "curl", "-fsS", "http://127.0.0.1:1880/lab") == (0, "kept")
    c.restart()
    deadline = time.monotonic() + 30
    while lab.run(NODE_RED, "node", "/healthcheck.js")[0] != 0:
        assert time.monotonic() < deadline, c.logs(tail=30).decode(errors="replace")
        time.sleep(0.5)
    assert lab.run(NODE_RED, "curl", "-fsS", "http://127.0.0.1:1880/lab") == (0, "kept")    # from /data
    assert httpx.get(f"{api}/flows", headers=bearer).status_code == 200     # tokens are kept in /data too
    code, out = lab.run(NODE_RED, "sh", "-c", "id -u; ls -a /data")
    assert code == 0 and out.startswith("1000\n") and "flows.json" in out, out
    assert "settings.js" not in out.split()      # Node-RED reads the shipped one; it copies none to /data

    # rotate = true: the shipped settings.js reads the password at every start (no holder)
    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(lab.target), "NODE_RED__NODE_RED_ADMIN_PASSWORD")
    assert code == 0, (out, err)
    rotated = lab.env("NODE_RED__NODE_RED_ADMIN_PASSWORD")
    assert rotated != password
    assert token(rotated).status_code == 200 and token(password).status_code in (401, 403)


JUPYTER = "jupyter"
# A notebook saved through the contents API into work/ (the volume), as the image's own Python does it.
SAVE_NOTEBOOK = """
import json, os, urllib.request
body = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
req = urllib.request.Request("http://127.0.0.1:8888/api/contents/work/kept.ipynb", method="PUT",
                             data=json.dumps(body).encode(), headers={
                                 "Authorization": "token " + os.environ["JUPYTER_TOKEN"],
                                 "Content-Type": "application/json"})
print(urllib.request.urlopen(req).status)
"""


def test_the_real_jupyterlab_passes_its_shipped_health_check_and_keeps_work_across_a_restart(apps_lab):
    lab = apps_lab
    lab.install("base-notebook", JUPYTER)
    bp = load_lab(REPO).services[JUPYTER]
    assert lab.health[JUPYTER].state == "healthy"          # [health]: GET /api on the published 8888
    c = lab.container(JUPYTER)
    assert c.attrs["Config"]["User"] == "1000"
    assert c.attrs["Config"]["Cmd"] == list(bp.command)  # start-notebook.py under tini and start.sh
    assert lab.run(JUPYTER, "/etc/jupyter/docker_healthcheck.py")[0] == 0      # the image's HEALTHCHECK
    wget = ["wget", "-q", "-O", "-"]
    code, out = lab.run(JUPYTER, *wget, f"http://127.0.0.1:8888{bp.metrics.path}")
    assert code == 0 and "# TYPE" in out                  # --ServerApp.authenticate_prometheus=False
    assert lab.run(JUPYTER, *wget, "http://127.0.0.1:8888/api/contents/work")[0] != 0    # the token holds
    assert lab.run(JUPYTER, "python", "-c", SAVE_NOTEBOOK) == (0, "201\n")
    c.restart()
    deadline = time.monotonic() + 30
    while lab.run(JUPYTER, "/etc/jupyter/docker_healthcheck.py")[0] != 0:
        assert time.monotonic() < deadline, c.logs(tail=30).decode(errors="replace")
        time.sleep(0.5)
    code, out = lab.run(JUPYTER, "sh", "-c", 'id -u; id -g; ls -n work; wget -q -O - '
                        '--header "Authorization: token $JUPYTER_TOKEN" http://127.0.0.1:8888/api/contents/work')
    assert code == 0 and out.startswith("1000\n100\n") and '"name": "kept.ipynb"' in out, out


# Per image: the user it runs as, tools its official image has, and tools it has not.
TOOLS = {
    "postgres": ("0", ["bash", "psql", "pg_dumpall", "pg_isready", "gosu", "initdb", "locale"], ["curl", "wget"]),
    "redis": ("0", ["sh", "wget", "nc", "grep", "redis-cli", "redis-server", "setpriv"], ["curl", "bash", "apt-get"]),
    "prometheus": ("65534", ["sh", "wget", "promtool"], ["curl", "bash", "apt-get"]),
    "node-exporter": ("65534", ["sh", "wget"], ["curl", "bash", "apt-get"]),
    "base-notebook": ("1000", ["bash", "tini", "start.sh", "start-notebook.py", "jupyter", "python", "pip",
                               "wget", "sudo", "pandoc", "fix-permissions"], ["curl"]),
    "litellm": ("0", ["bash", "python3", "pip", "litellm", "wget", "openssl"], ["curl"]),
    "node-red": ("1000", ["bash", "node", "npm", "npx", "yarn", "curl", "wget", "git", "ssh", "ping", "openssl"],
                 ["sudo"]),
    "n8n": ("1000", ["sh", "node", "npm", "n8n", "tini", "git", "ssh", "openssl", "gm", "jq", "wget"], ["curl"]),
    # the HEALTHCHECK's curl and jq; python:3.11-slim-bookworm and upstream's apt step bring no wget
    "open-webui": ("0", ["bash", "python", "pip", "uvicorn", "curl", "jq", "pandoc", "nc", "ffmpeg"], ["wget", "sudo"]),
    "ollama-standin": ("0", ["ollama", "python3"], ["curl", "wget"]),
    "nginx": ("0", ["sh", "wget", "nginx"], ["curl", "bash", "apt-get"]),     # ollama/ollama's: ubuntu, ca-certificates
}


@pytest.fixture
def local_images(docker_engine, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    base = ensure_base(docker_engine, say)
    return {r.name: ensure_image(docker_engine, r, base, say) for r in RECIPES}


def test_each_image_has_the_user_and_tools_of_its_official_image(docker_engine, local_images):
    assert set(TOOLS) == {r.name for r in RECIPES}
    for app, (uid, present, absent) in TOOLS.items():
        script = ("id -u; for t in " + " ".join(present + absent) +
                  '; do command -v "$t" >/dev/null && echo "has $t" || echo "lacks $t"; done')
        out = docker_engine.containers.run(local_images[app].ref, entrypoint=["/bin/sh", "-c", script],
                                           remove=True).decode()
        assert out.splitlines() == [uid] + [f"has {t}" for t in present] + [f"lacks {t}" for t in absent], app


@pytest.mark.parametrize("service", ["prometheus", "node-exporter"])
def test_prometheus_and_node_exporter_answer_health_and_metrics_with_the_shipped_command(
        docker_engine, local_images, service):
    bp = load_lab(REPO).services[service]
    port = bp.port(bp.health.port).container
    volumes = {b.source: {"bind": b.target, "mode": "ro" if b.read_only else "rw"} for b in bp.binds}
    c = docker_engine.containers.run(local_images[service].ref, command=list(bp.command), volumes=volumes,
                                     detach=True, labels={"org.local-ai-lab.test": "apps"})
    try:
        paths = (bp.health.path, bp.metrics.path)
        deadline = time.monotonic() + 30
        while True:                      # busybox wget inside the container: its own tools, no published port
            code, out = c.exec_run(["sh", "-c", " && ".join(f"wget -q -O /dev/null http://127.0.0.1:{port}{p}"
                                                            for p in paths)])
            if code == 0:
                break
            assert time.monotonic() < deadline, out.decode() + c.logs(tail=20).decode()
            time.sleep(0.5)
        code, out = c.exec_run(["wget", "-q", "-O", "-", f"http://127.0.0.1:{port}{bp.metrics.path}"])
        assert code == 0 and ("prometheus_tsdb_head_series" in out.decode() if service == "prometheus"
                              else "node_filesystem_avail_bytes" in out.decode())
    finally:
        c.remove(force=True)


KEY = "LITELLM_DB__POSTGRES_PASSWORD"


def test_rotating_the_real_postgres_password_of_litellm_db(apps_lab, capsys):
    """Issue 24 on the real PostgreSQL: the shipped holder (ALTER ROLE through psql's \\getenv)
    changes the password in the database, DIR/.env follows, the old one no longer logs in; a
    holder that fails leaves the old password working and .env byte for byte; no value in audit.log."""
    lab = apps_lab
    lab.install("postgres", DB)
    old = lab.env(KEY)
    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(lab.target), KEY)
    assert code == 0, err
    new = lab.env(KEY)
    assert new != old and len(new) == len(old)
    lab.wait_healthy(DB)
    assert password_login(lab, new) == (0, "postgres\n")
    assert password_login(lab, old)[0] != 0

    # the holder's ALTER ROLE fails (a read-only default for the role): nothing changes anywhere
    psql(lab, "ALTER ROLE postgres SET default_transaction_read_only = on")
    env_before = (lab.target / ".env").read_bytes()
    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(lab.target), KEY)
    assert code == 1 and "read-only transaction" in (out.get("error", "") + err), (out, err)
    assert (lab.target / ".env").read_bytes() == env_before
    assert password_login(lab, new) == (0, "postgres\n")
    code, out = lab.run(DB, "psql", "-X", "-U", "postgres", "-d", "postgres",
                        "-c", "ALTER ROLE postgres RESET default_transaction_read_only",
                        env={"PGOPTIONS": "-c default_transaction_read_only=off"})
    assert code == 0, out

    audit = (lab.target / "audit.log").read_text()
    assert old not in audit and new not in audit and KEY in audit


def _get_json(url: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as resp:      # 127.0.0.1 only: the lab's own ports
        return json.loads(resp.read())


N8N = "n8n"


@pytest.mark.parametrize("optional", [False, True], ids=["static-with-n8n", "optional-file-sd"])
def test_the_real_prometheus_scrapes_every_started_service_and_fires_no_alert(apps_lab, optional):
    """prometheus and node-exporter from the shipped blueprints, with the real Prometheus (Debian's)
    reading the bundle's rendered prometheus.yml and the shipped rules: every target up == 1 and
    no alert firing or pending on a healthy lab (checked after two evaluation rounds; the rules'
    `for:` windows are not shortened). ``optional``: node-exporter is an optional service of the
    profile, so its target comes from the file_sd file install writes once it runs. Without it, the
    profile also holds the real n8n (from npm): healthy by the shipped [health] (GET /healthz/readiness on the
    published 5678), its [metrics] scraped up, as the official image's user, without curl."""
    lab = apps_lab
    services = ["prometheus", "node-exporter"] + ([] if optional else [N8N])
    built = build_and_push(lab.registry.host, only=services, engine=lab.engine, log=say,
                           storage=lab.registry.storage)
    assert set(services) <= set(built.images), built.unbuilt
    lab.refs += [built.images[s].split("@")[0] for s in services]
    root = make_test_lab(lab.tmp / "lab", {s: built.images[s] for s in services}, lab_name=lab.project,
                         profile=(PROFILE, ["prometheus"] if optional else services),
                         optional=["node-exporter"] if optional else ())
    lock_services(root, services)
    lab.bundle = Path(build_release(root, "1.0.0", profile=PROFILE, with_images=True, out_dir=lab.tmp / "dist",
                                    progress=False).bundle)
    lab.registry.stop()
    wait_ports_free(root, services)
    lab.target = lab.tmp / "inst"
    start = time.monotonic()
    result = install_bundle(lab.bundle, lab.target, timeout=180)
    assert result.ok, result.failure
    lab.timings["install"] = time.monotonic() - start
    jobs = {s: "up" for s in services}
    if not optional:
        assert result.services[N8N].state == "healthy"            # [health]: GET /healthz/readiness on 5678
        c = lab.container(N8N)
        assert c.attrs["Config"]["User"] == "node" and c.attrs["Config"]["Entrypoint"] == [
            "tini", "--", "/docker-entrypoint.sh"]
        # healthy means ready: an owner-setup call reaches n8n itself (an empty body: 400), not the "n8n is
        # starting up" placeholder that answers 200 to anything until then (the owner itself comes from env:
        # tests/e2e/n8n_owner.py, checked below)
        code, out = c.exec_run(["wget", "-S", "-O", "-", "--header", "Content-Type: application/json",
                                "--post-data", "{}", "http://127.0.0.1:5678/rest/owner/setup"])
        assert "HTTP/1.1 400" in out.decode() and "starting up" not in out.decode(), out.decode()
        code, out = c.exec_run(["sh", "-c", "id -u; ls -a /home/node/.n8n; command -v curl || echo no curl"])
        assert code == 0 and out.decode().startswith("1000\n") and "config" in out.decode() \
            and out.decode().endswith("no curl\n"), out.decode()
    api = f"http://127.0.0.1:{load_lab(root).services['prometheus'].port('http').host}/api/v1"
    deadline = time.monotonic() + 90
    while True:
        targets = _get_json(f"{api}/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health == jobs or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == jobs, targets
    from_file = [t for t in targets if "__meta_filepath" in t["discoveredLabels"]]
    assert [t["labels"]["job"] for t in from_file] == (["node-exporter"] if optional else [])
    groups = _get_json(f"{api}/rules")["data"]["groups"]
    assert [g for g in groups if g["rules"]], "the shipped rules are loaded"
    time.sleep(35)                                             # two evaluation rounds (15 s)
    alerts = _get_json(f"{api}/alerts")["data"]["alerts"]
    assert alerts == [], alerts
    if not optional:        # the same install of the real n8n: its owner from env, no window (issue 23)
        from n8n_owner import check_n8n_owner
        check_n8n_owner(lab)


DIFY = "dify"
# path asked of the gateway -> the upstream (service, port) the shipped default.conf sends it to
DIFY_ROUTES = {
    "/health": ("dify-api", 5001), "/console/api/setup": ("dify-api", 5001), "/api/meta": ("dify-api", 5001),
    "/v1/chat-messages": ("dify-api", 5001), "/files/x": ("dify-api", 5001), "/mcp/server": ("dify-api", 5001),
    "/triggers/x": ("dify-api", 5001), "/socket.io/?EIO=4": ("dify-api", 5001),
    "/e/hook": ("dify-plugin-daemon", 5002), "/apps": ("dify-web", 3000),
}


def test_the_real_nginx_loads_the_shipped_dify_gateway_and_sends_each_route_to_its_upstream(
        docker_engine, local_images, tmp_path):
    """The shipped dify gateway (its default.conf, its image's command) in the real nginx (Debian's),
    on a network of this test where dify-api, dify-web and dify-plugin-daemon are the names of three
    idle containers: no Dify runs here and nothing listens, so each request fails with 502, and
    nginx's own error log names the upstream it tried (its address and port). nginx resolves every
    upstream name at start, so the config loads only with all three names present."""
    bp = load_lab(REPO).services[DIFY]
    (conf,) = bp.files
    (tmp_path / "default.conf").write_text(conf.content, "utf-8")
    labels = {"org.local-ai-lab.test": "apps"}
    net = docker_engine.networks.create(f"apps-dify-{uuid.uuid4().hex[:8]}", labels=labels)
    ref = local_images["nginx"].ref
    made = []
    try:
        address = {}
        for name in ("dify-api", "dify-web", "dify-plugin-daemon"):
            idle = docker_engine.containers.create(ref, entrypoint=["sh", "-c", "while :; do sleep 3600; done"],
                                                   labels=labels, network=net.name)
            made.append(idle)
            idle.start()
            net.disconnect(idle)
            net.connect(idle, aliases=[name])
            idle.reload()
            address[idle.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]] = name
        gateway = docker_engine.containers.create(
            ref, labels=labels, network=net.name, volumes={str(tmp_path / "default.conf"): {
                "bind": conf.target, "mode": "ro"}}, **({"command": list(bp.command)} if bp.command else {}))
        made.append(gateway)
        gateway.start()
        port = bp.port(bp.health.port).container
        for path in DIFY_ROUTES:             # its own wget (the official image has no curl); -S: the status line
            code, out = gateway.exec_run(["wget", "-S", "-O", "/dev/null", f"http://127.0.0.1:{port}{path}"])
            status = re.search(r"HTTP/1\.1 (\d+)", out.decode(errors="replace"))
            assert status and status[1] == "502", (path, out.decode(errors="replace"),
                                                    gateway.logs(tail=20).decode(errors="replace"))
        tried = {}
        for m in re.finditer(r'request: "GET (\S+) HTTP/1.1", upstream: "http://([0-9.]+):(\d+)',
                             gateway.logs(stdout=False).decode(errors="replace")):
            tried.setdefault(m[1], (address.get(m[2], m[2]), int(m[3])))
        assert tried == DIFY_ROUTES
    finally:
        for c in made:
            c.remove(force=True)
        net.remove()


LITELLM = "litellm"
OLLAMA = "ollama"
# An HTTP call from inside the litellm container, with its own Python (the official image has no curl):
# prints the status line, then the body.
CALL = """
import sys, urllib.error, urllib.request
method, url, key, body = sys.argv[1:5]
req = urllib.request.Request(url, method=method, data=body.encode() or None,
                             headers={"Content-Type": "application/json", **({"Authorization": "Bearer " + key} if key else {})})
try:
    with urllib.request.urlopen(req, timeout=30) as resp:
        print(resp.status); print(resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
"""


def test_the_real_litellm_routes_a_chat_through_the_shipped_wiring_to_the_ollama_stand_in(apps_lab, tmp_path):
    """A test lab of the shipped blueprints with "ollama" served by the Ollama protocol stand-in
    (tests/apps/recipes/ollama-standin: canned answers, not Ollama), installed and healthy by the
    shipped [health] (GET /api/version). The real LiteLLM proxy runs on that lab's network with
    the shipped command, config.yaml and env (OLLAMA_API_BASE=http://ollama:11434) and a master
    key made as install makes it, except DATABASE_URL: its database mode needs Prisma's engines,
    which this image cannot have, and with DATABASE_URL set it exits at start, so it is run beside
    the lab rather than installed into it (its profile needs litellm-db). A chat completion for
    ollama/qwen2.5:0.5b with the master key comes back with the stand-in's canned answer.

    The lab is released as a plain bundle and pulls the stand-in from the test registry: the shipped
    ollama blueprint's [[models]] come from registry.ollama.ai, unreachable here, so no image bundle
    of it can be made (testlab.lock_services)."""
    from builder.install.secrets import generate_secret

    lab = apps_lab
    built = build_and_push(lab.registry.host, only=["ollama-standin"], engine=lab.engine, log=say,
                           storage=lab.registry.storage)
    litellm = recipe_image(lab.engine, LITELLM, say)
    assert set(built.stand_ins) == {OLLAMA} and OLLAMA in built.unbuilt, built.to_json()   # named: not Ollama
    lab.refs += [built.images[OLLAMA].split("@")[0], built.images[OLLAMA]]    # compose pulls it by digest
    root = make_test_lab(lab.tmp / "lab", {OLLAMA: built.images[OLLAMA]}, lab_name=lab.project,
                         profile=(PROFILE, [OLLAMA]))
    lock_services(root, [OLLAMA])
    lab.bundle = Path(build_release(root, "1.0.0", profile=PROFILE, out_dir=lab.tmp / "dist", progress=False).bundle)
    wait_ports_free(root, [OLLAMA])
    lab.target = lab.tmp / "inst"
    installed = install_bundle(lab.bundle, lab.target, timeout=120)
    assert installed.ok, installed.failure
    assert installed.services[OLLAMA].state == "healthy"              # [health]: GET /api/version on 11434
    tags = _get_json("http://127.0.0.1:11434/api/tags")
    assert {m["name"] for m in tags["models"]} == {"qwen2.5:0.5b", "nomic-embed-text:v1.5"}

    bp = load_lab(root).services[LITELLM]
    config = next(f for f in bp.files if f.name == "config.yaml")    # (and lab_app_key.py, the key holder)
    (tmp_path / "config.yaml").write_text(config.content, "utf-8")
    env = {k: v for k, v in bp.env.items() if "${secret:" not in v}
    assert set(bp.env) - set(env) == {"DATABASE_URL"} and env["OLLAMA_API_BASE"] == "http://ollama:11434"
    env |= {s.name: s.prefix + generate_secret(s.generate, s.length) for s in bp.secrets}   # as install makes them
    key = env["LITELLM_MASTER_KEY"]
    assert key.startswith("sk-") and len(key) == 51
    (network,) = lab.container(OLLAMA).attrs["NetworkSettings"]["Networks"]
    port = bp.port(bp.health.port).container
    c = lab.engine.containers.run(litellm.ref, command=list(bp.command), environment=env,
                                  network=network, detach=True, labels={"org.local-ai-lab.test": "apps"},
                                  volumes={str(tmp_path / "config.yaml"): {"bind": config.target, "mode": "ro"}})

    def call(path: str, *, key: str = "", body: dict | None = None) -> tuple[int, str]:
        code, out = c.exec_run(["python3", "-c", CALL, "POST" if body is not None else "GET",
                                f"http://127.0.0.1:{port}{path}", key, json.dumps(body) if body is not None else ""])
        assert code == 0, out.decode(errors="replace")
        status, _, text = out.decode(errors="replace").partition("\n")
        return int(status), text

    try:
        start = time.monotonic()
        while c.exec_run(["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}{bp.health.path}"])[0] != 0:
            c.reload()
            assert c.status == "running" and time.monotonic() - start < 90, c.logs(tail=30).decode(errors="replace")
            time.sleep(1)
        lab.timings["litellm up"] = time.monotonic() - start
        status, models = call("/v1/models", key=key)
        assert status == 200 and "ollama/*" in models                # the shipped config.yaml's model_list
        # master_key holds. Refused with 500, not 401, for a request without a key: with no database the
        # proxy's key lookup fails on its missing Prisma client (the answer with litellm-db is 401)
        assert call("/v1/models")[0] == 500 and call("/v1/models", key="sk-wrong")[0] >= 400
        assert call(bp.metrics.path)[0] == 401                       # /metrics wants a key (since v1.84)
        status, metrics = call(bp.metrics.path, key=key)             # what the shipped [metrics] sends
        assert status == 200 and "# TYPE" in metrics, metrics[:500]
        assert call("/health")[0] == 500
        status, health = call("/health", key=key)
        # LiteLLM answers, but cannot health-check a wildcard entry such as the shipped "ollama/*"
        # (litellm/litellm_core_utils/health_check_helpers.py, ahealth_check_wildcard_models)
        (endpoint,) = json.loads(health)["unhealthy_endpoints"]
        assert status == 200 and endpoint["model"] == "ollama_chat/*" and "wildcard" in endpoint["error"], health

        question = f"hello from the lab {uuid.uuid4().hex[:8]}"
        status, answer = call("/v1/chat/completions", key=key, body={
            "model": "ollama/qwen2.5:0.5b", "messages": [{"role": "user", "content": question}]})
        assert status == 200, answer
        assert json.loads(answer)["choices"][0]["message"]["content"] == f"stand-in reply to: {question}"
        assert call("/v1/chat/completions", body={"model": "ollama/qwen2.5:0.5b", "messages": [
            {"role": "user", "content": "no key"}]})[0] == 500
        seen = [json.loads(line) for line in lab.container(OLLAMA).logs().decode().splitlines()
                if line.startswith('{"standin"')]
        chats = [r["body"] for r in seen if r["path"] == "/api/chat"]
        assert [(b["model"], b["messages"][-1]["content"]) for b in chats] == [("qwen2.5:0.5b", question)], seen
    finally:
        c.remove(force=True)
