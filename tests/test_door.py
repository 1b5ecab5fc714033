"""The front door (issue 23), render side: [access] and [front_door], the provider's and the
proxy's configuration against their own published JSON Schemas, consistency across files
(checked on what real `docker compose config` resolves), and the refusals of bad input.

The schemas are the components' own (../shared/schemas/, see its README): Authelia 4.39's
configuration.json and SchemaStore's traefik-v3-file-provider.json. Authelia's describes the
file after template expansion: ``expand`` does what Authelia's template filter does for the
two functions the rendered file uses (``env``, and ``secret | mindent | msquote``) with the
values compose gives the container; no Authelia process runs here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from builder.blueprint import load_lab, validate_paths
from builder.lockfile import Lock
from builder.render import ReleaseInput, render_text_files
from builder.render.door import client_secret_name
from support.dockerenv import require_compose

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO.parent / "shared" / "schemas"
AUTHELIA_SCHEMA = SCHEMAS / "authelia-4.39" / "configuration.json"
TRAEFIK_SCHEMA = SCHEMAS / "traefik-v3" / "traefik-v3-file-provider.json"


def _ri(lab, profile: str) -> ReleaseInput:
    lock = Lock(lab=lab.name, inputs="door-test", platforms=lab.platforms, services={})
    return ReleaseInput(lab=lab, lock=lock, profile=profile, version="0.0.0", labbuild_version="test")


@pytest.fixture(scope="module")
def lab():
    return load_lab(REPO)


@pytest.fixture(scope="module")
def phase4(lab) -> dict[str, str]:
    return render_text_files(_ri(lab, "phase4"))


def _schema(path: Path) -> dict:
    if not path.is_file():
        pytest.skip(f"{path} is absent (clean clone without ../shared): nothing to validate against")
    return json.loads(path.read_text("utf-8"))


def _validate(doc, schema: dict) -> list[str]:
    cls = jsonschema.validators.validator_for(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(doc)]


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


_ENV_CALL = re.compile(r'\{\{ mustEnv "([A-Za-z_][A-Za-z0-9_]*)" \}\}')
_SECRET_CALL = re.compile(r'\{\{ secret "([^"]+)" \| mindent (\d+) "\|" \| msquote \}\}')


def expand(text: str, env: dict[str, str], files: dict[str, str]) -> str:
    """Authelia's template filter for the calls the rendered file makes (a missing name fails, as
    ``mustEnv`` does); ``secret`` drops trailing newlines, ``mindent N "|"`` makes a block scalar."""
    def secret(m: re.Match) -> str:
        content = files[m.group(1)]
        pad = " " * int(m.group(2))
        return "|\n" + "".join(pad + line + "\n" for line in content.rstrip("\n").split("\n")).rstrip("\n")
    text = _SECRET_CALL.sub(secret, text)
    return _ENV_CALL.sub(lambda m: env[m.group(1)], text)


# --------------------------------------------------------------------------- the door on and off

def test_the_door_is_on_only_where_the_profile_holds_the_provider(lab, phase4) -> None:
    assert lab.access is not None and lab.access.provider == "authelia"
    for profile in ("base", "phase1", "phase2", "phase3"):
        ri = _ri(lab, profile)
        assert ri.door is None and "access/lab.json" not in render_text_files(ri), profile
    assert "access/lab.json" in phase4 and "config/authelia/configuration.yml" in phase4


def test_phase1_renders_exactly_as_without_any_front_door(lab) -> None:
    """The default profile's files are byte-identical to those of the lab with every door table removed."""
    bare = replace(lab, access=None, services={
        n: replace(bp, front_door=None, when=tuple(w for w in bp.when if w.other != "authelia"))
        for n, bp in lab.services.items()})
    for profile in ("phase1", "phase3"):
        assert render_text_files(_ri(lab, profile)) == render_text_files(_ri(bare, profile)), profile


