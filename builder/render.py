"""Pure renderers: from the lab, the lock and a release's coordinates to the
text files of a bundle. No disk, no network, no clock: the same input always
gives the same bytes (sorted iteration, explicit orders, canonical JSON).

What each renderer produces, and the contracts other parts rely on:

``render_compose`` -> ``compose.yaml``
    No top-level ``name`` (``docker compose -p <lab>`` gives it). Online,
    images are ``name:tag@sha256:…``; offline (the bundle carries images/),
    ``image: name:tag`` plus ``pull_policy: never``. Ports are published as
    ``127.0.0.1:host:container`` unless the blueprint opted out; volumes are
    named ``<service>_<name>``; every service is on one network ``lab``;
    ``depends_on`` uses ``service_healthy`` when the dependency has an
    in-container ``[healthcheck]``, else ``service_started``.
    Each service's ``environment`` maps ``KEY: ${SVC__KEY}`` for settings
    (values live in ``lab.env``), ``NAME: ${SVC__NAME:?...}`` for its
    secrets (values live in the install's ``.env``), and for a setting that
    embeds ``${secret:other.NAME}`` the literal value with each reference
    replaced by ``${OTHER__NAME}`` and every other ``$`` escaped as ``$$``
    (such a setting, and one whose key cannot be a compose variable name, e.g.
    holds a ``.``, is written literally in compose.yaml, not in lab.env).
    Compose is always run as::

        docker compose -p <lab> -f compose.yaml --env-file lab.env --env-file <DIR>/.env up -d

``render_lab_env`` -> ``lab.env``
    ``LAB_NAME``, ``LAB_VERSION``, ``LAB_PROFILE`` and every effective
    non-secret setting as ``SVC__KEY=value`` (``setting_env_key``). Values
    are single-quoted (literal for both compose and POSIX sh); a value
    holding a quote or a newline is double-quoted with ``\\ " $`` escaped.

``render_secrets_example`` -> ``secrets.env.example``
    Per secret: a comment (service, generate kind, length) and ``SVC__NAME=``.

``render_config_files`` -> ``config/<svc>/<name>`` (the blueprints' ``[[files]]``,
    mounted read-only). ``render_runbooks`` -> ``runbooks/README.md`` and
    ``runbooks/<svc>.md``. ``render_observability`` -> ``observability/…``
    (Prometheus config and rules, Grafana provisioning and dashboards),
    mounted into prometheus/grafana by ``render_compose`` when present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from string import Template
from typing import Any

import yaml

from .blueprint import (SECRET_REF_RE, Blueprint, Lab, Port, secret_env_key,
                        setting_env_key)
from .errors import BundleError
from .lockfile import Lock

LABEL_PREFIX = "org.local-ai-lab"
NETWORK = "lab"
COMPOSE_FILE = "compose.yaml"

# Where the generated observability files go in the bundle and in the containers.
PROM_DIR = "observability/prometheus"
GRAFANA_DIR = "observability/grafana"
PROM_MOUNTS = (
    (f"{PROM_DIR}/prometheus.yml", "/etc/prometheus/prometheus.yml"),
    (f"{PROM_DIR}/rules", "/etc/prometheus/rules"),
)
GRAFANA_MOUNTS = (
    (f"{GRAFANA_DIR}/provisioning/datasources", "/etc/grafana/provisioning/datasources"),
    (f"{GRAFANA_DIR}/provisioning/dashboards", "/etc/grafana/provisioning/dashboards"),
    (f"{GRAFANA_DIR}/dashboards", "/var/lib/grafana/dashboards/local-ai-lab"),
)
DATASOURCE_UID = "lab-prometheus"
_VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def bundle_top(lab: str, profile: str, version: str) -> str:
    """The bundle's top directory (and archive stem): ``<lab>-<profile>-<version>``."""
    return f"{lab}-{profile}-{version}"


