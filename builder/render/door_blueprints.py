"""The blueprints the front door changes in a release (see ``builder.render.door``)."""

from __future__ import annotations

from dataclasses import replace

from ..blueprint import Bind, Blueprint, ConfigFile, Healthcheck, Lab, Secret, When
from .door import (
    ACCESS_DIR,
    CA_TARGET,
    CERTS_TARGET,
    DOOR_DIR,
    HOME_SERVICE,
    JWKS_TARGET,
    PROXY,
    ROUTES_FILE,
    TLS_FILE,
    USERS_TARGET,
    Door,
    client_secret_name,
    door_env,
    door_of,
    door_urls,
)
from .door_config import render_provider_config, render_routes, render_tls


def _ui_blueprint(door: Door, bp: Blueprint) -> Blueprint:
    fd = door.uis[bp.name]
    ports = tuple(replace(p, host=None) if p.name == fd.port else p for p in bp.ports)
    env = door_env(door, bp.name)         # OIDC: the service talks to the provider (a [when] wiring)
    when = bp.when + ((When(other=door.provider, env=env),) if env else ())
    binds = bp.binds
    if fd.oidc is not None and "ca_file" in fd.oidc.env:
        binds += (Bind(source=f"{DOOR_DIR}/ca.crt", target=CA_TARGET),)
    # [health] stays: Kubernetes probes the container port; the host has no port to probe (manifest
    # health.host_port is null, so `labbuild install` waits only for a container healthcheck, if any)
    return replace(bp, ports=ports, env={**bp.env, **door_urls(door, bp.name)}, when=when, binds=binds)


def _provider_blueprint(door: Door, bp: Blueprint, lab: Lab) -> Blueprint:
    secrets = bp.secrets + tuple(
        Secret(name=client_secret_name(n), generate="token", length=64,
               description=f"OIDC client secret of {n} (the provider and {n} both read it)", rotate=False,
               rotate_reason="the provider and the service must change it together; labbuild has no holder for both yet")
        for n in door.oidc_clients)
    binds = bp.binds + (Bind(source=ACCESS_DIR, target=USERS_TARGET, read_only=True),
                        Bind(source=f"{DOOR_DIR}/oidc-jwks.pem", target=JWKS_TARGET))
    files = bp.files + (ConfigFile(name="configuration.yml", target="/config/configuration.yml",
                                   content=render_provider_config(door, lab)),)
    return replace(bp, secrets=tuple(sorted(secrets, key=lambda s: s.name)), binds=binds, files=files)


def _proxy_blueprint(door: Door, bp: Blueprint) -> Blueprint:
    command = tuple(a for a in bp.command or () if a != "--api.insecure=true")
    command += ("--entrypoints.web.http.redirections.entrypoint.to=websecure",
                "--entrypoints.web.http.redirections.entrypoint.scheme=https")
    files = tuple(replace(f, content=render_routes(door)) if f.name == ROUTES_FILE else f for f in bp.files)
    if not any(f.name == ROUTES_FILE for f in bp.files):
        files += (ConfigFile(name=ROUTES_FILE, target=f"/etc/traefik/dynamic/{ROUTES_FILE}", content=render_routes(door)),)
    files += (ConfigFile(name=TLS_FILE, target=f"/etc/traefik/dynamic/{TLS_FILE}", content=render_tls()),)
    binds = bp.binds + (Bind(source=f"{DOOR_DIR}/lab.crt", target=f"{CERTS_TARGET}/lab.crt"),
                        Bind(source=f"{DOOR_DIR}/lab.key", target=f"{CERTS_TARGET}/lab.key"))
    # `traefik healthcheck --ping` asks the ping endpoint of the running proxy (doc.traefik.io/traefik/operations/cli/)
    healthcheck = bp.healthcheck or Healthcheck(test=("CMD", "traefik", "healthcheck", "--ping"),
                                                interval="30s", timeout="5s", retries=3, start_period="20s")
    return replace(bp, command=command, files=files, binds=binds, healthcheck=healthcheck)


HOME_PAGE_DIR, HOME_ROOT, HOME_RUNBOOKS = "./access/home", "/usr/share/nginx/html", "/usr/share/nginx/runbooks"


def _home_blueprint(bp: Blueprint) -> Blueprint:
    """The home page's server: the release's ``access/home/`` and its runbooks, read-only."""
    binds = bp.binds + (Bind(source=HOME_PAGE_DIR, target=HOME_ROOT),
                        Bind(source="./runbooks", target=HOME_RUNBOOKS))   # beside, not inside, a read-only mount
    return replace(bp, binds=binds)


def door_blueprints(lab: Lab, profile: str) -> dict[str, Blueprint]:
    """The blueprints the front door changes, as the release renders them ({} when it is off)."""
    door = door_of(lab, profile)
    if door is None:
        return {}
    out = {n: _ui_blueprint(door, lab.services[n]) for n in door.uis}
    out[door.provider] = _provider_blueprint(door, lab.services[door.provider], lab)
    out[PROXY] = _proxy_blueprint(door, out.get(PROXY, lab.services[PROXY]))
    out[HOME_SERVICE] = _home_blueprint(lab.services[HOME_SERVICE])
    return out
