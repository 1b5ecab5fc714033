"""The grammar of every name in a manifest that reaches paths, env files and commands on the
target, and the range of every port that install binds or probes: checked in full when a manifest
is read (``Manifest.from_json``), the same questions validate asks of a blueprint."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .. import names
from .files import bundle_top, safe_relative
from .models import model_format

if TYPE_CHECKING:
    from .manifest import Manifest, ManifestService


def manifest_grammar_problems(m: "Manifest") -> list[str]:
    """Names in a manifest that reach paths, env files and commands on the target, checked in full;
    ports held to 1-65535."""
    out = []
    for kind, key, value in (("lab", "lab", m.lab), ("profile", "profile", m.profile),
                             ("version", "version", m.version)):
        if not names.is_valid(kind, value):
            out.append(f"{key}: {names.problem(kind, value)}")
    top = bundle_top(m.lab, m.profile, m.version)
    if not out and not (m.name == top or (m.name.startswith(top + "-") and re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", m.name))):
        out.append(f"name: {m.name!r} is not the bundle's top directory {top!r}")
    out += [f"platforms: {names.problem('platform', p)}" for p in m.platforms if not names.is_valid("platform", p)]
    for svc, s in m.services.items():
        if not names.is_valid("service", svc):
            out.append(f"services: {names.problem('service', svc)}")
        out += [f"services.{svc}.secrets: {names.problem('env_key', k)}" for k in s.secrets
                if not names.is_valid("env_key", k)]
        out += [f"services.{svc}.volumes: {v.volume!r} is not a volume name" for v in s.volumes
                if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", v.volume)]
        if not names.is_valid("digest", s.digest):
            out.append(f"services.{svc}.digest: {names.problem('digest', s.digest)}")
        ports = {f"ports.{i}.{k}": getattr(p, k) for i, p in enumerate(s.ports) for k in ("container", "host")}
        ports["health.host_port"] = s.health.host_port if s.health is not None else None
        out += [f"services.{svc}.{k}: port {n!r} is out of range (1-65535)" for k, n in ports.items()
                if n is not None and not names.is_port(n)]
        out += model_grammar_problems(svc, s)
        out += rotation_grammar_problems(svc, s)
        out += provision_grammar_problems(svc, s)
    out += [f"files: {rel!r} is not a safe relative path" for rel in m.files if not safe_relative(rel)]
    if m.since is not None:     # a delta: its base's names reach messages, install.sh and file names too
        since = m.since
        if not names.is_valid("version", since.version):
            out.append(f"since.version: {names.problem('version', since.version)}")
        if not re.fullmatch(r"[0-9a-f]{64}", since.manifest_sha256):
            out.append("since.manifest_sha256: not a sha256 hex digest")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", since.bundle):
            out.append(f"since.bundle: {since.bundle[:80]!r} is not a bundle file name")
        out += [f"since.blobs: {names.problem('digest', d)}" for d in since.blobs if not names.is_valid("digest", d)]
        out += [f"since.images: {names.problem('digest', i.config)}" for i in since.images
                if not names.is_valid("digest", i.config)]
    return out


def model_grammar_problems(svc: str, s: "ManifestService") -> list[str]:
    """A service's models: every name that install turns into a path inside a volume."""
    out = []
    volumes = {v.name for v in s.volumes}
    for i, m in enumerate(s.models):
        where = f"services.{svc}.models.{i}"
        fmt = model_format(m.format)
        if fmt and (why := fmt.name_problem(m.name)):     # what validate asks: one grammar on both sides
            out.append(f"{where}.name: {why[0]}")
        if not names.is_valid("model_tag", m.tag):
            out.append(f"{where}.tag: {names.problem('model_tag', m.tag)}")
        out += [f"{where}: {names.problem('digest', d)}" for d in (m.digest, *(b.digest for b in m.blobs))
                if not names.is_valid("digest", d)]
        if not safe_relative(m.path):
            out.append(f"{where}.path: {m.path!r} is not a safe relative path")
        if m.volume not in volumes:
            out.append(f"{where}.volume: {m.volume!r} is not a volume of {svc}")
        if fmt is None:
            out.append(f"{where}.format: {m.format!r} is not a known layout")
    return out



def rotation_grammar_problems(svc: str, s: "ManifestService") -> list[str]:
    """A service's rotation decisions: each names one of its own keys, and says what validate asks."""
    out = []
    own = set(s.secrets) | {x.key for x in s.supplied}
    for key, r in s.rotation.items():
        where = f"services.{svc}.rotation.{key}"
        if key not in own:
            out.append(f"{where}: {key!r} is not a secret of {svc}")
        if r.rotate and r.reason or not r.rotate and (r.days is not None or r.holder or not r.reason):
            out.append(f"{where}: a reason goes only with rotate false; days and holder only with rotate true")
        if r.days is not None and not 1 <= r.days <= 3650:
            out.append(f"{where}.days: {r.days} is out of range (1-3650)")
        if any(not arg for arg in r.holder):
            out.append(f"{where}.holder: an empty argument")
    return out


def provision_grammar_problems(svc: str, s: "ManifestService") -> list[str]:
    """A service's provisioning steps: what install turns into an HTTP request (to 127.0.0.1, or to the
    container's address for a port not published) and the
    DIR/.env keys it reads; the sign-in keys it prints once are its own secrets."""
    out = []
    for i, p in enumerate(s.provision):
        where = f"services.{svc}.provision.{i}"
        if p.method not in ("POST", "PUT", "PATCH", "GET"):
            out.append(f"{where}.method: {p.method[:20]!r} is not POST, PUT, PATCH or GET")
        if p.method == "GET" and p.body:
            out.append(f"{where}.body: a GET call carries no body")
        if p.bearer and p.bearer not in p.keys:
            out.append(f"{where}.bearer: {p.bearer[:60]!r} is not one of the step's keys")
        if p.host_port is not None and not names.is_port(p.host_port):
            out.append(f"{where}.host_port: port {p.host_port!r} is out of range (1-65535)")
        if p.container_port is not None and not names.is_port(p.container_port):
            out.append(f"{where}.container_port: port {p.container_port!r} is out of range (1-65535)")
        if p.host_port is None and p.container_port is None:
            out.append(f"{where}: neither host_port nor container_port: no way to the service")
        if not re.fullmatch(r"/[A-Za-z0-9._~/%-]{0,199}", p.path):
            out.append(f"{where}.path: {p.path[:80]!r} is not a request path")
        out += [f"{where}.keys: {names.problem('env_key', k)}" for k in p.keys if not names.is_valid("env_key", k)]
        if not p.status or any(not 200 <= c <= 599 for c in (*p.status, *p.already_status)):
            out.append(f"{where}.status: statuses are 200-599, at least one for success")
        if any(ord(c) < 32 or ord(c) == 127 for c in p.description + p.already_text):
            out.append(f"{where}: a control character in description or already_text")
    out += [f"services.{svc}.show: {k!r} is not a secret of {svc}" for k in s.show if k not in s.secrets]
    return out