def test_access_json_has_the_contract_shape(lab, phase4) -> None:
    text = phase4["access/lab.json"]
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert set(doc) == {"domain", "provider", "roles", "projects", "services"}
    assert doc["domain"] == "lab.localhost" and doc["provider"] == "authelia"
    assert set(doc["roles"]) == {"admin", "analyst", "user"} and "default" in doc["projects"]
    closure = set(lab.profile_closure("phase4"))
    expected = {n for n in closure if lab.services[n].front_door is not None}
    assert set(doc["services"]) == expected and len(expected) >= 14
    for name, svc in doc["services"].items():
        fd = lab.services[name].front_door
        assert set(svc) == {"description", "url", "roles", "sign_in", "runbook", "projects_note"}
        assert svc["projects_note"] == {"what": fd.projects.what, "isolation": fd.projects.isolation}
        assert svc["url"] == f"https://{fd.host}.lab.localhost/"
        assert svc["runbook"] == f"runbooks/{name}.md" and svc["runbook"] in phase4
        assert svc["roles"] == list(fd.roles) and svc["sign_in"] == fd.sign_in


# --------------------------------------------------------------------------- published schemas

def test_traefik_dynamic_files_validate_against_traefiks_schema(phase4) -> None:
    schema = _schema(TRAEFIK_SCHEMA)
    for rel in ("config/traefik/routes.yml", "config/traefik/tls.yml"):
        doc = yaml.safe_load(phase4[rel])
        assert _validate(doc, schema) == [], rel
    # the checker is live: a router without its rule's type is refused
    broken = yaml.safe_load(phase4["config/traefik/routes.yml"])
    broken["http"]["routers"]["authelia"]["entryPoints"] = "websecure"
    assert _validate(broken, schema)


def test_authelia_configuration_validates_after_expansion(phase4) -> None:
    schema = _schema(AUTHELIA_SCHEMA)
    text = phase4["config/authelia/configuration.yml"]
    names = set(_ENV_CALL.findall(text))
    env = {n: f"tok-{i}_" + "x" * 60 for i, n in enumerate(sorted(names))}
    doc = yaml.safe_load(expand(text, env, {"/config/keys/oidc-jwks.pem": _rsa_pem()}))
    assert _validate(doc, schema) == []
    assert doc["access_control"]["default_policy"] == "deny"
    assert doc["authentication_backend"]["file"] == {
        "path": "/access/users_database.yml", "watch": True,
        "password": {"algorithm": "argon2", "argon2": {"variant": "argon2id"}}}
    assert doc["session"]["cookies"][0]["domain"] == "lab.localhost"
    assert doc["identity_providers"]["oidc"]["jwks"][0]["key"].startswith("-----BEGIN PRIVATE KEY-----\n")
    # no value of a secret is in the bundle's file: every secret-looking key is a template call
    raw = yaml.safe_load(text.replace('{{ secret "/config/keys/oidc-jwks.pem" | mindent 10 "|" | msquote }}', "K"))
    assert raw["session"]["secret"] == '{{ mustEnv "SESSION_SECRET" }}'
    assert all(c["client_secret"].startswith("$plaintext${{ mustEnv ")
               for c in raw["identity_providers"]["oidc"]["clients"])
    # the checker is live: a policy Authelia does not know is refused
    doc["access_control"]["default_policy"] = "allow-all"
    assert _validate(doc, schema)


# --------------------------------------------------------------------------- consistency (real compose)

@pytest.fixture(scope="module")
def resolved(lab, phase4, tmp_path_factory) -> dict:
    """``docker compose config`` of the phase4 bundle's compose.yaml with generated secrets."""
    compose = require_compose()
    root = tmp_path_factory.mktemp("door") / "releases" / "0.0.0"
    root.mkdir(parents=True)
    for rel, text in phase4.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    keys = [line.split("=", 1)[0] for line in phase4["secrets.env.example"].splitlines()
            if re.match(r"^[A-Z][A-Z0-9_]*=", line)]
    (root / "secrets.env").write_text("".join(f"{k}=gen-{i}-{'y' * 40}\n" for i, k in enumerate(keys)))
    argv = [*compose, "-p", "door", "-f", "compose.yaml", "--env-file", "lab.env", "--env-file", "secrets.env",
            "--profile", "*", "config", "--format", "json"]
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