def bundle_filename(lab: str, profile: str, version: str, with_images: bool) -> str:
    """The archive's file name: ``.tar`` with images (already compressed), ``.tar.gz`` without."""
    return bundle_top(lab, profile, version) + (".tar" if with_images else ".tar.gz")


@dataclass(frozen=True)
class ReleaseInput:
    """Everything a bundle's text depends on: the lab, the lock, and where it goes."""

    lab: Lab
    lock: Lock
    profile: str
    version: str
    labbuild_version: str
    offline: bool = False

    @cached_property
    def services(self) -> tuple[str, ...]:
        """The profile's closure, sorted."""
        return tuple(self.lab.profile_closure(self.profile))

    def blueprint(self, name: str) -> Blueprint:
        return self.lab.services[name]

    @property
    def top(self) -> str:
        """The bundle's top directory: ``<lab>-<profile>-<version>``."""
        return bundle_top(self.lab.name, self.profile, self.version)

    @property
    def filename(self) -> str:
        return bundle_filename(self.lab.name, self.profile, self.version, self.offline)

    def compose_command(self, args: str = "up -d", env_dir: str = "<DIR>") -> str:
        """The one way compose runs a bundle (see the module docstring)."""
        return (f"docker compose -p {self.lab.name} -f {COMPOSE_FILE} --env-file lab.env "
                f"--env-file {env_dir}/.env {args}")


# --------------------------------------------------------------------------- helpers

def template_text(name: str) -> str:
    """A file from builder/templates/ (package data)."""
    return resources.files("builder").joinpath("templates", *name.split("/")).read_text("utf-8")


def _literal(value: str) -> str:
    """A string compose must not interpolate: every ``$`` doubled."""
    return value.replace("$", "$$")


def _with_secret_refs(value: str) -> str:
    """Literal ``value`` with each ``${secret:svc.NAME}`` turned into ``${SVC__NAME}``."""
    out, pos = [], 0
    for m in SECRET_REF_RE.finditer(value):
        out.append(_literal(value[pos:m.start()]))
        out.append("${" + secret_env_key(m.group(1), m.group(2)) + "}")
        pos = m.end()
    out.append(_literal(value[pos:]))
    return "".join(out)


def _inline_setting(key: str, value: str, service: str) -> bool:
    """True when a setting goes into compose.yaml literally instead of via lab.env."""
    return bool(SECRET_REF_RE.search(value)) or not _VAR_NAME_RE.match(setting_env_key(service, key))


def env_file_value(value: str) -> str:
    """Quote ``value`` for lab.env so compose and POSIX sh both read it literally."""
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
               .replace("\n", "\\n"))
    return f'"{escaped}"'


def parse_env_file(text: str) -> dict[str, str]:
    """Read back a lab.env written by ``render_lab_env`` (the inverse of ``env_file_value``)."""
    out: dict[str, str] = {}
    for line in text.split("\n"):  # not splitlines(): values may hold \x1e, \u2028, ...
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], value[1:-1])
        out[key.strip()] = value
    return out


def port_spec(port: Port) -> str | None:
    """``bind:host:container[/udp]`` for a published port, None for an internal one."""
    if port.host is None:
        return None
    bind = f"[{port.bind}]" if ":" in port.bind else port.bind
    spec = f"{bind}:{port.host}:{port.container}"
    return spec + ("/udp" if port.protocol == "udp" else "")


def volume_name(service: str, name: str) -> str:
    return f"{service}_{name}"


def _dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=4096)


# --------------------------------------------------------------------------- compose

def service_environment(bp: Blueprint, present: tuple[str, ...]) -> dict[str, str]:
    """The ``environment:`` mapping of one service (see the module docstring)."""
    env: dict[str, str] = {}
    for key, value in bp.effective_env(present).items():
        if SECRET_REF_RE.search(value):
            env[key] = _with_secret_refs(value)
        elif _inline_setting(key, value, bp.name):
            env[key] = _literal(value)
        else:
            env[key] = "${" + setting_env_key(bp.name, key) + "}"
    for secret in bp.secrets:
        var = secret_env_key(bp.name, secret.name)
        if not _VAR_NAME_RE.match(var):
            raise BundleError(f"{bp.path}: secrets.{secret.name}: {var!r} cannot be a compose variable",
                              hint="secret names must be letters, digits and underscores")
        env[secret.name] = "${" + var + ":?" + f"secret {var} is not set: labbuild install generates it into DIR/.env" + "}"
    return dict(sorted(env.items()))


