"""Node-RED's editor signs in through OpenID Connect (issue 23): the real Node-RED of tests/apps
(npm's node-red 5.0.4) started with the shipped blueprint's command, settings.js and env, plus the
four NODE_RED_OIDC_* values the front door's compose render gives it (access contract), against a
real OpenID Connect provider process.

The provider is a STAND-IN for Authelia (which cannot run here): oidc-provider-mock from PyPI,
an authlib-based OpenID Connect provider (discovery, authorization-code flow, token, userinfo,
ID tokens), run on the host and bound to the gateway address of a network this test creates, so
the Node-RED container (token and userinfo calls) and the test's browser (httpx: the redirects
and the provider's sign-in form) reach it at the same issuer URL. What it stands in for: the
users and their `groups` claim ([role] + projects, as Authelia's file backend gives them).

Shown, with the real Node-RED on the other side:
- without passport-openidconnect in /data/node_modules (the official image has none) the editor
  is not open: it asks for the admin password and its log says why;
- with it copied there the way the runbook says: an admin signs in and deploys, an analyst signs
  in and may only read (GET /flows, not POST /flows), a user is sent back without a token.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
import uuid

import httpx
import pytest

from apps.build import recipe_image
from apps.images import REPO
from builder.blueprint import load_lab

from labkit import path_with_venv
from support.dockerenv import require_tool

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERVICE = "node-red"
LABEL = {"org.local-ai-lab.test": "node-red-sign-in"}
STRATEGY_MODULES = "/usr/local/share/labbuild-test/oidc/node_modules"    # tests/apps/recipes/node-red


def say(text: str) -> None:
    print(text, file=sys.stderr)


@pytest.fixture
def node_red_image(docker_engine, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    return recipe_image(docker_engine, SERVICE, say).ref


@pytest.fixture
def lab_network(docker_engine):
    net = docker_engine.networks.create(f"nr-sign-in-{uuid.uuid4().hex[:10]}", labels=LABEL)
    net.reload()
    yield net
    for c in docker_engine.containers.list(all=True, filters={"network": net.id}):
        with contextlib.suppress(Exception):
            c.remove(force=True)
    net.remove()


@pytest.fixture
def provider(lab_network, monkeypatch):
    """oidc-provider-mock (stand-in for Authelia) on the network's gateway address: its issuer URL."""
    import werkzeug.serving
    import oidc_provider_mock        # pyproject [test]: a dependency, so never a silent skip
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")     # plain http: the lab's TLS is Traefik's
    gateway = lab_network.attrs["IPAM"]["Config"][0]["Gateway"]
    app = oidc_provider_mock.app(require_nonce=True, require_client_registration=True)
    server = werkzeug.serving.make_server(gateway, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{gateway}:{server.server_port}"
    server.shutdown()
    thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppContainer:
    """A real application's container (``self.container``, on ``self.url``) and its volume
    (``self.volume``), as the sign-in tests run them: ``wait_up`` polls ``url + UP_PATH`` until it
    answers 200, failing with the app's log once the container stops or ``UP_TIMEOUT`` passes."""

    UP_PATH, UP_TIMEOUT, UP_POLL, LOG_TAIL = "/", 60.0, 0.5, 40

    def wait_up(self) -> None:
        deadline = time.monotonic() + self.UP_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{self.UP_PATH}", timeout=5).status_code == 200:
                    return
            self.container.reload()
            assert self.container.status == "running" and time.monotonic() < deadline, self.logs()
            time.sleep(self.UP_POLL)

    def logs(self) -> str:
        return self.container.logs(tail=self.LOG_TAIL).decode(errors="replace")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        with contextlib.suppress(Exception):
            self.volume.remove(force=True)


class NodeRed(AppContainer):
    """The real Node-RED image run as compose would run the shipped blueprint, with the door's env."""

    UP_PATH = "/auth/login"

    def __init__(self, engine, image: str, network, issuer: str, tmp_path):
        bp = load_lab(REPO).services[SERVICE]
        (settings,) = bp.files
        (tmp_path / settings.name).write_text(settings.content, "utf-8")
        (tmp_path / settings.name).chmod(0o644)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = uuid.uuid4().hex
        # The client as the door registers it with Authelia: this redirect URI only, the secret sent
        # in the token request's body (client_secret_post), the contract's scopes. The stand-in
        # checks all three; it names the client and its secret itself.
        client = httpx.post(f"{issuer}/oauth2/clients", json={
            "redirect_uris": [f"{self.url}/auth/strategy/callback"], "token_endpoint_auth_method": "client_secret_post",
            "scope": "openid profile email groups"})
        assert client.status_code == 201, client.text
        self.client_id = client.json()["client_id"]
        env = dict(bp.env)
        assert {s.name for s in bp.secrets} == {"NODE_RED_ADMIN_PASSWORD"}
        env |= {"NODE_RED_ADMIN_PASSWORD": self.password,
                # what the front door's compose render fills in (the access contract's env names)
                "NODE_RED_OIDC_ISSUER": issuer, "NODE_RED_OIDC_CLIENT_ID": self.client_id,
                "NODE_RED_OIDC_CLIENT_SECRET": client.json()["client_secret"], "NODE_RED_OIDC_BASE_URL": self.url}
        self.volume = engine.volumes.create(labels=LABEL)
        self.container = engine.containers.run(
            image, command=list(bp.command), environment=env, detach=True, labels=LABEL, network=network.name,
            ports={f"{bp.port('http').container}/tcp": ("127.0.0.1", self.port)},
            volumes={str(tmp_path / settings.name): {"bind": settings.target, "mode": "ro"},
                     self.volume.name: {"bind": "/data", "mode": "rw"}})



def sign_in(node_red: NodeRed, issuer: str, sub: str) -> str | None:
    """The editor's sign-in as a browser does it: GET /auth/strategy, the provider's form submitted
    as ``sub``, back to the editor, whose page posts the ``code`` of its URL to /auth/token
    (@node-red/editor-client red.js). The editor's access token, or None without a code."""
    with httpx.Client(follow_redirects=True, timeout=20) as browser:
        form = browser.get(f"{node_red.url}/auth/strategy")
        assert form.status_code == 200 and str(form.url).startswith(f"{issuer}/oauth2/authorize"), form.text[:300]
        asked = form.url.params
        assert asked["redirect_uri"] == f"{node_red.url}/auth/strategy/callback"       # the contract's callback
        assert asked["scope"].split() == ["openid", "profile", "email", "groups"]
        assert asked["client_id"] == node_red.client_id
        back = browser.post(str(form.url), data={"sub": sub})
        assert back.status_code == 200 and str(back.url).startswith(node_red.url + "/?"), (back.url, back.text[:300])
        match = re.search(r"[?&]code=(.*?)(?:$|&)", "?" + back.url.query.decode())
        if match is None:
            assert "session_message=" in back.url.query.decode()
            return None
        token = browser.post(f"{node_red.url}/auth/token", data={"code": match[1]})
        assert token.status_code == 200, token.text
        return token.json()["accessToken"]


def deploy(node_red: NodeRed, token: str | None) -> int:
    headers = {"Node-RED-Deployment-Type": "full", **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"{node_red.url}/flows", headers=headers, json=[], timeout=20).status_code


def read_flows(node_red: NodeRed, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{node_red.url}/flows", headers=headers, timeout=20).status_code


def test_node_red_signs_in_through_openid_connect_admin_deploys_analyst_reads_user_refused(
        docker_engine, node_red_image, lab_network, provider, tmp_path):
    node_red = NodeRed(docker_engine, node_red_image, lab_network, provider, tmp_path)
    try:
        node_red.wait_up()
        # The official image has no passport-openidconnect: never open, the admin password guards it.
        login = httpx.get(f"{node_red.url}/auth/login").json()
        assert login["type"] == "credentials", login
        assert (read_flows(node_red, None), deploy(node_red, None)) == (401, 401)
        assert "passport-openidconnect is not in /data/node_modules" in node_red.logs()

        # What the runbook's procedure leaves in the volume (npm install next to /data/package.json on a
        # connected machine, copied back): the modules in /data/node_modules, the dependency in
        # /data/package.json. Then a restart.
        code, out = node_red.container.exec_run(["sh", "-c", f"cp -R {STRATEGY_MODULES}/. /data/node_modules/ && "
                                                 "cd /data && npm pkg set dependencies.passport-openidconnect=0.1.2"])
        assert code == 0, out
        node_red.container.restart()
        node_red.wait_up()
        login = httpx.get(f"{node_red.url}/auth/login").json()
        assert login["type"] == "strategy" and login.get("autoLogin") is True, login
        assert (read_flows(node_red, None), deploy(node_red, None)) == (401, 401)       # still nobody anonymous
        grant = httpx.post(f"{node_red.url}/auth/token", data={
            "client_id": "node-red-admin", "grant_type": "password", "scope": "*", "username": "admin",
            "password": node_red.password})
        assert grant.status_code >= 400 and "ccess" not in grant.text, grant.text   # the password is off now

        users = {"alice": ["admin", "default"], "bob": ["analyst", "default"], "carol": ["user", "default"]}
        for sub, groups in users.items():
            httpx.put(f"{provider}/users/{sub}", json={"preferred_username": sub, "email": f"{sub}@lab.localhost",
                                                       "groups": groups}).raise_for_status()
        admin = sign_in(node_red, provider, "alice")
        assert admin is not None
        assert read_flows(node_red, admin) == 200
        assert deploy(node_red, admin) in (200, 204)

        analyst = sign_in(node_red, provider, "bob")
        assert analyst is not None
        assert read_flows(node_red, analyst) == 200
        assert deploy(node_red, analyst) in (401, 403)

        assert sign_in(node_red, provider, "carol") is None
        assert "sign-in refused: carol" in node_red.logs()
        code, sessions = node_red.container.exec_run(["cat", "/data/.sessions.json"])     # Node-RED's token store
        users_with_tokens = {t["user"]: t["scope"] for t in json.loads(sessions).values()}
        assert code == 0 and users_with_tokens == {"alice": "*", "bob": "read"}, sessions
        # a made-up token is no way in either
        assert (read_flows(node_red, "x" * 40), deploy(node_red, "x" * 40)) == (401, 401)
    finally:
        node_red.remove()
