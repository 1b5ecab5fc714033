"""The front door in the Helm export (issue 23): the provider and its configuration ship, the
install dir's keys and users come from the Secret `front-door` (made by the chart: lab CA, wildcard
certificate, OIDC key, first admin; or the operator's, `frontDoor.existingSecret`), each UI's Ingress host
is its front-door name, and (opt-in, Traefik's CRDs) a forward-auth Middleware guards exactly the
forward-auth UIs; with `frontDoor.proxyClusterIP` the OIDC clients' pods reach the issuer
https://auth.<domain> through the lab's proxy (hostAliases, NetworkPolicy edges). Real `helm template`,
`helm lint --strict` and kubernetes-validate."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.export.helm import export_helm
from support.dockerenv import require_tool

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("door-chart") / "phase4"
    export_helm(out, root=REPO, profile="phase4", version="1.0.0")
    return out


def _template(chart: Path, *sets: str) -> list[dict]:
    args = [require_tool("helm"), "template", "lab", str(chart), "--namespace", "door"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _access() -> dict:
    from builder.blueprint import load_lab
    from builder.lockfile import Lock
    from builder.render import ReleaseInput, render_text_files
    lab = load_lab(REPO)
    ri = ReleaseInput(lab=lab, lock=Lock(lab=lab.name, inputs="t", platforms=lab.platforms, services={}),
                      profile="phase4", version="1.0.0", labbuild_version="t")
    return json.loads(render_text_files(ri)["access/lab.json"])


def test_the_chart_lints_and_guards_exactly_the_forward_auth_uis(chart) -> None:
    proc = subprocess.run([require_tool("helm"), "lint", "--strict", str(chart),
                           "--set", "frontDoor.traefikMiddleware=true"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    access = _access()
    uis = access["services"]
    sets = [f"services.{n}.ingress.enabled=true" for n in uis]
    off = _template(chart, *sets)
    assert not [d for d in off if d["kind"] == "Middleware"]
    on = _template(chart, "frontDoor.traefikMiddleware=true", *sets)
    (mw,) = [d for d in on if d["kind"] == "Middleware"]
    assert mw["apiVersion"] == "traefik.io/v1alpha1" and mw["metadata"]["name"] == "lab-forward-auth"
    assert mw["spec"]["forwardAuth"]["address"] == "http://authelia:9091/api/authz/forward-auth"
    ingresses = {d["metadata"]["name"]: d for d in on if d["kind"] == "Ingress"}
    assert set(ingresses) == set(uis)
    for name, svc in uis.items():
        ing = ingresses[name]
        assert ing["spec"]["rules"][0]["host"] + "/" == svc["url"].removeprefix("https://")
        annotations = ing["metadata"].get("annotations", {})
        guarded = annotations.get("traefik.ingress.kubernetes.io/router.middlewares") == \
            "door-lab-forward-auth@kubernetescrd"
        assert guarded == (svc["sign_in"] == "forward-auth"), name
    for d in off:
        if d["kind"] == "Ingress":
            assert "traefik.ingress.kubernetes.io/router.middlewares" not in d["metadata"].get("annotations", {})


def test_the_install_dir_material_comes_from_the_front_door_secret(chart) -> None:
    docs = _template(chart)
    loads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    def secret_items(name: str) -> set[str]:
        vols = loads[name]["spec"]["template"]["spec"]["volumes"]
        return {i["key"] for v in vols if v.get("secret", {}).get("secretName") == "front-door"
                for i in v["secret"]["items"]}
    assert secret_items("authelia") == {"users_database.yml", "oidc-jwks.pem"}
    assert secret_items("traefik") == {"lab.crt", "lab.key"}
    assert secret_items("node-red") == {"ca.crt"}
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("authelia"))
    text = "".join(config["data"].values())
    assert "mustEnv" in text and "$plaintext$" in text          # the provider's config, templates in place of secrets
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "authelia-secrets")
    assert {"OIDC_CLIENT_NODE_RED", "SESSION_SECRET"} <= set(secret.get("data") or secret.get("stringData") or {})


def test_oidc_clients_reach_the_issuer_through_the_labs_proxy_in_the_cluster(chart, tmp_path) -> None:
    """``frontDoor.proxyClusterIP``: the proxy's Service takes the address and exactly the OIDC clients'
    pods resolve auth.<domain> to it (hostAliases); their NetworkPolicies let them reach its HTTPS
    port (the edge the compose install has through the proxy's network aliases). Checked with the
    real `helm template`, the values schema, and kubernetes-validate (1.37, strict)."""
    from test_export_helm import validate

    oidc = sorted(n for n, s in _access()["services"].items() if s["sign_in"] == "oidc")
    assert oidc == ["grafana", "langfuse", "node-red", "open-webui"]
    docs = _template(chart, "frontDoor.proxyClusterIP=10.96.0.80", "services.authelia.ingress.enabled=true",
                     "services.home.ingress.enabled=true")
    validate(docs, tmp_path / "objects.yaml")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["traefik"]["spec"]["clusterIP"] == "10.96.0.80"
    assert all("clusterIP" not in s["spec"] for n, s in services.items() if n != "traefik")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    aliased = {n: p["hostAliases"] for n, p in pods.items() if "hostAliases" in p}
    assert aliased == {n: [{"ip": "10.96.0.80", "hostnames": ["auth.lab.localhost"]}] for n in oidc}
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    https = [{"port": "websecure", "protocol": "TCP"}]
    into_proxy = {r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: r["ports"]
                  for r in policies["traefik"]["ingress"] if "from" in r}
    for name in oidc:
        assert into_proxy[name] == https, name
        out = [e for e in policies[name]["egress"] if "to" in e and "podSelector" in e["to"][0]]
        assert {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik",
                                                        "app.kubernetes.io/instance": "lab"}}}],
                "ports": https} in out, name
    ingresses = {d["metadata"]["name"]: d["spec"]["rules"][0]["host"] for d in docs if d["kind"] == "Ingress"}
    assert ingresses == {"authelia": "auth.lab.localhost", "home": "lab.localhost"}    # the issuer's and the home page's

    plain = _template(chart)                           # not set: nothing of it
    assert not any("hostAliases" in d["spec"]["template"]["spec"] for d in plain if d["kind"] in ("Deployment", "StatefulSet"))
    assert "clusterIP" not in next(d for d in plain if d["kind"] == "Service" and d["metadata"]["name"] == "traefik")["spec"]
    proc = subprocess.run([require_tool("helm"), "template", "lab", str(chart), "--set",
                           "frontDoor.proxyClusterIP=auth.example"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "proxyClusterIP" in proc.stderr      # values.schema.json refuses a name
    readme = (chart / "README.md").read_text()
    assert "--set frontDoor.proxyClusterIP=" in readme and "rewrite name auth.lab.localhost traefik." in readme


# --------------------------------------------------------------------------- the front door's Secret, made by the chart

USERS_SCHEMA = REPO.parent / "shared" / "schemas" / "authelia-4.39" / "user-database.json"


def _door_secret(docs: list[dict]) -> dict[str, bytes]:
    (secret,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "front-door"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def _tls_handshake(data: dict[str, bytes], host: str, where: Path) -> None:
    """A real TLS handshake (Python's ssl: OpenSSL; the default client context plus X.509 strict, as
    Python 3.13 makes it by default): a server with lab.crt/lab.key, a client trusting only ca.crt,
    asking for ``host``."""
    import socket
    import ssl
    import threading
    for name in ("lab.crt", "lab.key", "ca.crt"):
        (where / name).write_bytes(data[name])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(where / "lab.crt", where / "lab.key")
    client_ctx = ssl.create_default_context(cafile=str(where / "ca.crt"))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass
        threading.Thread(target=serve, daemon=True).start()
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.recv(2) == b"ok", host


def test_the_chart_makes_the_front_door_secret_when_none_is_given(chart, tmp_path) -> None:
    """`helm template` has no cluster (its `lookup` is empty): the Secret is made fresh, and it is what
    the compose install makes: a CA-signed P-256 wildcard certificate of the domain, an RSA signing key,
    and a users file Authelia's schema accepts whose bcrypt digest verifies the stored password."""
    import ssl

    import bcrypt
    import jsonschema
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from test_export_helm import validate

    docs = _template(chart)
    validate(docs, tmp_path / "objects.yaml")
    data = _door_secret(docs)
    assert set(data) == {"ca.crt", "ca.key", "lab.crt", "lab.key", "oidc-jwks.pem", "users_database.yml",
                         "admin-password"}
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    leaf = x509.load_pem_x509_certificate(data["lab.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)                                    # the chain: signed by the lab CA
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sorted(sans) == ["*.lab.localhost", "lab.localhost"]
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert 824 <= days <= 826 and (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3649
    for cert, key_name in ((leaf, "lab.key"), (ca, "ca.key")):             # each key belongs to its certificate
        key = serialization.load_pem_private_key(data[key_name], password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        same = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(*same) == cert.public_key().public_bytes(*same), key_name
    for host in ("node-red.lab.localhost", "lab.localhost"):
        _tls_handshake(data, host, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(data, "lab.example", tmp_path)
    jwks = serialization.load_pem_private_key(data["oidc-jwks.pem"], password=None)
    assert isinstance(jwks, rsa.RSAPrivateKey) and jwks.key_size >= 2048    # RS256 (Sprig: RSA 4096)
    users = yaml.safe_load(data["users_database.yml"])
    admin = users["users"]["admin"]
    assert admin["groups"] == ["admin"] and admin["disabled"] is False
    password = data["admin-password"]
    assert len(password) == 24 and password.isalnum()
    assert admin["password"].startswith("$2a$10$") and bcrypt.checkpw(password, admin["password"].encode())
    assert not bcrypt.checkpw(password + b"x", admin["password"].encode())
    # the password is in the Secret only: in no other object, and NOTES only says where to read it
    others = yaml.safe_dump_all([d for d in docs if d["metadata"]["name"] != "front-door" or d["kind"] != "Secret"])
    assert password.decode() not in others and base64.b64encode(password).decode() not in others
    # and another render makes other values (nothing fixed in the chart)
    assert _door_secret(_template(chart))["ca.key"] != data["ca.key"]
    if not USERS_SCHEMA.exists():
        pytest.skip(f"{USERS_SCHEMA} is absent (clean clone without ../shared): nothing to validate against")
    jsonschema.validate(users, json.loads(USERS_SCHEMA.read_text()))     # Authelia's own schema of the file


def test_an_existing_front_door_secret_is_mounted_and_nothing_is_made(chart) -> None:
    docs = _template(chart, "frontDoor.existingSecret=my-door")
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "front-door"]
    names = {v["secret"]["secretName"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")
             for v in d["spec"]["template"]["spec"].get("volumes", []) if "secret" in v
             and v["secret"]["secretName"] in ("my-door", "front-door")}
    assert names == {"my-door"}


def test_notes_say_where_the_first_admins_password_is(chart) -> None:
    def notes(*sets: str) -> str:
        args = [require_tool("helm"), "install", "lab", str(chart), "--namespace", "door", "--dry-run=client"]
        for s in sets:
            args += ["--set", s]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]
    made = notes()
    assert "kubectl -n door get secret front-door -o jsonpath='{.data.admin-password}' | base64 -d" in made
    assert "jsonpath='{.data.ca\\.crt}'" in made
    own = notes("frontDoor.existingSecret=my-door")
    assert "admin-password" not in own and "your Secret my-door" in own
