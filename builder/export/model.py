"""The lab as a Helm chart sees it, read from a bundle's rendered files.

``lab_model(members)`` takes the text members of one bundle (``{arcname:
bytes}``: compose.yaml, lab.env, manifest.json, secrets.env.example,
config/, observability/, runbooks/) and returns a ``ChartLab``: plain,
frozen data, already resolved for the bundle's profile. Both ways into
``labbuild export helm`` end here — a bundle archive, or ``--profile P``,
which plans the same bundle in memory — so the env wiring, ``[when.*]``
blocks, ``${secret:SVC.NAME}`` references and ``[[files]]`` are resolved
exactly once, by ``builder.render``, and a chart made from a bundle equals
the one made from the blueprints it was released from.

What comes from where: images, ports, health, volumes, depends_on (with
``[when]``) and secret names from manifest.json; environment, command,
entrypoint, user, privileged, mounts, resources and the in-container
healthcheck from compose.yaml; settings' values from lab.env; each secret's
generator from secrets.env.example; scrape targets from the bundle's
Prometheus config; the description from the service's runbook (as plain
text). Pure: no disk, no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import yaml

from ..blueprint import env_id
from ..errors import BundleError
from ..escape import markdown_text_plain
from ..format.files import (
    ACCESS_JSON,
    COMPOSE_FILE,
    LAB_ENV,
    MANIFEST,
    OPTIONAL_TARGETS,
    SECRETS_EXAMPLE,
    runbook_path,
)
from ..format.manifest import Manifest, ManifestService, ManifestVolume
from ..format.secrets_example import read_secrets_example
from ..render import parse_env_file
from ..render.door import PROXY
from ..render.observability import PROM_DIR

PROMETHEUS_CONFIG = f"{PROM_DIR}/prometheus.yml"
# ${VAR}, ${VAR:?message} and the escape $$ — the only forms render_compose writes.
_COMPOSE_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[-?][^}]*)?\}")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$", re.I)


@dataclass(frozen=True)
class SecretRef:
    """A reference to secret ``name`` (a Secret data key) of service ``service``."""
    service: str
    name: str


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: literal text and secret references, in order.

    ``setting`` marks a plain non-secret setting (from lab.env): the chart
    puts those into values.yaml, where operators override them.
    """
    name: str
    parts: tuple[str | SecretRef, ...]
    setting: bool = False

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))


@dataclass(frozen=True)
class Secret:
    name: str                      # the key inside the service's Secret
    generate: str                  # token | password | hex | supplied | bcrypt (derived)
    length: int
    description: str = ""
    prefix: str = ""               # fixed text before the random part (LiteLLM's sk-)
    derive_from: str = ""          # generate "bcrypt": the hash of this Secret's key derive_from


@dataclass(frozen=True)
class Port:
    name: str
    container: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class Probe:
    """How the cluster asks whether a service is up."""
    kind: str                      # http | https | tcp | exec
    port: str | None = None
    path: str | None = None
    command: tuple[str, ...] = ()
    start_period: float = 0.0      # seconds
    timeout: float | None = None
    interval: float | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Mount:
    """A path in the container: a named volume, a bundle file or directory, or a host path."""
    kind: str                      # volume | file | dir | host | install (DIR/door/…, DIR/access: a Secret)
    name: str                      # volume name / bundle path / host path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Scrape:
    port: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    bearer: SecretRef | None = None     # [metrics] bearer_secret: Prometheus sends this secret as a Bearer token