def _observability_mounts(ri: ReleaseInput, bp: Blueprint) -> list[str]:
    mounts = {"prometheus": PROM_MOUNTS, "grafana": GRAFANA_MOUNTS}.get(bp.name, ())
    taken = {m.target for m in (*bp.volumes, *bp.binds, *bp.files)}
    return [f"./{src}:{dst}:ro" for src, dst in mounts if dst not in taken]


def compose_service(ri: ReleaseInput, name: str) -> dict[str, Any]:
    """One service of compose.yaml, in a fixed key order."""
    bp = ri.blueprint(name)
    present = ri.services
    svc: dict[str, Any] = {}
    if ri.offline:
        svc["image"] = bp.image.reference
        svc["pull_policy"] = "never"
    else:
        svc["image"] = bp.image.pinned
    svc["restart"] = bp.restart
    if bp.entrypoint is not None:
        svc["entrypoint"] = [_literal(a) for a in bp.entrypoint]
    if bp.command is not None:
        svc["command"] = [_literal(a) for a in bp.command]
    if bp.user:
        svc["user"] = bp.user
    if bp.privileged:
        svc["privileged"] = True
    env = service_environment(bp, present)
    if env:
        svc["environment"] = env
    ports = [s for s in (port_spec(p) for p in bp.ports) if s]
    if ports:
        svc["ports"] = ports
    expose = [str(p.container) + ("/udp" if p.protocol == "udp" else "") for p in bp.ports if p.host is None]
    if expose:
        svc["expose"] = expose
    mounts = [f"{volume_name(name, v.name)}:{v.target}" + (":ro" if v.read_only else "") for v in bp.volumes]
    mounts += [f"{b.source}:{b.target}" + (":ro" if b.read_only else "") for b in bp.binds]
    mounts += [f"./config/{name}/{f.name}:{f.target}:ro" for f in bp.files]
    mounts += _observability_mounts(ri, bp)
    if mounts:
        svc["volumes"] = mounts
    deps = [d for d in bp.effective_depends_on(present) if d in present]
    if deps:
        svc["depends_on"] = {
            d: {"condition": "service_healthy" if ri.blueprint(d).healthcheck else "service_started"}
            for d in deps}
    if bp.healthcheck:
        hc = bp.healthcheck
        check: dict[str, Any] = {"test": [_literal(t) for t in hc.test]}
        for key in ("interval", "timeout", "retries", "start_period"):
            if getattr(hc, key) is not None:
                check[key] = getattr(hc, key)
        svc["healthcheck"] = check
    res = bp.resources
    if res and res.memory:
        svc["mem_limit"] = res.memory
    if res and res.cpus:
        svc["cpus"] = res.cpus
    if res and res.gpus is not None:
        svc["deploy"] = {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": res.gpus, "capabilities": ["gpu"]}]}}}
    # no version label: it would change every service's definition on every upgrade, and
    # compose would recreate all of them instead of only the changed ones (issue 5)
    svc["labels"] = {f"{LABEL_PREFIX}.lab": ri.lab.name, f"{LABEL_PREFIX}.profile": ri.profile,
                     f"{LABEL_PREFIX}.service": name}
    svc["networks"] = [NETWORK]
    return svc


def render_compose(ri: ReleaseInput) -> str:
    """compose.yaml for the profile's closure (see the module docstring)."""
    services = {name: compose_service(ri, name) for name in ri.services}
    volumes = {volume_name(n, v.name): {} for n in ri.services for v in ri.blueprint(n).volumes}
    doc: dict[str, Any] = {"services": services}
    if volumes:
        doc["volumes"] = dict(sorted(volumes.items()))
    doc["networks"] = {NETWORK: {}}
    head = (f"# {ri.top}: generated by labbuild {ri.labbuild_version}; do not edit.\n"
            f"# Run: {ri.compose_command()}\n")
    return head + _dump_yaml(doc)


# --------------------------------------------------------------------------- env files

def lab_settings(ri: ReleaseInput) -> dict[str, str]:
    """Every ``SVC__KEY`` of lab.env with its value, sorted."""
    out: dict[str, str] = {}
    for name in ri.services:
        bp = ri.blueprint(name)
        for key, value in bp.effective_env(ri.services).items():
            if not _inline_setting(key, value, name):
                out[setting_env_key(name, key)] = value
    return dict(sorted(out.items()))


def render_lab_env(ri: ReleaseInput) -> str:
    """lab.env: the lab's coordinates and every non-secret setting."""
    lines = [f"# lab.env of {ri.top}: non-secret settings, generated by labbuild.",
             "# Override a key by setting it in the install's DIR/.env (read after this file).",
             "# Secrets never go here: see secrets.env.example.",
             f"LAB_NAME={env_file_value(ri.lab.name)}",
             f"LAB_VERSION={env_file_value(ri.version)}",
             f"LAB_PROFILE={env_file_value(ri.profile)}"]
    current = None
    for key, value in lab_settings(ri).items():
        service = key.split("__", 1)[0]
        if service != current:
            lines.append("")
            current = service
        lines.append(f"{key}={env_file_value(value)}")
    return "\n".join(lines) + "\n"


def secret_keys(ri: ReleaseInput, name: str) -> list[str]:
    return [secret_env_key(name, s.name) for s in ri.blueprint(name).secrets]


def render_secrets_example(ri: ReleaseInput) -> str:
    """secrets.env.example: the name of every secret install generates, never a value."""
    lines = [f"# Secrets of {ri.top}. `labbuild install` (or install.sh) generates each",
             "# one into DIR/.env (mode 0600) and keeps it across upgrades. No values here."]
    for name in ri.services:
        for s in ri.blueprint(name).secrets:
            lines.append("")
            desc = f": {s.description}" if s.description else ""
            lines.append(f"# {name}: generate={s.generate} length={s.length}{desc}")
            lines.append(f"{secret_env_key(name, s.name)}=")
    return "\n".join(lines) + "\n"


def render_config_files(ri: ReleaseInput) -> dict[str, str]:
    """``config/<svc>/<name>`` for every ``[[files]]`` entry."""
    return {f"config/{n}/{f.name}": f.content for n in ri.services for f in ri.blueprint(n).files}


# --------------------------------------------------------------------------- runbooks

def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _service_url(bp: Blueprint, port: Port) -> str:
    host = "127.0.0.1" if port.bind in ("127.0.0.1", "0.0.0.0") else "[::1]"
    return f"{host}:{port.host}"


def render_service_runbook(ri: ReleaseInput, name: str) -> str:
    """runbooks/<svc>.md: what the service is, where it listens, what it keeps, how to fix it."""
    bp = ri.blueprint(name)
    rec = ri.lock.services.get(name)
    out = [f"# {name}", "", bp.description, "",
           f"- Image: `{bp.image.pinned}`",
           f"- Phase {bp.phase}, category {bp.category}"]
    if rec is not None and not rec.verified:
        out.append("- Lock entry: pin only (not verified against the registry; `labbuild lock` verifies it)")
    if bp.docs:
        out.append(f"- Documentation: {bp.docs}")
    deps = bp.effective_depends_on(ri.services)
    if deps:
        out.append("- Starts after: " + ", ".join(f"[{d}]({d}.md)" for d in deps))
    out.append("")
    if bp.ports:
        out += ["## Ports", "", "| name | container | host | protocol |", "|---|---|---|---|"]
        for p in bp.ports:
            host = _service_url(bp, p) if p.host else "internal only"
            out.append(f"| {p.name} | {p.container} | {host} | {p.protocol} |")
        out.append("")
    if bp.volumes or bp.binds or bp.files:
        out += ["## Data", ""]
        for v in bp.volumes:
            out.append(f"- volume `{ri.lab.name}_{volume_name(name, v.name)}` at `{v.target}`"
                       + (" (read-only)" if v.read_only else ""))
        for b in bp.binds:
            out.append(f"- host path `{b.source}` at `{b.target}`" + (" (read-only)" if b.read_only else ""))
        for f in bp.files:
            out.append(f"- config file `config/{name}/{f.name}` at `{f.target}` (read-only)")
        out.append("")
    if bp.secrets:
        out += ["## Secrets", "", "Generated at install into `DIR/.env`; never in the bundle.", ""]
        for s in bp.secrets:
            out.append(f"- `{secret_env_key(name, s.name)}` → `{s.name}` ({s.generate}, {s.length} characters)")
        out.append("")
    out += ["## Health", ""]
    if bp.health:
        h = bp.health
        port = bp.port(h.port)
        target = f"{h.scheme}://{_service_url(bp, port)}{h.path if h.scheme != 'tcp' else ''}"
        out.append(f"- Probe from the host: `{target}`"
                   + (f" (statuses {', '.join(map(str, h.status))})" if h.status else "")
                   + (f", start period {h.start_period}" if h.start_period else ""))
    else:
        out.append("- No health endpoint: the install checks only that the container runs.")
    if bp.healthcheck:
        out.append(f"- Container healthcheck: `{' '.join(bp.healthcheck.test)}`")
    if bp.metrics:
        out.append(f"- Metrics: `{name}:{bp.port(bp.metrics.port).container}{bp.metrics.path}` (scraped by Prometheus)")
    out += ["", "## Logs and restart", "", "```sh",
            "cd DIR/current",
            ri.compose_command(f"logs --tail 100 {name}", "DIR"),
            ri.compose_command(f"restart {name}", "DIR"), "```", ""]
    if bp.runbook:
        out += ["## Known problems", ""]
        for entry in bp.runbook:
            out += [f"### {entry.title}", "", f"**Symptom:** {entry.symptom}", ""]
            if entry.cause:
                out += [f"**Cause:** {entry.cause}", ""]
            out += [f"**Fix:** {entry.fix}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_runbooks(ri: ReleaseInput) -> dict[str, str]:
    """runbooks/README.md (install, upgrade, rollback, air-gap, troubleshooting) + one page per service."""
    rows = ["| service | description | open | runbook |", "|---|---|---|---|"]
    for name in ri.services:
        bp = ri.blueprint(name)
        web = next((p for p in bp.ports if p.host), None)
        url = f"http://{_service_url(bp, web)}" if web else "—"
        rows.append(f"| {name} | {_md_cell(bp.description)} | {url} | [{name}.md]({name}.md) |")
    ollama = "ollama" if "ollama" in ri.services else "<gpu service>"
    text = Template(template_text("runbooks/README.md")).substitute(
        lab=ri.lab.name, version=ri.version, profile=ri.profile, top=ri.top, archive=ri.filename,
        services_table="\n".join(rows),
        compose_up=ri.compose_command("up -d", "DIR"),
        compose_ps=ri.compose_command("ps", "DIR"),
        compose_logs=ri.compose_command("logs --tail 200 SERVICE", "DIR"),
        compose_events=ri.compose_command("ps -a", "DIR"),
        ollama=ollama,
    )
    pages = {"runbooks/README.md": text}
    for name in ri.services:
        pages[f"runbooks/{name}.md"] = render_service_runbook(ri, name)
    return pages


# --------------------------------------------------------------------------- observability

EXPORTERS = ("cadvisor", "node-exporter")


def scrape_targets(ri: ReleaseInput) -> list[dict[str, Any]]:
    """``[{service, target, path, params}]`` for every service Prometheus scrapes."""
    out = []
    for name in ri.services:
        bp = ri.blueprint(name)
        if bp.metrics:
            port, path, params = bp.port(bp.metrics.port), bp.metrics.path, dict(bp.metrics.params)
        elif name in EXPORTERS and bp.ports:
            port, path, params = bp.ports[0], "/metrics", {}
        else:
            continue
        out.append({"service": name, "target": f"{name}:{port.container}", "path": path,
                    "params": params})
    return out


def render_prometheus(ri: ReleaseInput) -> str:
    jobs = []
    for t in scrape_targets(ri):
        job: dict[str, Any] = {"job_name": t["service"], "metrics_path": t["path"]}
        if t["params"]:
            job["params"] = {k: [v] for k, v in sorted(t["params"].items())}
        job["static_configs"] = [{"targets": [t["target"]], "labels": {"service": t["service"]}}]
        jobs.append(job)
    doc = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s",
                   "external_labels": {"lab": ri.lab.name, "lab_version": ri.version}},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": jobs,
    }
    return f"# Prometheus config of {ri.top}: generated by labbuild.\n" + _dump_yaml(doc)


