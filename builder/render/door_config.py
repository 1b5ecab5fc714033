"""The front door's two rendered configurations: the provider's and the proxy's.

``render_provider_config`` -> Authelia 4.39 ``configuration.yml``. No secret
value is in it: with ``X_AUTHELIA_CONFIG_FILTERS=template`` Authelia expands
``{{ mustEnv "NAME" }}`` from its environment (compose passes the generated
``DIR/.env`` values) and ``{{ secret "PATH" | mindent 10 "|" | msquote }}``
reads the OIDC signing key made on the target, before it parses the YAML
(authelia/authelia docs/content/reference/guides/templating.md: ``mustEnv``, ``secret``, ``mindent``,
``msquote``; ``env`` hides only names starting ``AUTHELIA_``/``X_AUTHELIA_``, which these are not;
https://www.authelia.com/configuration/methods/secrets/ — the same
``secret | mindent | msquote`` form as the JWKS example of
https://www.authelia.com/configuration/identity-providers/openid-connect/provider/).
Every expanded value is a generated token of ``[A-Za-z0-9_-]`` inside single
quotes, so the expansion cannot change the YAML's shape. It holds: one OIDC
client per ``sign_in = "oidc"`` service (client id = service name, secret
``$plaintext$`` + the generated one, redirect URI = front-door URL + callback,
an authorization policy of its roles); forward-auth rules per host and role
(``group:<role>``), ``default_policy: deny``; the session cookie on the
domain; SQLite on the provider's volume; the filesystem notifier; the users
file ``/access/users_database.yml`` watched (``door.USERS_TARGET``), argon2id.

``render_routes`` -> Traefik v3 dynamic ``routes.yml``: one router per UI on
``Host(`<host>.<domain>`)`` over websecure (TLS), the forward-auth middleware
(Authelia's ``/api/authz/forward-auth``,
authelia/authelia docs/content/integration/proxies/traefik.md) on forward-auth UIs
only, ``auth.<domain>`` to the provider, ``<domain>`` to the home page.
``render_tls`` -> ``tls.yml``: the wildcard certificate made on the target.
"""

from __future__ import annotations

from typing import Any

from ..blueprint import Lab
from .door import (
    CERTS_TARGET,
    FORWARD_AUTH,
    HOME_PORT,
    HOME_SERVICE,
    JWKS_TARGET,
    PROXY,
    USERS_TARGET,
    Door,
    client_secret_name,
)
from .text import dump_yaml

POLICY = "one_factor"                 # password; the lab ships no second factor enrolment (offline, no mail)
_JWKS_MARK = "__LAB_JWKS_KEY__"
_JWKS_TEMPLATE = '{{ secret "' + JWKS_TARGET + '" | mindent 10 "|" | msquote }}'
PROVIDER_SECRETS = {                  # config key path -> the provider's secret (its env name in the container)
    "identity_validation.reset_password.jwt_secret": "RESET_PASSWORD_JWT_SECRET",
    "session.secret": "SESSION_SECRET",
    "storage.encryption_key": "STORAGE_ENCRYPTION_KEY",
    "identity_providers.oidc.hmac_secret": "OIDC_HMAC_SECRET",
}


def env_template(name: str) -> str:
    """Authelia's template call reading environment variable ``name`` (``mustEnv``: an unset one stops
    Authelia with an error instead of leaving the secret empty)."""
    return '{{ mustEnv "' + name + '" }}'


def _groups(roles) -> list[str]:
    return [f"group:{r}" for r in roles]


