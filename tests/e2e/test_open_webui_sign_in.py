"""Open WebUI signs in through OpenID Connect and maps the lab's roles (issue 23): the real Open WebUI of
tests/apps (PyPI's open-webui 0.11.0) started with the shipped blueprint's env as the front door makes
it ([env] plus [when.authelia.env]), the two generated secrets, and the four values the door's compose
render fills in ([front_door.oidc.env]: OPENID_PROVIDER_URL, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET,
WEBUI_URL), against a real OpenID Connect provider process.

The provider is a STAND-IN for Authelia (which cannot run here): oidc-provider-mock from PyPI, the
same one and set up the same way as in tests/e2e/test_node_red_sign_in.py (its fixtures are reused),
on the gateway address of a network this test creates. What it stands in for: the users and their
`groups` claim (role + projects, as Authelia's file backend gives them). Plain http: the lab's TLS is
Traefik's, so SSL_CERT_FILE ([front_door.oidc.env] ca_file) is not set here.

Shown, with the real Open WebUI on the other side (open_webui/utils/oauth.py get_user_role, 0.11.0):
OAUTH_ROLES_CLAIM=groups, OAUTH_ALLOWED_ROLES=admin,analyst,user, OAUTH_ADMIN_ROLES=admin, so
- a user in group admin becomes an Open WebUI admin;
- analyst and user become Open WebUI's "user" (it has no third role: admin, user, pending);
- a user with only a project group and no role is refused (403: no allowed role matched);
- no password sign-up (ENABLE_SIGNUP=false); the env admin (WEBUI_ADMIN_*) is still made at first start;
- projects: the project group the admin created beforehand ("alpha") gets the members whose claim
  names it (ENABLE_OAUTH_GROUP_MANAGEMENT), a group named in a claim but not created is not created.
"""

from __future__ import annotations

import urllib.parse
import uuid

import httpx
import pytest

from apps.build import recipe_image
from apps.images import REPO
from builder.blueprint import load_lab
from builder.install.secrets import generate_secret

from labkit import path_with_venv
from support.dockerenv import require_tool
from test_node_red_sign_in import AppContainer, free_port, lab_network, provider, say  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERVICE = "open-webui"
LABEL = {"org.local-ai-lab.test": "open-webui-sign-in"}