def test_every_oidc_client_matches_its_service(lab, phase4, resolved) -> None:
    provider_env = resolved["authelia"]["environment"]
    text = phase4["config/authelia/configuration.yml"]
    doc = yaml.safe_load(expand(text, provider_env, {"/config/keys/oidc-jwks.pem": _rsa_pem()}))
    clients = {c["client_id"]: c for c in doc["identity_providers"]["oidc"]["clients"]}
    oidc = {n for n in resolved if lab.services[n].front_door and lab.services[n].front_door.sign_in == "oidc"}
    assert set(clients) == oidc == {"open-webui", "grafana", "langfuse", "node-red"}
    for name in sorted(oidc):
        fd, env = lab.services[name].front_door, resolved[name]["environment"]
        names = fd.oidc.env
        client = clients[name]
        assert env[names["client_id"]] == name
        assert client["client_secret"] == "$plaintext$" + env[names["client_secret"]]
        assert env[names["client_secret"]] == provider_env[client_secret_name(name)]
        assert env[names["client_secret"]].startswith("gen-")       # the generated value, shared
        base = f"https://{fd.host}.lab.localhost"
        assert client["redirect_uris"] == [base + fd.oidc.callback]
        if "base_url" in names:
            assert env[names["base_url"]] == base
        if "issuer" in names:
            assert env[names["issuer"]] == "https://auth.lab.localhost"
        if "discovery" in names:
            assert env[names["discovery"]] == "https://auth.lab.localhost/.well-known/openid-configuration"
        policy = doc["identity_providers"]["oidc"]["authorization_policies"][client["authorization_policy"]]
        assert policy["default_policy"] == "deny"
        assert policy["rules"][0]["subject"] == [f"group:{r}" for r in fd.roles]


def test_every_ui_has_exactly_one_way_in_and_no_published_port(lab, phase4, resolved) -> None:
    routes = yaml.safe_load(phase4["config/traefik/routes.yml"])["http"]
    rules = {r["domain"]: r for r in yaml.safe_load(
        phase4["config/authelia/configuration.yml"].replace('{{ secret "/config/keys/oidc-jwks.pem" | mindent 10 "|" | msquote }}',
                                                            "K"))["access_control"]["rules"]}
    clients = set(json.loads(phase4["access/lab.json"])["services"])
    for name in sorted(clients):
        fd = lab.services[name].front_door
        router = routes["routers"][name]
        host = f"{fd.host}.lab.localhost"
        assert router["rule"] == f"Host(`{host}`)" and router["entryPoints"] == ["websecure"]
        guarded = router.get("middlewares") == ["lab-forward-auth"]
        assert guarded == (fd.sign_in == "forward-auth"), name
        assert (host in rules) == guarded, name
        if guarded:
            assert rules[host]["subject"] == [f"group:{r}" for r in fd.roles]
    for name, svc in resolved.items():
        published = [p for p in svc.get("ports", []) if p.get("published")]
        if name == "traefik":
            assert sorted(int(p["published"]) for p in published) == [80, 443]
        elif lab.services[name].front_door is not None:
            assert published == [], name
    traefik = resolved["traefik"]
    assert "--api.insecure=true" not in traefik["command"]
    assert routes["routers"]["traefik"]["service"] == "api@internal"
    assert routes["routers"]["traefik"]["middlewares"] == ["lab-forward-auth"]
    assert "auth.lab.localhost" in traefik["networks"]["lab"]["aliases"]
    fa = routes["middlewares"]["lab-forward-auth"]["forwardAuth"]
    assert fa["address"] == "http://authelia:9091/api/authz/forward-auth" and fa["trustForwardHeader"] is True


