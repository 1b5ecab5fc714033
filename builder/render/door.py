"""The front door (issue 23) in a release: what changes when the profile holds the provider.

``door_of(lab, profile)`` is None unless the profile's closure holds lab.toml
``[access] provider``; then every service of the closure with a
``[front_door]`` is reached only at ``https://<host>.<domain>/`` through the
proxy. ``door_blueprints.door_blueprints`` gives the blueprints as the release renders them
(``ReleaseInput.blueprint`` reads them, so compose.yaml, lab.env,
secrets.env.example and manifest.json all agree):

- a UI service: its UI port has no host port (and no host probe); the env
  names of ``url_env`` get ``https://<host>.<domain>/``, those of ``[front_door.oidc.env]`` are filled (issuer ``https://auth.<domain>``,
  client id = the service name, client secret = the provider's generated
  secret ``OIDC_CLIENT_<SERVICE>`` by reference, base URL, endpoints, the lab
  CA's path); with ``ca_file`` the lab CA is mounted read-only.
- the provider: one generated secret per OIDC client (DIR/.env, never in a
  bundle), its rendered configuration (``config/<provider>/configuration.yml``,
  ``door_config``), the users directory ``DIR/access`` (read-only at ``/access``,
  outside the ``/config`` its entrypoint chowns, see ``USERS_TARGET``) and the OIDC
  signing key ``DIR/door/oidc-jwks.pem`` (made on the target at install, read-only).
- the proxy: ``routes.yml`` replaced by the door's routers (websecure only, web
  redirects), ``tls.yml`` naming the wildcard certificate ``DIR/door/lab.crt``
  made on the target, no ``--api.insecure`` (its dashboard is a forward-auth
  route, admin only), an in-container ping healthcheck, and network aliases so
  containers reach ``https://auth.<domain>`` through it.

Paths on the target (relative to ``DIR/releases/<version>/``, where compose
reads the release's compose.yaml): ``../../access`` and ``../../door``.
``render_access_json`` writes ``access/lab.json`` (the contract's shape).
The home page at ``https://<domain>/`` is routed to the service ``home``
(port 8080, required in the closure), behind forward-auth for every role; it
serves the bundle's ``access/home/index.html`` (``render.homepage``) and the
bundle's runbooks beside it, mounted read-only by ``door_blueprints``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..blueprint import Access, FrontDoor, Lab, env_id
from ..errors import BundleError
from ..format.files import runbook_path

PROXY = "traefik"
HOME_SERVICE, HOME_PORT = "home", 8080
ACCESS_DIR = "../../access"          # DIR/access: the provider's users file (labbuild users)
DOOR_DIR = "../../door"              # DIR/door: lab CA, wildcard certificate, OIDC signing key (install makes them)
CA_TARGET = "/etc/lab-ca/ca.crt"
# Outside /config: the official image's entrypoint.sh (authelia/authelia v4.39.15) runs, as uid 0 with
# the default command, `chown -R "${PUID}:${PGID}" /config` (Dockerfile: PUID=0 PGID=0) before
# `su-exec`. A writable host directory under /config would become root's, and a non-root operator's
# `labbuild users` could no longer write it. Mounted read-only too: Authelia writes the file only
# for a password change or reset in its portal (FileUserProvider.ChangePassword/UpdatePassword),
# both disabled in the lab, and a read-only mount is never chowned (EROFS).
USERS_TARGET = "/access"
JWKS_TARGET = "/config/keys/oidc-jwks.pem"
CERTS_TARGET = "/etc/traefik/certs"
ROUTES_FILE, TLS_FILE = "routes.yml", "tls.yml"
FORWARD_AUTH = "lab-forward-auth"


@dataclass(frozen=True)
class Door:
    """The front door of one release: lab.toml ``[access]`` and the closure's UIs."""

    access: Access
    uis: dict[str, FrontDoor]          # service -> its [front_door], sorted
    provider_port: int
    ui_ports: dict[str, int]           # service -> the container port of its UI

    @property
    def domain(self) -> str:
        return self.access.domain

    @property
    def provider(self) -> str:
        return self.access.provider

    @property
    def issuer(self) -> str:
        return f"https://auth.{self.domain}"

    def base_url(self, service: str) -> str:
        """``https://<host>.<domain>`` (no trailing slash)."""
        return f"https://{self.uis[service].host}.{self.domain}"

    def redirect_uri(self, service: str) -> str:
        return self.base_url(service) + self.uis[service].oidc.callback

    @property
    def oidc_clients(self) -> list[str]:
        return [n for n, fd in self.uis.items() if fd.sign_in == "oidc"]

    @property
    def aliases(self) -> list[str]:
        """Names the proxy answers to on the lab network (so containers reach the front door too)."""
        return sorted({f"auth.{self.domain}", self.domain, *(f"{fd.host}.{self.domain}" for fd in self.uis.values())})