@dataclass(frozen=True)
class ChartService:
    name: str
    description: str
    repository: str                # docker.io/library/postgres
    tag: str
    digest: str
    ports: tuple[Port, ...] = ()
    env: tuple[EnvVar, ...] = ()
    secrets: tuple[Secret, ...] = ()
    command: tuple[str, ...] | None = None      # compose entrypoint
    args: tuple[str, ...] | None = None         # compose command
    run_as: tuple[int, int | None] | None = None
    user: str | None = None                     # as written, when not numeric
    privileged: bool = False
    mounts: tuple[Mount, ...] = ()
    memory: str | None = None                   # Kubernetes quantity (e.g. 16Gi)
    cpus: str | None = None
    gpus: int | None = None
    probe: Probe | None = None
    depends_on: tuple[str, ...] = ()
    wired_to: tuple[str, ...] = ()      # partners of its active [when.X] blocks (manifest.json)
    optional: bool = False              # the profile's optional: never fails an install
    scrape: Scrape | None = None
    provision: tuple[str, ...] = ()     # "POST /path: description" of its [[provision]] steps (the chart makes none)

    @property
    def volumes(self) -> tuple[Mount, ...]:
        return tuple(m for m in self.mounts if m.kind == "volume")

    @property
    def repository_path(self) -> str:
        """The repository without its registry host: ``library/postgres``."""
        return self.repository.split("/", 1)[1]

    @property
    def waits_for_supplied(self) -> bool:
        """Optional and needing an operator-supplied secret: left out until its Secret exists
        (``services.<name>.existingSecret``), as compose leaves it unstarted."""
        return self.optional and any(s.generate == "supplied" for s in self.secrets)


@dataclass(frozen=True)
class ChartLab:
    lab: str
    profile: str
    version: str
    labbuild: str
    services: dict[str, ChartService]
    files: dict[str, bytes]                     # bundle files the chart mounts or ships
    edges: dict[str, dict[str, tuple[str, ...]]]   # client -> {server: port names it may connect to}
    door: "ChartDoor | None" = None             # the front door (the bundle's access/lab.json), if on


@dataclass(frozen=True)
class ChartDoor:
    """The front door as the chart sees it: the provider's forward-auth endpoint and each UI's host."""
    domain: str
    provider: str
    provider_port: int
    hosts: dict[str, str]                      # UI service -> its front-door host name (<host>.<domain>)
    forward_auth: tuple[str, ...]              # UIs behind forward-auth (the others sign in with OIDC)

    @property
    def issuer_host(self) -> str:
        """The provider's host name: the OIDC issuer is ``https://auth.<domain>`` (``render.door``)."""
        return f"auth.{self.domain}"

    @property
    def oidc(self) -> tuple[str, ...]:
        """The UIs that sign in with OIDC: their server side calls the issuer, through the proxy."""
        return tuple(n for n in sorted(self.hosts) if n not in self.forward_auth)


# --------------------------------------------------------------------------- reading

def _member(members: dict[str, bytes], name: str) -> bytes:
    try:
        return members[name]
    except KeyError:
        raise BundleError(f"the bundle has no {name}", hint="is it a labbuild bundle of this format?") from None


def _text(members: dict[str, bytes], name: str) -> str:
    return _member(members, name).decode("utf-8")


def _seconds(duration: str | None) -> float | None:
    """``1m30s`` -> 90.0 (the compose / Go duration forms the blueprints use)."""
    if duration is None:
        return None
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(m[1]) * {"ms": 0.001, "h": 3600, "m": 60, "s": 1}[m[2]]
        pos = m.end()
    if pos != len(duration):
        raise BundleError(f"cannot read the duration {duration!r}", hint="use forms like 30s, 10m, 1h")
    return total


def kube_memory(value: str) -> str:
    """Docker's ``512m`` / ``16g`` (binary units) as a Kubernetes quantity: ``512Mi`` / ``16Gi``."""
    m = _MEMORY.match(str(value).strip())
    if not m:
        raise BundleError(f"cannot read the memory size {value!r}", hint="use forms like 512m or 4g")
    number, unit = m[1], m[2].lower()
    return number + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}[unit]


def _unescape(value: str) -> str:
    """A literal compose string (``$$`` -> ``$``)."""
    return value.replace("$$", "$")


