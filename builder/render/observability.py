"""``observability/``: Prometheus config and alert rules, Grafana
provisioning and dashboards, and where compose mounts them.

A ``[metrics] bearer_secret`` becomes ``authorization: {type: Bearer,
credentials_file: /etc/prometheus/secrets/<service>}`` in prometheus.yml;
``render_compose`` provides that file as a compose secret whose value compose
reads from the install's ``.env`` at start (``BearerSecret``). No credential is
ever written into prometheus.yml or any other file of the bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..blueprint import secret_env_key
from ..format.files import OPTIONAL_TARGETS
from .release import ReleaseInput
from .runbooks import service_url
from .text import dump_yaml, template_text

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
PROM_SECRETS_DIR = "/etc/prometheus/secrets"   # scrape credentials, provided by compose at start
PROM_UID = "65534"                              # the prometheus image runs as nobody
DATASOURCE_UID = "lab-prometheus"
EXPORTERS = ("cadvisor", "node-exporter")


@dataclass(frozen=True)
class BearerSecret:
    """A scrape credential: the install's .env key compose reads, and where prometheus finds it."""

    service: str        # the scraped service
    env_key: str        # DIR/.env key of the referenced secret

    @property
    def compose_name(self) -> str:
        return f"{self.service.replace('-', '_')}_metrics_bearer"

    @property
    def target(self) -> str:
        return f"{PROM_SECRETS_DIR}/{self.service}"


def bearer_secrets(ri: ReleaseInput) -> list[BearerSecret]:
    """Every scraped service whose ``[metrics]`` names a ``bearer_secret``, sorted."""
    out = []
    for name in ri.services:
        ref = ri.blueprint(name).metrics.bearer_ref if ri.blueprint(name).metrics else None
        if ref is not None:
            out.append(BearerSecret(service=name, env_key=secret_env_key(*ref)))
    return out


def scrape_targets(ri: ReleaseInput) -> list[dict[str, Any]]:
    """``[{service, target, path, params, bearer}]`` for every service Prometheus scrapes
    (``bearer``: the credentials file in the prometheus container, or None)."""
    out = []
    bearer = {b.service: b.target for b in bearer_secrets(ri)}
    for name in ri.services:
        bp = ri.blueprint(name)
        if bp.metrics:
            port, path, params = bp.port(bp.metrics.port), bp.metrics.path, dict(bp.metrics.params)
        elif name in EXPORTERS and bp.ports:
            port, path, params = bp.ports[0], "/metrics", {}
        else:
            continue
        out.append({"service": name, "target": f"{name}:{port.container}", "path": path,
                    "params": params, "bearer": bearer.get(name)})
    return out


def optional_targets_dir(ri: ReleaseInput) -> str | None:
    """Where install writes the scrape targets of the optional services it started, in the
    prometheus container (its data volume, so they outlive a recreated container); None when the
    profile has no prometheus or scrapes no optional service."""
    if "prometheus" not in ri.services or not any(t["service"] in ri.optional for t in scrape_targets(ri)):
        return None
    volumes = ri.blueprint("prometheus").volumes
    return f"{volumes[0].target.rstrip('/')}/optional-targets" if volumes else "/etc/prometheus/optional-targets"


def optional_targets(ri: ReleaseInput) -> str | None:
    """``observability/prometheus/optional-targets.json``: the prometheus service, the directory of
    its file_sd files and each scraped optional service's target group. An optional service that
    is not started is no scrape target at all (its file holds ``[]``), so it fires no
    TargetDown; install writes its group once it starts (``install.targets``)."""
    where = optional_targets_dir(ri)
    if where is None:
        return None
    groups = {t["service"]: {"targets": [t["target"]], "labels": {"service": t["service"]}}
              for t in scrape_targets(ri) if t["service"] in ri.optional}
    return json.dumps({"service": "prometheus", "dir": where, "groups": groups}, sort_keys=True, indent=2) + "\n"


def render_prometheus(ri: ReleaseInput) -> str:
    jobs = []
    where = optional_targets_dir(ri)
    for t in scrape_targets(ri):
        job: dict[str, Any] = {"job_name": t["service"], "metrics_path": t["path"]}
        if t["params"]:
            job["params"] = {k: [v] for k, v in sorted(t["params"].items())}
        if t["bearer"]:
            job["authorization"] = {"type": "Bearer", "credentials_file": t["bearer"]}
        if t["service"] in ri.optional and where is not None:   # a target only once install started it
            job["file_sd_configs"] = [{"files": [f"{where}/{t['service']}.json"], "refresh_interval": "30s"}]
        else:
            job["static_configs"] = [{"targets": [t["target"]], "labels": {"service": t["service"]}}]
        jobs.append(job)
    doc = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s",
                   "external_labels": {"lab": ri.lab.name, "lab_version": ri.version}},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": jobs,
    }
    return f"# Prometheus config of {ri.top}: generated by labbuild.\n" + dump_yaml(doc)


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
    return dump_yaml(doc)


def _grafana_providers(ri: ReleaseInput) -> str:
    doc = {"apiVersion": 1, "providers": [{
        "name": ri.lab.name, "folder": "Local AI Lab", "type": "file", "disableDeletion": True,
        "allowUiUpdates": False, "options": {"path": GRAFANA_MOUNTS[2][1]}}]}
    return dump_yaml(doc)


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
        where = f"http://{service_url(bp, web)}" if web else "the Langfuse UI"
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
    if (targets := optional_targets(ri)) is not None:
        files[OPTIONAL_TARGETS] = targets
    if {"litellm", "langfuse"} & set(ri.services):
        files[f"{GRAFANA_DIR}/dashboards/tokens-and-cost.json"] = tokens_cost_dashboard(ri)
    return files