def client_secret_name(service: str) -> str:
    """The provider's secret holding ``service``'s OIDC client secret (``AUTHELIA__OIDC_CLIENT_N8N``)."""
    return f"OIDC_CLIENT_{env_id(service)}"


def door_of(lab: Lab, profile: str) -> Door | None:
    """The release's front door, or None when the profile's closure has no provider."""
    if not lab.door_on(profile):
        return None
    closure = lab.profile_closure(profile)
    if PROXY not in closure:
        raise BundleError(f"profile {profile!r} holds the front door's provider {lab.access.provider!r} but not {PROXY!r}",
                          hint=f"add {PROXY!r} to the profile: every UI is reached through it when the door is on")
    if HOME_SERVICE not in closure:
        raise BundleError(f"profile {profile!r} holds the front door's provider {lab.access.provider!r} but not {HOME_SERVICE!r}",
                          hint=f"add {HOME_SERVICE!r} to the profile: it serves the home page at https://{lab.access.domain}/")
    provider = lab.services[lab.access.provider]
    if not provider.ports:
        raise BundleError(f"{provider.path}: the provider has no [[ports]] entry to route https://auth.<domain>/ to")
    uis = {n: lab.services[n].front_door for n in closure if lab.services[n].front_door is not None}
    return Door(access=lab.access, uis=uis, provider_port=provider.ports[0].container,
                ui_ports={n: lab.services[n].port(fd.port).container for n, fd in uis.items()})


def door_urls(door: Door, service: str) -> dict[str, str]:
    """The values of ``service``'s ``[front_door] url_env`` names: its own front-door URL."""
    return {name: door.base_url(service) + "/" for name in sorted(door.uis[service].url_env)}


def door_env(door: Door, service: str) -> dict[str, str]:
    """The values of ``service``'s ``[front_door.oidc.env]`` names (empty for forward-auth)."""
    fd = door.uis[service]
    if fd.oidc is None:
        return {}
    values = {
        "issuer": door.issuer,
        "client_id": service,
        "client_secret": "${secret:" + f"{door.provider}.{client_secret_name(service)}" + "}",
        "base_url": door.base_url(service),
        "discovery": door.issuer + "/.well-known/openid-configuration",
        "auth_url": door.issuer + "/api/oidc/authorization",
        "token_url": door.issuer + "/api/oidc/token",
        "userinfo_url": door.issuer + "/api/oidc/userinfo",
        "ca_file": CA_TARGET,
    }
    return {name: values[key] for key, name in sorted(fd.oidc.env.items())}


def render_access_json(door: Door, lab: Lab) -> str:
    """``access/lab.json``: the front door for ``labbuild users`` and the home page (the contract's shape)."""
    doc = {"domain": door.domain, "provider": door.provider, "roles": door.access.roles,
           "projects": door.access.projects,
           "services": {n: {"description": lab.services[n].description, "url": door.base_url(n) + "/",
                            "roles": list(fd.roles), "sign_in": fd.sign_in, "runbook": runbook_path(n),
                            **({"projects_note": {"what": fd.projects.what, "isolation": fd.projects.isolation}}
                               if fd.projects is not None else {})}
                        for n, fd in door.uis.items()}}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