def _env_value(raw: str, settings: dict[str, str], owners: dict[str, SecretRef]) -> tuple[tuple, bool]:
    """Resolve one compose value: (parts, is_plain_setting)."""
    parts: list[str | SecretRef] = []
    pos, refs = 0, []
    for m in _COMPOSE_TOKEN.finditer(raw):
        parts.append(raw[pos:m.start()])
        pos = m.end()
        if m[0] == "$$":
            parts.append("$")
        elif m[1] in owners:
            parts.append(owners[m[1]])
            refs.append(m[1])
        elif m[1] in settings:
            parts.append(settings[m[1]])
        else:
            raise BundleError(f"compose.yaml refers to ${{{m[1]}}}, which neither lab.env nor "
                              "secrets.env.example defines", hint="the bundle is damaged; release it again")
    parts.append(raw[pos:])
    merged: list[str | SecretRef] = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        elif p != "":
            merged.append(p)
    plain = not refs and bool(re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", raw))
    return tuple(merged), plain


def _secrets(text: str) -> dict[str, list[tuple[str, Secret]]]:
    """``{service: [(env key, Secret)]}`` from secrets.env.example (keys whose comment names no service
    are not the bundle's: left out)."""
    out: dict[str, list[tuple[str, Secret]]] = {}
    for s in read_secrets_example(text):
        if s.service is not None:
            out.setdefault(s.service, []).append(
                (s.key, Secret(name=s.key[len(env_id(s.service)) + 2:], generate=s.generate, length=s.length,
                               description=s.description, prefix=s.prefix,
                               derive_from=s.derive_from[len(env_id(s.service)) + 2:] if s.derive_from else "")))
    return out


def _mounts(spec: list[str], volumes: dict[str, ManifestVolume], members: dict[str, bytes]) -> tuple[Mount, ...]:
    out = []
    for entry in spec:
        read_only = entry.endswith(":ro")
        body = entry[:-3] if read_only or entry.endswith(":rw") else entry
        source, target = body.split(":", 1)
        if source.startswith("./"):
            rel = source[2:]
            kind = "file" if rel in members else "dir"
            if kind == "dir" and not any(n.startswith(rel + "/") for n in members):
                raise BundleError(f"compose.yaml mounts ./{rel}, which the bundle does not hold",
                                  hint="the bundle is damaged; release it again")
            out.append(Mount(kind, rel, _unescape(target), True))
        elif source.startswith("/"):
            out.append(Mount("host", _unescape(source), _unescape(target), read_only))
        elif source.startswith("../../"):
            # the install dir's own files (the front door's DIR/door/ keys, DIR/access/ users), made on
            # the target: in a chart they come from the Secret FRONT_DOOR_SECRET (made by the chart, or the operator's)
            out.append(Mount("install", _unescape(source[len("../../"):]), _unescape(target), read_only))
        else:
            vol = volumes[source]
            out.append(Mount("volume", vol.name, vol.target, vol.read_only))
    return tuple(out)


def _probe(manifest_svc: ManifestService, compose_svc: dict) -> Probe | None:
    health = manifest_svc.health
    if health:
        # httpGet accepts 200-399 only: a probe that must accept 401 (behind auth) checks the port
        kind = "tcp" if health.scheme == "tcp" or any(s >= 400 for s in health.status) else health.scheme
        return Probe(kind=kind, port=health.port, path=health.path if kind != "tcp" else None,
                     start_period=_seconds(health.start_period) or 0.0, timeout=_seconds(health.timeout))
    check = compose_svc.get("healthcheck")
    if check:
        test = [_unescape(t) for t in check["test"]]
        command = ("sh", "-c", test[1]) if test[0] == "CMD-SHELL" else tuple(test[1:])
        return Probe(kind="exec", command=command, start_period=_seconds(check.get("start_period")) or 0.0,
                     timeout=_seconds(check.get("timeout")), interval=_seconds(check.get("interval")),
                     retries=check.get("retries"))
    return None


def _scrapes(text: str, manifest: Manifest, optional: bytes | None) -> dict[str, Scrape]:
    """Each scraped service's port, path and params. An optional service's job names its target
    in a file_sd file that install fills (``optional-targets.json`` holds the group); in the
    chart, discovery finds its endpoints only once it runs, so it is scraped like the others."""
    out = {}
    groups = json.loads(optional)["groups"] if optional else {}
    for job in (yaml.safe_load(text) or {}).get("scrape_configs", []):
        if "static_configs" in job:
            target = job["static_configs"][0]["targets"][0]
        elif job.get("job_name") in groups:
            target = groups[job["job_name"]]["targets"][0]
        else:
            raise BundleError(f"{PROMETHEUS_CONFIG}: job {job.get('job_name')!r} names no target",
                              hint="the bundle is damaged or was made by another labbuild")
        svc, port = target.rsplit(":", 1)
        name = next(p.name for p in manifest.services[svc].ports if p.container == int(port))
        params = {k: v[0] for k, v in sorted((job.get("params") or {}).items())}
        out[svc] = Scrape(port=name, path=job.get("metrics_path", "/metrics"), params=params)
    return out


def _description(members: dict[str, bytes], name: str) -> str:
    """The service's description: the third line of its runbook, Markdown escapes undone."""
    lines = members.get(runbook_path(name), b"").decode("utf-8").split("\n")
    return markdown_text_plain(lines[2]) if len(lines) > 2 else ""


def lab_model(members: dict[str, bytes]) -> ChartLab:
    """The chart's view of one bundle (see the module docstring)."""
    manifest = Manifest.loads(_member(members, MANIFEST))
    try:
        compose = yaml.safe_load(_text(members, COMPOSE_FILE))
    except yaml.YAMLError as exc:
        raise BundleError(f"unreadable bundle file: {exc}", hint="the bundle is damaged; release it again") from None
    settings = parse_env_file(_text(members, LAB_ENV))
    secrets = _secrets(_text(members, SECRETS_EXAMPLE))
    for svc, entry in manifest.services.items():     # operator-supplied: never generated, named by the manifest
        for sup in entry.supplied:
            secrets.setdefault(svc, []).append(
                (sup.key, Secret(name=sup.key[len(env_id(svc)) + 2:], generate="supplied", length=0,
                                 description=sup.description)))
    owners = {key: SecretRef(svc, s.name) for svc, items in secrets.items() for key, s in items}
    scrapes = (_scrapes(members[PROMETHEUS_CONFIG].decode(), manifest, members.get(OPTIONAL_TARGETS))
               if PROMETHEUS_CONFIG in members else {})
    for svc, scrape in scrapes.items():   # a bearer_secret: compose's <svc>_metrics_bearer names its .env key
        key = ((compose.get("secrets") or {}).get(f"{svc.replace('-', '_')}_metrics_bearer") or {}).get("environment")
        if key in owners:
            scrapes[svc] = replace(scrape, bearer=owners[key])
    services = {}
    for name in sorted(manifest.services):
        m, c = manifest.services[name], compose["services"][name]
        env = []
        for key, raw in sorted((c.get("environment") or {}).items()):
            parts, plain = _env_value(str(raw), settings, owners)
            env.append(EnvVar(key, parts, setting=plain))
        res = {"memory": c.get("mem_limit"), "cpus": c.get("cpus")}
        devices = (((c.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        gpus = devices[0]["count"] if devices else m.gpus   # the manifest's [resources] gpus (compose.gpu.yaml)
        user = c.get("user")
        run_as = None
        if user and re.fullmatch(r"\d+(:\d+)?", user):
            uid, _, gid = user.partition(":")
            run_as = (int(uid), int(gid) if gid else None)
        repository, tag = m.image.rsplit(":", 1)
        services[name] = ChartService(
            name=name, description=_description(members, name), repository=repository,
            tag=tag, digest=m.digest, ports=tuple(Port(p.name, p.container, p.protocol) for p in m.ports),
            env=tuple(env), secrets=tuple(s for _, s in secrets.get(name, [])),
            command=tuple(_unescape(a) for a in c["entrypoint"]) if "entrypoint" in c else None,
            args=tuple(_unescape(a) for a in c["command"]) if "command" in c else None,
            run_as=run_as, user=user if user and run_as is None else None,
            privileged=bool(c.get("privileged")),
            mounts=_mounts(c.get("volumes") or [], {v.volume: v for v in m.volumes}, members),
            memory=kube_memory(res["memory"]) if res["memory"] else None,
            cpus=format(float(res["cpus"]), "g") if res["cpus"] else None,
            gpus=None if gpus is None else (1 if gpus == "all" else int(gpus)),
            probe=_probe(m, c), depends_on=m.depends_on, wired_to=m.wired_to, scrape=scrapes.get(name),
            optional=m.optional,
            provision=tuple(f"{p.method} {p.path}: {p.description}" for p in m.provision))
    files = {n: b for n, b in members.items()
             if n.startswith(("config/", "observability/", "runbooks/"))}
    door = _door(members, services)
    edges = door_edges(network_edges(services, files), door, services)
    return ChartLab(lab=manifest.lab, profile=manifest.profile, version=manifest.version,
                    labbuild=manifest.labbuild, services=services, files=dict(sorted(files.items())),
                    edges=edges, door=door)


def _door(members: dict[str, bytes], services: dict[str, ChartService]) -> ChartDoor | None:
    """The bundle's front door (``access/lab.json``, written by ``render.door``), or None."""
    if ACCESS_JSON not in members:
        return None
    try:
        doc = json.loads(members[ACCESS_JSON])
        provider = doc["provider"]
        hosts = {n: urlsplit(s["url"]).hostname for n, s in doc["services"].items() if n in services}
        forward = tuple(sorted(n for n, s in doc["services"].items() if n in services and s["sign_in"] == "forward-auth"))
        port = services[provider].ports[0].container
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise BundleError(f"{ACCESS_JSON}: not the front door's description ({type(exc).__name__}: {exc})",
                          hint="the bundle is damaged; release it again") from None
    return ChartDoor(domain=doc["domain"], provider=provider, provider_port=port, hosts=hosts, forward_auth=forward)


# --------------------------------------------------------------------------- who talks to whom

def door_edges(edges: dict[str, dict[str, tuple[str, ...]]], door: ChartDoor | None,
               services: dict[str, ChartService]) -> dict[str, dict[str, tuple[str, ...]]]:
    """``edges`` plus, with the front door on, each OIDC client's connection to the proxy's HTTPS
    port: its server side calls ``https://auth.<domain>`` (token, userinfo, keys), which the proxy
    answers (compose: the proxy's network aliases; a cluster: ``frontDoor.proxyClusterIP``). The
    URL names no service, so ``network_edges`` cannot see it."""
    proxy = services.get(PROXY)
    https = next((p.name for p in proxy.ports if p.container == 443), None) if proxy is not None else None
    if door is None or https is None:
        return edges
    out = dict(edges)
    for name in door.oidc:
        ports = tuple(sorted({*out.get(name, {}).get(PROXY, ()), https}))
        out[name] = dict(sorted({**out.get(name, {}), PROXY: ports}.items()))
    return out


def _mentions(text: str, host: str) -> bool:
    """Does ``text`` address ``host`` (``//host``, ``@host`` or ``host:PORT``)?"""
    h = re.escape(host)
    return re.search(rf"(?://|@){h}(?![\w.-])|(?<![\w./@-]){h}:\d", text) is not None


def network_edges(services: dict[str, ChartService],
                  files: dict[str, bytes]) -> dict[str, dict[str, tuple[str, ...]]]:
    """``{client: {server: (port name, ...)}}``: the connections the blueprints declare.

    An edge is a ``depends_on`` (including ``[when.X] depends_on``), an active
    ``[when.X]`` block (manifest.json's ``wired_to``), or a URL
    or ``host:port`` naming another service of the profile in the client's
    resolved environment or in a file mounted into it (``[when]`` wiring,
    Grafana's datasource): it opens every port of the server. Prometheus
    scraping opens only the metrics port. Servers without ports take no edge.
    """
    edges: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, svc in services.items():
        texts = [v.text for v in svc.env]
        texts += [b.decode("utf-8", "replace") for m in svc.mounts if m.kind in ("file", "dir")
                  for n, b in files.items() if n == m.name or n.startswith(m.name + "/")]
        targets = set(svc.depends_on) | set(svc.wired_to)
        for other in services:
            if other != name and any(_mentions(t, other) for t in texts):
                targets.add(other)
        out = {t: tuple(p.name for p in services[t].ports) for t in targets if t in services and services[t].ports}
        if name == "prometheus":
            for other, s in services.items():
                if s.scrape and other != name and other not in out:
                    out[other] = (s.scrape.port,)
        edges[name] = dict(sorted(out.items()))
    return dict(sorted(edges.items()))