def test_services_read_their_front_door_url(lab, resolved) -> None:
    assert resolved["n8n"]["environment"]["WEBHOOK_URL"] == "https://n8n.lab.localhost/"
    assert resolved["n8n"]["environment"]["N8N_EDITOR_BASE_URL"] == "https://n8n.lab.localhost/"
    assert resolved["flowise"]["environment"]["APP_URL"] == "https://flowise.lab.localhost/"
    assert resolved["open-webui"]["environment"]["WEBUI_URL"] == "https://webui.lab.localhost"
    assert resolved["grafana"]["environment"]["GF_SERVER_ROOT_URL"] == "https://grafana.lab.localhost"
    for name in ("node-red", "grafana", "langfuse", "open-webui"):      # the lab CA, mounted read-only
        fd = lab.services[name].front_door
        ca = resolved[name]["environment"][fd.oidc.env["ca_file"]]
        assert ca == "/etc/lab-ca/ca.crt"
        mount = next(v for v in resolved[name]["volumes"] if v["target"] == ca)
        assert mount["read_only"] is True and mount["source"].endswith("/door/ca.crt")


def test_no_secret_value_is_in_the_bundle(phase4, resolved) -> None:
    values = {v for svc in resolved.values() for v in (svc.get("environment") or {}).values()
              if isinstance(v, str) and v.startswith("gen-")}
    assert len(values) >= 8
    for rel, text in phase4.items():
        assert not any(v in text for v in values), rel


# --------------------------------------------------------------------------- bad input

def _problems(root: Path) -> list[str]:
    return [f"{p.file}: {p.path}: {p.message}" for p in validate_paths(root)]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("file, old, new, expected", [
    ("services/n8n.toml", 'roles = ["admin", "analyst"]', 'roles = ["admin", "owner"]',
     "blueprints/services/n8n.toml: front_door.roles[1]: unknown role 'owner'"),
    ("services/n8n.toml", 'port = "http"\nhost = "n8n"', 'port = "web"\nhost = "n8n"',
     "blueprints/services/n8n.toml: front_door.port: no port named 'web'"),
    ("services/n8n.toml", 'sign_in = "forward-auth"',
     'sign_in = "forward-auth"\n[front_door.oidc]\ncallback = "/cb"\n[front_door.oidc.env]\n'
     'client_id = "A"\nclient_secret = "B"',
     "blueprints/services/n8n.toml: front_door.oidc: [front_door.oidc] is only read with sign_in = \"oidc\""),
    ("services/n8n.toml", 'sign_in = "forward-auth"', 'sign_in = "oidc"',
     "blueprints/services/n8n.toml: front_door.sign_in: sign_in = \"oidc\" needs a [front_door.oidc] table"),
    ("services/n8n.toml", 'host = "n8n"', 'host = "grafana"',
     "front_door.host: host 'grafana' is also the front door of"),
    ("services/n8n.toml", 'url_env = ["WEBHOOK_URL", "N8N_EDITOR_BASE_URL"]', 'url_env = ["WEBHOOK_URL", "bad-name"]',
     "blueprints/services/n8n.toml: front_door.url_env[1]:"),
    ("services/langfuse.toml", 'port = "http"\nhost = "langfuse"', 'port = "http"\nhost = "langfuse"\nurl_env = ["NEXTAUTH_URL"]',
     "blueprints/services/langfuse.toml: front_door.url_env[0]: NEXTAUTH_URL is also one of [front_door.oidc.env]"),
    ("lab.toml", 'provider = "authelia"', 'provider = "keycloak"',
     "blueprints/lab.toml: access.provider: provider 'keycloak' is not a service of the lab"),
    ("lab.toml", 'domain = "lab.localhost"', 'domain = "localhost"',
     "blueprints/lab.toml: access.domain: 'localhost' is not a DNS domain"),
    ("lab.toml", 'user = "Uses the chat', 'viewer = "Uses the chat',
     "blueprints/lab.toml: access.roles: the roles must be exactly admin, analyst, user"),
])
def test_bad_front_door_input_is_refused_with_file_and_key(lab_copy, file, old, new, expected) -> None:
    _edit(lab_copy / "blueprints" / file, old, new)
    problems = _problems(lab_copy)
    assert any(expected in p for p in problems), problems