def provider_config(door: Door, lab: Lab) -> dict[str, Any]:
    """The provider's configuration as data (templates in place of every secret)."""
    d = door.domain
    rules = [{"domain": d, "policy": POLICY, "subject": _groups(sorted(door.access.roles))}]
    rules += [{"domain": f"{fd.host}.{d}", "policy": POLICY, "subject": _groups(fd.roles)}
              for n, fd in door.uis.items() if fd.sign_in == "forward-auth"]
    clients = []
    for n in door.oidc_clients:
        fd = door.uis[n]
        clients.append({
            "client_id": n,
            "client_name": n,
            "client_secret": "$plaintext$" + env_template(client_secret_name(n)),
            "public": False,
            "authorization_policy": n,
            "redirect_uris": [door.redirect_uri(n)],
            "scopes": list(fd.oidc.scopes),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": fd.oidc.token_auth,
        })
    oidc: dict[str, Any] = {
        "hmac_secret": env_template(PROVIDER_SECRETS["identity_providers.oidc.hmac_secret"]),
        "jwks": [{"key_id": "lab", "algorithm": "RS256", "use": "sig", "key": _JWKS_MARK}],
        "authorization_policies": {n: {"default_policy": "deny",
                                       "rules": [{"policy": POLICY, "subject": _groups(door.uis[n].roles)}]}
                                   for n in door.oidc_clients},
        "clients": clients,
    }
    return {
        "server": {"address": f"tcp://:{door.provider_port}/"},
        "log": {"level": "info"},
        "theme": "auto",
        "identity_validation": {"reset_password": {
            "jwt_secret": env_template(PROVIDER_SECRETS["identity_validation.reset_password.jwt_secret"])}},
        "authentication_backend": {
            "password_reset": {"disable": True},
            "password_change": {"disable": True},
            "file": {"path": f"{USERS_TARGET}/users_database.yml", "watch": True,
                     "password": {"algorithm": "argon2", "argon2": {"variant": "argon2id"}}},
        },
        "access_control": {"default_policy": "deny", "rules": rules},
        "session": {"secret": env_template(PROVIDER_SECRETS["session.secret"]),
                    "cookies": [{"domain": d, "authelia_url": door.issuer,
                                 "default_redirection_url": f"https://{d}/"}]},
        "storage": {"encryption_key": env_template(PROVIDER_SECRETS["storage.encryption_key"]),
                    "local": {"path": "/data/db.sqlite3"}},
        "notifier": {"filesystem": {"filename": "/data/notification.txt"}},
        **({"identity_providers": {"oidc": oidc}} if clients else {}),
    }


def render_provider_config(door: Door, lab: Lab) -> str:
    """``configuration.yml`` of the provider (see the module docstring)."""
    text = dump_yaml(provider_config(door, lab))
    # the signing key: a template whose output is a quoted block, not a YAML string of ours
    text = text.replace(f"key: {_JWKS_MARK}\n", f"key: {_JWKS_TEMPLATE}\n")
    head = ("# Authelia configuration of the lab's front door, rendered by labbuild from lab.toml [access]\n"
            "# and the blueprints' [front_door]; do not edit. Secrets are read at start through the\n"
            "# template filter (X_AUTHELIA_CONFIG_FILTERS=template); none is written here.\n")
    return head + text


def routes(door: Door) -> dict[str, Any]:
    """The proxy's dynamic routes as data."""
    d = door.domain
    routers: dict[str, Any] = {}
    services: dict[str, Any] = {}

    def route(name: str, host: str, service: str, url: str | None, guarded: bool) -> None:
        router: dict[str, Any] = {"rule": f"Host(`{host}`)", "entryPoints": ["websecure"], "service": service,
                                  "tls": {}}
        if guarded:
            router["middlewares"] = [FORWARD_AUTH]
        routers[name] = router
        if url is not None:
            services[service] = {"loadBalancer": {"servers": [{"url": url}]}}

    route(door.provider, f"auth.{d}", door.provider, f"http://{door.provider}:{door.provider_port}", False)
    route(HOME_SERVICE, d, HOME_SERVICE, f"http://{HOME_SERVICE}:{HOME_PORT}", True)
    for n, fd in door.uis.items():
        if n == PROXY:      # the proxy's own dashboard: Traefik's internal API service
            route(n, f"{fd.host}.{d}", "api@internal", None, True)
            continue
        route(n, f"{fd.host}.{d}", n, f"http://{n}:{door.ui_ports[n]}", fd.sign_in == "forward-auth")
    middlewares = {FORWARD_AUTH: {"forwardAuth": {
        "address": f"http://{door.provider}:{door.provider_port}/api/authz/forward-auth",
        "trustForwardHeader": True,
        "authResponseHeaders": ["Remote-User", "Remote-Groups", "Remote-Email", "Remote-Name"]}}}
    return {"http": {"routers": routers, "middlewares": middlewares, "services": services}}


def render_routes(door: Door) -> str:
    head = ("# Traefik dynamic routes of the lab's front door, rendered by labbuild; do not edit.\n"
            "# Every UI is https://<host>.<domain>/ over websecure; forward-auth UIs ask the provider first.\n")
    return head + dump_yaml(routes(door))


def render_tls() -> str:
    """``tls.yml``: the wildcard certificate of the domain, made on the target at install (DIR/door/)."""
    cert = {"certFile": f"{CERTS_TARGET}/lab.crt", "keyFile": f"{CERTS_TARGET}/lab.key"}
    head = ("# The front door's certificate: *.<domain> and <domain>, signed by the lab CA that\n"
            "# `labbuild install` makes on the target (DIR/door/ca.crt; trust it in the browser).\n")
    return head + dump_yaml({"tls": {"certificates": [dict(cert)],
                                     "stores": {"default": {"defaultCertificate": dict(cert)}}}})
