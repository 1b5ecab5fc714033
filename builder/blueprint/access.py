"""The front door (issue 23): lab.toml ``[access]`` and each blueprint's ``[front_door]``.

``parse_access`` reads and checks ``[access]`` (domain, provider, the three
roles, projects); ``check_front_door`` checks one blueprint's ``[front_door]``
on its own (its port is one of its ``[[ports]]``; ``[front_door.oidc]`` exactly
when ``sign_in = "oidc"``); ``check_access`` what spans both (the provider is a
service, every role is one of ``[access.roles]``, every host once). All report
to a ``Collector`` with the file and key path; none raises.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .model import Access, Blueprint
from .source import Collector, Source

ROLES = ("admin", "analyst", "user")           # fixed by the front-door contract
RESERVED_HOSTS = ("auth",)                     # https://auth.<domain>/ is the provider's own
DOMAIN_RE = re.compile(r"^(?=.{1,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_ACCESS_KEYS = {"domain", "provider", "roles", "projects"}


def _text_table(src: Source, path: tuple, value: Any, out: Collector) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
        out.add(src, path, "expected a table of NAME = \"what it is\" (non-empty text)")
        return {}
    return dict(sorted(value.items()))


def parse_access(src: Source, raw: Any, services: dict[str, Any], out: Collector) -> Access | None:
    """lab.toml's ``[access]`` as an ``Access``, or None (absent, or problems reported to ``out``)."""
    if raw is None:
        return None
    path = ("access",)
    if not isinstance(raw, dict):
        out.add(src, path, "expected a table [access]")
        return None
    before = len(out.problems)
    for key in raw:
        if key not in _ACCESS_KEYS:
            close = difflib.get_close_matches(key, sorted(_ACCESS_KEYS), n=1, cutoff=0.6)
            out.add(src, path + (key,), f"unknown key {key!r}",
                    hint=f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(sorted(_ACCESS_KEYS)))
    domain = raw.get("domain")
    if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
        out.add(src, path + ("domain",), f"{domain!r} is not a DNS domain of at least two labels",
                hint='lower-case labels joined by dots, e.g. domain = "lab.localhost" '
                     "(browsers resolve *.localhost to loopback with no DNS)")
    provider = raw.get("provider")
    if not isinstance(provider, str) or provider not in services:
        close = difflib.get_close_matches(str(provider), sorted(services), n=1)
        out.add(src, path + ("provider",), f"provider {provider!r} is not a service of the lab",
                hint=f"did you mean {close[0]!r}?" if close
                else "name the identity-provider service, e.g. provider = \"authelia\"")
    roles = _text_table(src, path + ("roles",), raw.get("roles"), out)
    if roles and set(roles) != set(ROLES):
        out.add(src, path + ("roles",), "the roles must be exactly " + ", ".join(ROLES)
                + f" (got {', '.join(sorted(roles))})",
                hint="each role says what it may do; the blueprints' [front_door] roles name them")
    projects = _text_table(src, path + ("projects",), raw.get("projects", {}), out)
    for name in projects:
        if not PROJECT_RE.match(name):
            out.add(src, path + ("projects", name), f"project name {name!r} is not a group name",
                    hint="lower-case letters, digits and hyphens, starting with a letter (it becomes a group)")
        elif name in ROLES:
            out.add(src, path + ("projects", name), f"project {name!r} has the name of a role",
                    hint="roles and projects are both groups of the provider: give the project another name")
    if len(out.problems) != before:
        return None
    return Access(domain=domain, provider=provider, roles=roles, projects=projects)


def check_front_door(bp: Blueprint, src: Source, out: Collector) -> None:
    """``[front_door]`` on its own: a port of this service; ``oidc`` exactly with ``sign_in = "oidc"``."""
    fd = bp.front_door
    if fd is None:
        return
    names = {p.name for p in bp.ports}
    if fd.port not in names:
        out.add(src, ("front_door", "port"), f"no port named {fd.port!r}",
                hint="ports of this service: " + (", ".join(sorted(names)) or "none"))
    if fd.sign_in == "oidc" and fd.oidc is None:
        out.add(src, ("front_door", "sign_in"), 'sign_in = "oidc" needs a [front_door.oidc] table',
                hint="give its callback path and the env names the service reads, or use sign_in = \"forward-auth\"")
    if fd.sign_in != "oidc" and fd.oidc is not None:
        out.add(src, ("front_door", "oidc"), f'[front_door.oidc] is only read with sign_in = "oidc" (here {fd.sign_in!r})',
                hint='drop the table, or set sign_in = "oidc" if the service signs in against the provider')
    oidc_names = set(fd.oidc.env.values()) if fd.oidc is not None else set()
    for i, name in enumerate(fd.url_env):
        if name in oidc_names:
            out.add(src, ("front_door", "url_env", i), f"{name} is also one of [front_door.oidc.env]",
                    hint="name each env variable once: base_url in [front_door.oidc.env] already carries the URL")
    if fd.host in RESERVED_HOSTS:
        out.add(src, ("front_door", "host"), f"host {fd.host!r} is the provider's own",
                hint="https://auth.<domain>/ is the sign-in page; pick another host")


def check_access(lab_src: Source, access: Access, services: dict[str, tuple[Blueprint, Source]],
                 out: Collector) -> None:
    """What spans lab.toml and the blueprints: known roles, one service per host."""
    hosts: dict[str, str] = {}
    for name in sorted(services):
        bp, src = services[name]
        fd = bp.front_door
        if fd is None:
            continue
        for i, role in enumerate(fd.roles):
            if role not in access.roles:
                out.add(src, ("front_door", "roles", i), f"unknown role {role!r}",
                        hint="roles of lab.toml [access.roles]: " + ", ".join(sorted(access.roles)))
        if fd.host in hosts:
            out.add(src, ("front_door", "host"), f"host {fd.host!r} is also the front door of {hosts[fd.host]!r}",
                    hint="every UI needs its own https://<host>.<domain>/")
        hosts.setdefault(fd.host, name)
    if access.provider in services and services[access.provider][0].front_door is not None:
        bp, src = services[access.provider]
        out.add(src, ("front_door",), "the identity provider is the front door itself",
                hint="it is served at https://auth.<domain>/ without a [front_door] table")