def test_a_bad_front_door_never_tracebacks_through_the_cli(lab_copy) -> None:
    _edit(lab_copy / "blueprints" / "services" / "grafana.toml", 'roles = ["admin", "analyst"]', 'roles = ["root"]')
    proc = subprocess.run([str(Path(sys.executable).parent / "labbuild"), "--root", str(lab_copy), "validate"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert "grafana.toml" in proc.stdout + proc.stderr and "unknown role 'root'" in proc.stdout + proc.stderr


def test_a_profile_with_the_provider_but_no_proxy_is_refused(lab_copy) -> None:
    from builder.errors import BundleError
    _edit(lab_copy / "blueprints" / "lab.toml", 'services = ["openbao", "traefik", "authelia", "home"]',
          'services = ["openbao", "authelia", "home"]')
    lab = load_lab(lab_copy)
    with pytest.raises(BundleError, match="not 'traefik'"):
        render_text_files(_ri(lab, "phase4"))
    shutil.rmtree(lab_copy)


def test_validating_one_blueprint_checks_its_front_door_against_lab_toml(lab_copy) -> None:
    n8n = lab_copy / "blueprints" / "services" / "n8n.toml"
    _edit(n8n, 'roles = ["admin", "analyst"]', 'roles = ["admin", "boss"]')
    _edit(lab_copy / "blueprints" / "services" / "flowise.toml", 'host = "flowise"', 'host = "n8n"')
    problems = [f"{p.file}: {p.path}: {p.message}" for p in validate_paths(lab_copy, [n8n])]
    assert sorted(problems) == ["blueprints/services/n8n.toml: front_door.host: host 'n8n' is also the front door "
                                "of 'flowise'",
                                "blueprints/services/n8n.toml: front_door.roles[1]: unknown role 'boss'"]
    # only the files asked about are reported: flowise's side of the clash is not
    flowise = lab_copy / "blueprints" / "services" / "flowise.toml"
    assert [p.file for p in validate_paths(lab_copy, [flowise])] == []


def test_a_profile_with_the_provider_but_no_home_page_is_refused(lab_copy) -> None:
    from builder.errors import BundleError
    _edit(lab_copy / "blueprints" / "lab.toml", 'services = ["openbao", "traefik", "authelia", "home"]',
          'services = ["openbao", "traefik", "authelia"]')
    with pytest.raises(BundleError, match="not 'home'.*") as err:
        render_text_files(_ri(load_lab(lab_copy), "phase4"))
    assert "https://lab.localhost/" in err.value.hint
    shutil.rmtree(lab_copy)


def test_the_home_page_lists_every_ui_and_is_served_with_the_runbooks(lab, phase4, resolved) -> None:
    access = json.loads(phase4["access/lab.json"])
    page = phase4["access/home/index.html"]
    for name, svc in access["services"].items():
        assert f'href="{svc["url"]}"' in page, name
        assert f'href="runbooks/{name}.md"' in page and f"runbooks/{name}.md" in phase4, name
    home = resolved["home"]
    assert not home.get("ports"), "the home page is reached only through the proxy"
    mounts = {m["target"]: m for m in home["volumes"]}
    assert mounts["/usr/share/nginx/html"]["source"].endswith("/access/home")
    assert mounts["/usr/share/nginx/runbooks"]["source"].endswith("/runbooks")
    assert all(m.get("read_only") for m in mounts.values())
    routes = yaml.safe_load(phase4["config/traefik/routes.yml"])["http"]
    assert routes["routers"]["home"]["rule"] == "Host(`lab.localhost`)"
    assert routes["routers"]["home"]["middlewares"] == ["lab-forward-auth"]