@pytest.fixture
def webui_image(docker_engine, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    return recipe_image(docker_engine, SERVICE, say).ref


class OpenWebUI(AppContainer):
    """The real Open WebUI run as compose would run the shipped blueprint with the front door on."""

    UP_PATH, UP_TIMEOUT, UP_POLL, LOG_TAIL = "/health", 600.0, 1.0, 60

    def __init__(self, engine, image: str, network, issuer: str):
        bp = load_lab(REPO).services[SERVICE]
        self.bp = bp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The client as the door registers it with Authelia (builder/render/door_config.py): the
        # contract's callback only, the blueprint's token_auth (client_secret_basic), its scopes.
        callback = self.url + bp.front_door.oidc.callback
        client = httpx.post(f"{issuer}/oauth2/clients", json={
            "redirect_uris": [callback], "token_endpoint_auth_method": bp.front_door.oidc.token_auth,
            "scope": " ".join(bp.front_door.oidc.scopes)})
        assert client.status_code == 201, client.text
        self.client_id = client.json()["client_id"]
        env = bp.effective_env({"authelia"})
        assert env["ENABLE_OAUTH_ROLE_MANAGEMENT"] == "true" and env["OAUTH_ROLES_CLAIM"] == "groups"
        assert not any("${" in v for v in env.values()), env
        env |= {s.name: s.prefix + generate_secret(s.generate, s.length) for s in bp.secrets}   # as install does
        self.admin_password = env["WEBUI_ADMIN_PASSWORD"]
        names = bp.front_door.oidc.env
        env |= {names["discovery"]: f"{issuer}/.well-known/openid-configuration", names["client_id"]: self.client_id,
                names["client_secret"]: client.json()["client_secret"], names["base_url"]: self.url}
        (port,) = [p.container for p in bp.ports if p.name == bp.front_door.port]
        self.volume = engine.volumes.create(labels=LABEL)
        self.container = engine.containers.run(
            image, environment=env, detach=True, labels=LABEL, network=network.name,
            ports={f"{port}/tcp": ("127.0.0.1", self.port)},
            volumes={self.volume.name: {"bind": bp.volumes[0].target, "mode": "rw"}})



def sign_in(webui: OpenWebUI, issuer: str, sub: str) -> tuple[str | None, str]:
    """The sign-in as a browser does it: GET /oauth/oidc/login, the provider's form submitted as
    ``sub``, back through the callback to /auth. Open WebUI's session token (its "token" cookie) or
    None, and the final URL (``/auth?error=...`` when refused)."""
    with httpx.Client(follow_redirects=True, timeout=60) as browser:
        form = browser.get(f"{webui.url}/oauth/oidc/login")
        assert form.status_code == 200 and str(form.url).startswith(f"{issuer}/oauth2/authorize"), form.text[:300]
        asked = form.url.params
        assert asked["redirect_uri"] == webui.url + webui.bp.front_door.oidc.callback     # the contract's callback
        assert set(asked["scope"].split()) == {"openid", "profile", "email", "groups"}
        assert asked["client_id"] == webui.client_id
        back = browser.post(str(form.url), data={"sub": sub})
        assert str(back.url).startswith(f"{webui.url}/auth"), (back.url, back.text[:300])
        return browser.cookies.get("token"), str(back.url)


def me(webui: OpenWebUI, token: str) -> dict:
    answer = httpx.get(f"{webui.url}/api/v1/auths/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_open_webui_signs_in_through_openid_connect_and_maps_admin_analyst_user_and_refuses_no_role(
        docker_engine, webui_image, lab_network, provider):
    webui = OpenWebUI(docker_engine, webui_image, lab_network, provider)
    try:
        webui.wait_up()
        bp = webui.bp
        with httpx.Client(base_url=webui.url, timeout=60) as web:
            assert web.post("/api/v1/auths/signup", json={
                "name": "Visitor", "email": "visitor@example.org", "password": uuid.uuid4().hex}).status_code == 403
            # the env admin exists (created at the first start); ENABLE_LOGIN_FORM=false hides the form
            # in the UI, but /api/v1/auths/signin does not read it in 0.11.0 (routers/auths.py signin)
            signed = web.post("/api/v1/auths/signin", json={"email": bp.env["WEBUI_ADMIN_EMAIL"],
                                                            "password": webui.admin_password})
            assert signed.status_code == 200 and signed.json()["role"] == "admin", signed.text
            admin_auth = {"Authorization": f"Bearer {signed.json()['token']}"}
            created = web.post("/api/v1/groups/create", headers=admin_auth,
                               json={"name": "alpha", "description": "a lab project"})
            assert created.status_code == 200, created.text
            alpha = created.json()["id"]

        users = {"alice": ["admin", "alpha"], "bob": ["analyst", "alpha"], "carol": ["user", "beta"],
                 "dave": ["alpha"]}
        for sub, groups in users.items():
            httpx.put(f"{provider}/users/{sub}", json={"name": sub.title(), "email": f"{sub}@lab.localhost",
                                                       "groups": groups}).raise_for_status()
        roles = {}
        for sub in ("alice", "bob", "carol"):
            token, where = sign_in(webui, provider, sub)
            assert token is not None, (sub, where, webui.logs())
            who = me(webui, token)
            assert who["email"] == f"{sub}@lab.localhost", who
            roles[sub] = who["role"]
        assert roles == {"alice": "admin", "bob": "user", "carol": "user"}

        token, where = sign_in(webui, provider, "dave")                  # a project, no role: refused
        assert token is None and "error=" in where, where
        assert "do not match any allowed/admin roles" in webui.logs()

        with httpx.Client(base_url=webui.url, timeout=60) as web:
            alice, _ = sign_in(webui, provider, "alice")
            auth = {"Authorization": f"Bearer {alice}"}
            listed = web.get("/api/v1/users/", headers=auth)
            assert listed.status_code == 200, listed.text
            body = listed.json()
            everyone = {u["email"]: u for u in (body["users"] if isinstance(body, dict) else body)}
            assert {e: u["role"] for e, u in everyone.items()} == {
                bp.env["WEBUI_ADMIN_EMAIL"]: "admin", "alice@lab.localhost": "admin",
                "bob@lab.localhost": "user", "carol@lab.localhost": "user"}      # dave was not added
            groups = web.get("/api/v1/groups/", headers=auth)
            assert groups.status_code == 200, groups.text
            assert [g["name"] for g in groups.json()] == ["alpha"]          # "beta" was not created
            members = web.post(f"/api/v1/groups/id/{urllib.parse.quote(alpha)}/users", headers=auth)
            assert members.status_code == 200, members.text
            assert {u["email"] for u in members.json()} == {"alice@lab.localhost", "bob@lab.localhost"}
    finally:
        webui.remove()