def _grafana_datasource(ri: ReleaseInput) -> str:
    url = "http://prometheus:9090"
    if "prometheus" in ri.services:
        bp = ri.blueprint("prometheus")
        if bp.ports:
            port = next((p for p in bp.ports if p.container == 9090), bp.ports[0])
            url = f"http://prometheus:{port.container}"
    doc = {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": url, "isDefault": True, "editable": False}]}
    return _dump_yaml(doc)


def _grafana_providers(ri: ReleaseInput) -> str:
    doc = {"apiVersion": 1, "providers": [{
        "name": ri.lab.name, "folder": "Local AI Lab", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "options": {"path": GRAFANA_MOUNTS[2][1]}}]}
    return _dump_yaml(doc)


_DS = {"type": "prometheus", "uid": DATASOURCE_UID}


def _panel(pid: int, title: str, kind: str, exprs: list[tuple[str, str]], x: int, y: int,
           w: int = 8, h: int = 6, unit: str | None = None) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": pid, "type": kind, "title": title, "datasource": _DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": [{"refId": chr(ord("A") + i), "datasource": _DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(exprs)],
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "options": {},
    }
    return panel


def _dashboard(uid: str, title: str, panels: list[dict], tags: list[str]) -> str:
    doc = {
        "uid": uid, "title": title, "tags": tags, "timezone": "browser", "editable": False,
        "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"}, "timepicker": {},
        "templating": {"list": []}, "annotations": {"list": []}, "links": [],
        "panels": panels,
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _container_selector(name: str) -> str:
    return f'container_label_org_local_ai_lab_service="{name}"'


def lab_overview_dashboard(ri: ReleaseInput) -> str:
    """"Lab overview": one row per service (up, CPU, memory)."""
    scraped = {t["service"] for t in scrape_targets(ri)}
    panels: list[dict] = []
    y, pid = 0, 1
    for name in ri.services:
        bp = ri.blueprint(name)
        panels.append({"id": pid, "type": "row", "title": f"{name}: {bp.description}",
                       "collapsed": False, "panels": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y = pid + 1, y + 1
        sel = _container_selector(name)
        up = (f'up{{job="{name}"}}', "up") if name in scraped else \
             (f"count(container_last_seen{{{sel}}}) > bool 0", "running")
        panels.append(_panel(pid, f"{name} up", "stat", [up], 0, y))
        panels.append(_panel(pid + 1, f"{name} CPU", "timeseries",
                             [(f"sum(rate(container_cpu_usage_seconds_total{{{sel}}}[5m]))", "cores")],
                             8, y, unit="short"))
        panels.append(_panel(pid + 2, f"{name} memory", "timeseries",
                             [(f"sum(container_memory_working_set_bytes{{{sel}}})", "working set")],
                             16, y, unit="bytes"))
        pid, y = pid + 3, y + 6
    return _dashboard(f"{ri.lab.name}-overview"[:40], "Lab overview", panels, [ri.lab.name, "overview"])


def tokens_cost_dashboard(ri: ReleaseInput) -> str:
    """"Tokens & cost": LiteLLM's token, spend and request counters; a pointer to Langfuse."""
    panels: list[dict] = []
    y, pid = 0, 1
    if "litellm" in ri.services:
        def m(name: str) -> str:
            return f'{{__name__=~"litellm_{name}(_total)?"}}'
        panels += [
            _panel(1, "Tokens per second by model", "timeseries",
                   [(f"sum by (model) (rate({m('total_tokens(_metric)?')}[5m]))", "{{model}}")], 0, 0, w=12, h=8),
            _panel(2, "Spend (USD) per hour by model", "timeseries",
                   [(f"sum by (model) (increase({m('spend_metric')}[1h]))", "{{model}}")], 12, 0, w=12, h=8,
                   unit="currencyUSD"),
            _panel(3, "Input vs output tokens (24h)", "bargauge",
                   [(f"sum(increase({m('input_tokens(_metric)?')}[24h]))", "input"),
                    (f"sum(increase({m('output_tokens(_metric)?')}[24h]))", "output")], 0, 8, w=12, h=8),
            _panel(4, "Total spend (24h)", "stat",
                   [(f"sum(increase({m('spend_metric')}[24h]))", "USD")], 12, 8, w=6, h=8, unit="currencyUSD"),
            _panel(5, "Requests per second by model", "timeseries",
                   [(f"sum by (model) (rate({m('requests_metric')}[5m]))", "{{model}}")], 18, 8, w=6, h=8),
        ]
        y, pid = 16, 6
    if "langfuse" in ri.services:
        bp = ri.blueprint("langfuse")
        web = next((p for p in bp.ports if p.host), None)
        where = f"http://{_service_url(bp, web)}" if web else "the Langfuse UI"
        panels.append({"id": pid, "type": "text", "title": "Langfuse", "gridPos": {"h": 4, "w": 24, "x": 0, "y": y},
                       "options": {"mode": "markdown",
                                   "content": f"Per-trace token usage and cost live in Langfuse: {where}"}})
    return _dashboard(f"{ri.lab.name}-tokens"[:40], "Tokens & cost", panels, [ri.lab.name, "llm"])


def render_observability(ri: ReleaseInput) -> dict[str, str]:
    """observability/: Prometheus config + rules, Grafana provisioning + dashboards."""
    files = {
        f"{PROM_DIR}/prometheus.yml": render_prometheus(ri),
        f"{PROM_DIR}/rules/lab-alerts.yml": template_text("observability/lab-alerts.yml"),
        f"{GRAFANA_DIR}/provisioning/datasources/prometheus.yml": _grafana_datasource(ri),
        f"{GRAFANA_DIR}/provisioning/dashboards/local-ai-lab.yml": _grafana_providers(ri),
        f"{GRAFANA_DIR}/dashboards/lab-overview.json": lab_overview_dashboard(ri),
    }
    if {"litellm", "langfuse"} & set(ri.services):
        files[f"{GRAFANA_DIR}/dashboards/tokens-and-cost.json"] = tokens_cost_dashboard(ri)
    return files


# --------------------------------------------------------------------------- all text files

def render_text_files(ri: ReleaseInput) -> dict[str, str]:
    """Every rendered text file of a bundle, by arcname (no lock, manifest, sums, install.sh)."""
    files = {
        COMPOSE_FILE: render_compose(ri),
        "lab.env": render_lab_env(ri),
        "secrets.env.example": render_secrets_example(ri),
    }
    files.update(render_config_files(ri))
    files.update(render_runbooks(ri))
    files.update(render_observability(ri))
    return dict(sorted(files.items()))
