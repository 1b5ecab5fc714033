"""Pure renderers (builder.render) checked by the real tools: docker compose
config, promtool, and Grafana's dashboard fields.

``make_lab`` (used by the other bundle tests too) writes a small lab of its
own — blueprints, lab.toml and a lock — so these tests do not depend on the
shipped catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from builder.blueprint import load_lab
from builder.lockfile import (LOCK_PATH, ImageRecord, LayerRecord, Lock, PlatformRecord,
                              inputs_hash, write_lock)
from builder.render import (ReleaseInput, env_file_value, parse_env_file, render_lab_env, render_observability, render_runbooks,
                            render_secrets_example, render_text_files)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


SERVICES = {
    "web": '''
        [service]
        name = "web"
        description = "A web app | with a pipe"
        phase = 0
        category = "app"
        docs = "https://example.org/web"
        [image]
        name = "127.0.0.1:5000/lab/web"
        tag = "1.0"
        digest = "{d_web}"
        [[ports]]
        name = "http"
        container = 8080
        host = 18080
        [[ports]]
        name = "internal"
        container = 9000
        [env]
        GREETING = "it's $HOME and ${{NOT_A_VAR}}"
        PLAIN = "true"
        [secrets.API_TOKEN]
        generate = "token"
        length = 40
        [[volumes]]
        name = "data"
        target = "/data"
        [[files]]
        name = "web.conf"
        target = "/etc/web.conf"
        content = "listen 8080\\n"
        [health]
        port = "http"
        path = "/healthz"
        start_period = "30s"
        [metrics]
        port = "http"
        path = "/metrics"
        [healthcheck]
        test = ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/healthz"]
        interval = "10s"
        retries = 3
        [[runbook]]
        title = "Web answers 502"
        symptom = "502 from the proxy"
        cause = "the app is still starting"
        fix = "wait 30 s"
    ''',
    "db": '''
        [service]
        name = "db"
        description = "Database"
        phase = 0
        category = "data"
        [image]
        name = "docker.io/library/postgres"
        tag = "16.4"
        digest = "{d_db}"
        [secrets.POSTGRES_PASSWORD]
        generate = "password"
        [[volumes]]
        name = "pgdata"
        target = "/var/lib/postgresql/data"
    ''',
    "app": '''
        [service]
        name = "app"
        description = "An app using the database"
        phase = 1
        category = "app"
        depends_on = ["db"]
        command = ["serve", "--price=$5"]
        user = "1000:1000"
        [image]
        name = "ghcr.io/example/app"
        tag = "2.1.0"
        digest = "{d_app}"
        [[ports]]
        name = "http"
        container = 3000
        host = 13000
        [env]
        DB_URL = "postgres://app:${{secret:db.POSTGRES_PASSWORD}}@db:5432/app?x=$y"
        [when.web.env]
        WEB_URL = "http://web:8080"
        [when.web]
        depends_on = true
        [resources]
        memory = "2g"
        cpus = 1.5
        gpus = "all"
    ''',
    "prometheus": '''
        [service]
        name = "prometheus"
        description = "Metrics"
        phase = 1
        category = "observability"
        [image]
        name = "docker.io/prom/prometheus"
        tag = "v2.54.1"
        digest = "{d_prometheus}"
        [[ports]]
        name = "http"
        container = 9090
        host = 19090
        [[volumes]]
        name = "tsdb"
        target = "/prometheus"
        [metrics]
        port = "http"
    ''',
    "grafana": '''
        [service]
        name = "grafana"
        description = "Dashboards"
        phase = 1
        category = "observability"
        depends_on = ["prometheus"]
        [image]
        name = "docker.io/grafana/grafana"
        tag = "11.2.0"
        digest = "{d_grafana}"
        [[ports]]
        name = "http"
        container = 3000
        host = 13003
        [secrets.GF_SECURITY_ADMIN_PASSWORD]
        generate = "password"
        length = 24
    ''',
    "litellm": '''
        [service]
        name = "litellm"
        description = "LLM gateway"
        phase = 2
        category = "gateway"
        [image]
        name = "ghcr.io/berriai/litellm"
        tag = "v1.50.0"
        digest = "{d_litellm}"
        [[ports]]
        name = "http"
        container = 4000
        host = 14000
        [metrics]
        port = "http"
        path = "/metrics/"
        [metrics.params]
        format = "prometheus"
    ''',
    "cadvisor": '''
        [service]
        name = "cadvisor"
        description = "Container metrics"
        phase = 1
        category = "observability"
        [image]
        name = "gcr.io/cadvisor/cadvisor"
        tag = "v0.49.1"
        digest = "{d_cadvisor}"
        [[ports]]
        name = "http"
        container = 8080
        [[binds]]
        source = "/sys"
        target = "/sys"
    ''',
}

PROFILES = '''
[lab]
name = "{name}"
default_profile = "base"
platforms = ["linux/amd64", "linux/arm64"]

[profiles.base]
services = ["web"]

[profiles.full]
extends = ["base"]
services = ["app", "prometheus", "grafana", "litellm", "cadvisor"]
'''


def lock_for(lab, *, verified: bool = True) -> Lock:
    """A lock of ``lab`` made without a registry (records as `labbuild lock` would write them)."""
    services = {}
    for name, bp in lab.services.items():
        plats = {}
        if verified:
            for plat in lab.platforms:
                plats[plat] = PlatformRecord(
                    manifest=digest(f"{bp.image.digest}{plat}m"), media_type="application/vnd.oci.image.manifest.v1+json",
                    config=digest(f"{bp.image.digest}{plat}c"), size=1234,
                    layers=(LayerRecord(digest=digest(f"{bp.image.digest}{plat}l"), size=1000,
                                        media_type="application/vnd.oci.image.layer.v1.tar+gzip"),),
                    manifest_size=400, config_size=600)
        services[name] = ImageRecord(reference=bp.image.reference, digest=bp.image.digest,
                                     media_type="application/vnd.oci.image.index.v1+json" if verified else None,
                                     verified=verified, platforms=plats, size=500 if verified else 0)
    return Lock(lab=lab.name, inputs=inputs_hash(lab), platforms=tuple(lab.platforms), services=services)


def make_lab(root: Path, name: str = "testlab", *, services: dict[str, str] | None = None,
             profiles: str = PROFILES, verified: bool = True, **overrides: str) -> Path:
    """Write a small lab (blueprints + lock) under ``root``; ``overrides`` replace blueprint text."""
    (root / "blueprints" / "services").mkdir(parents=True, exist_ok=True)
    (root / "lockfiles" / "releases").mkdir(parents=True, exist_ok=True)
    digests = {f"d_{n}": digest(n) for n in SERVICES}
    for svc, text in {**SERVICES, **(services or {})}.items():
        text = overrides.get(svc, text)
        (root / "blueprints" / "services" / f"{svc}.toml").write_text(
            textwrap.dedent(text).format(**digests).lstrip())
    (root / "blueprints" / "lab.toml").write_text(profiles.format(name=name))
    lab = load_lab(root)
    write_lock(root / LOCK_PATH, lock_for(lab, verified=verified))
    return root


def release_input(root: Path, profile: str = "full", *, offline: bool = False, version: str = "1.0.0"):
    from builder.lockfile import read_lock
    lab = load_lab(root)
    return ReleaseInput(lab=lab, lock=read_lock(root / LOCK_PATH), profile=profile, version=version,
                        labbuild_version="0.0.test", offline=offline)


def compose_bin() -> str:
    """The compose v2 binary. The PyPI package's `docker-compose` wrapper script
    drops the exit code, so the Go binary it wraps is used directly."""
    try:
        import compose
        binary = Path(compose.__file__).with_name("docker-compose")
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("docker-compose", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail("docker-compose (compose v2 from PyPI) is not installed in .venv")
    return found


def compose_config(bundle_dir: Path, secrets: dict[str, str], project: str,
                   files: tuple[str, ...] = ("compose.yaml",)) -> dict:
    """`docker compose config` of an extracted bundle dir with fake secrets: the parsed result."""
    env = bundle_dir.parent / f"{project}.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    proc = subprocess.run([compose_bin(), "-p", project, *(a for f in files for a in ("-f", f)), "--env-file", "lab.env",
                           "--env-file", str(env), "config", "--format", "json"],
                          cwd=bundle_dir, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_tree(dest: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text)
    return dest


def fake_secrets(ri) -> dict[str, str]:
    return {k: f"s3cr3t-{k.lower()}" for k in parse_env_file(render_secrets_example(ri))}


# --------------------------------------------------------------------------- compose

@pytest.mark.parametrize("offline", [False, True], ids=["online", "offline"])
def test_compose_is_accepted_by_docker_compose_and_wires_env_secrets_and_deps(tmp_path, offline):
    ri = release_input(make_lab(tmp_path / "lab"), offline=offline)
    out = write_tree(tmp_path / "b", render_text_files(ri))
    cfg = compose_config(out, fake_secrets(ri), f"rt-{os.getpid()}")
    svcs = cfg["services"]
    assert sorted(svcs) == ["app", "cadvisor", "db", "grafana", "litellm", "prometheus", "web"]
    web, app = svcs["web"], svcs["app"]
    if offline:
        assert web["image"] == "127.0.0.1:5000/lab/web:1.0" and web["pull_policy"] == "never"
    else:
        assert web["image"] == f"127.0.0.1:5000/lab/web:1.0@{digest('web')}" and "pull_policy" not in web
    # settings come from lab.env literally; secrets from the install's .env
    assert web["environment"]["GREETING"] == "it's $$HOME and $${NOT_A_VAR}"  # compose re-escapes literal $
    assert web["environment"]["PLAIN"] == "true"
    assert web["environment"]["API_TOKEN"] == "s3cr3t-web__api_token"
    assert app["environment"]["DB_URL"] == "postgres://app:s3cr3t-db__postgres_password@db:5432/app?x=$$y"
    assert app["environment"]["WEB_URL"] == "http://web:8080"  # [when.web] applies: web is present
    assert app["command"] == ["serve", "--price=$$5"]
    assert app["depends_on"]["db"]["condition"] == "service_started"
    assert app["depends_on"]["web"]["condition"] == "service_healthy"  # web has a [healthcheck]
    ports = {(p["host_ip"], p["published"], p["target"]) for p in web["ports"]}
    assert ports == {("127.0.0.1", "18080", 8080)}
    assert web["expose"] == ["9000"]
    assert {v["target"]: v["type"] for v in web["volumes"]} == {"/data": "volume", "/etc/web.conf": "bind"}
    conf = next(v for v in web["volumes"] if v["target"] == "/etc/web.conf")
    assert conf["read_only"] and conf["source"] == str(out / "config/web/web.conf")
    assert "deploy" not in app          # the GPU reservation lives in compose.gpu.yaml (install --gpu)
    gpu = compose_config(out, fake_secrets(ri), f"rt-{os.getpid()}", files=("compose.yaml", "compose.gpu.yaml"))
    assert gpu["services"]["app"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert [s for s, v in gpu["services"].items() if "deploy" in v] == ["app"]
    assert gpu["services"]["app"]["image"] == app["image"]
    assert app["mem_limit"] == "2147483648" and app["cpus"] == 1.5 and app["user"] == "1000:1000"
    assert web["labels"] == {"org.local-ai-lab.lab": "testlab", "org.local-ai-lab.profile": "full",
                             "org.local-ai-lab.service": "web"}   # no version: upgrades recreate only changes
    assert web["healthcheck"]["test"][0] == "CMD" and web["restart"] == "unless-stopped"
    assert set(cfg["volumes"]) == {"web_data", "db_pgdata", "prometheus_tsdb"}
    assert list(cfg["networks"]) == ["lab"] and all(list(s["networks"]) == ["lab"] for s in svcs.values())
    prom_targets = {v["target"] for v in svcs["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/rules", "/prometheus"} <= prom_targets
    graf_targets = {v["target"] for v in svcs["grafana"]["volumes"]}
    assert "/etc/grafana/provisioning/datasources" in graf_targets
    for v in svcs["prometheus"]["volumes"] + svcs["grafana"]["volumes"]:
        if v["type"] == "bind":
            assert Path(v["source"]).exists(), v


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"))
    out = write_tree(tmp_path / "b", render_text_files(ri))
    (out / "empty.env").write_text("")
    proc = subprocess.run([compose_bin(), "-p", "rt-nosecret", "-f", "compose.yaml", "--env-file", "lab.env",
                           "--env-file", "empty.env", "config"], cwd=out, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "is not set: labbuild install generates it" in proc.stderr


def test_base_profile_leaves_out_conditional_wiring_and_observability(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"), profile="base")
    files = render_text_files(ri)
    doc = yaml.safe_load(files["compose.yaml"])
    assert list(doc["services"]) == ["web"]
    assert "name" not in doc
    assert "runbooks/app.md" not in files
    assert "observability/grafana/dashboards/tokens-and-cost.json" not in files
    assert "WEB__GREETING" in files["lab.env"] and "APP__" not in files["lab.env"]


def test_operator_override_in_install_env_wins_over_lab_env(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"), profile="base")
    out = write_tree(tmp_path / "b", render_text_files(ri))
    cfg = compose_config(out, {"WEB__API_TOKEN": "x", "WEB__PLAIN": "false"}, "rt-override")
    assert cfg["services"]["web"]["environment"]["PLAIN"] == "false"


@pytest.mark.parametrize("value", ["plain", "it's", 'say "hi"', "$HOME ${X} $$", "back\\slash 'q' $Y", ""])
def test_lab_env_values_reach_the_container_unchanged(tmp_path, value):
    text = f'LAB_NAME={env_file_value("x")}\nK={env_file_value(value)}\n'
    assert parse_env_file(text)["K"] == value
    (tmp_path / "lab.env").write_text(text)
    (tmp_path / "compose.yaml").write_text("services:\n  s:\n    image: busybox:1\n    environment:\n      K: ${K}\n")
    proc = subprocess.run([compose_bin(), "-p", "rt-quote", "-f", "compose.yaml", "--env-file", "lab.env",
                           "config", "--format", "json"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["services"]["s"]["environment"]["K"]
    assert got.replace("$$", "$") == value


def test_lab_env_and_secrets_example_hold_names_not_secret_values(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"))
    env = parse_env_file(render_lab_env(ri))
    assert env["LAB_NAME"] == "testlab" and env["LAB_VERSION"] == "1.0.0" and env["LAB_PROFILE"] == "full"
    assert env["WEB__GREETING"] == "it's $HOME and ${NOT_A_VAR}"
    assert "APP__DB_URL" not in env  # embeds a secret reference: lives in compose.yaml
    example = render_secrets_example(ri)
    assert "# db: generate=password length=32\nDB__POSTGRES_PASSWORD=\n" in example
    assert "# web: generate=token length=40\nWEB__API_TOKEN=\n" in example
    assert all(v == "" for v in parse_env_file(example).values())


# --------------------------------------------------------------------------- observability

PROM_SECRETS = "/etc/prometheus/secrets/"


def promtool_check_config(promtool: str, prom_dir: Path) -> subprocess.CompletedProcess:
    """`promtool check config prometheus.yml` in ``prom_dir`` (the bundle's observability/prometheus).

    promtool also opens every credentials_file; the ones under /etc/prometheus/secrets/
    exist only in the container (compose secrets filled from DIR/.env at start), so the
    check runs on a copy that points them at dummy files next to it. The file itself
    must first pass on its own with --syntax-only.
    """
    text = (prom_dir / "prometheus.yml").read_text()
    if PROM_SECRETS not in text:
        return subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=prom_dir,
                              capture_output=True, text=True)
    proc = subprocess.run([promtool, "check", "config", "--syntax-only", "prometheus.yml"], cwd=prom_dir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return proc
    dummies = prom_dir / "promtool-secrets"
    dummies.mkdir(exist_ok=True)
    for name in set(re.findall(re.escape(PROM_SECRETS) + r"([A-Za-z0-9._-]+)", text)):
        (dummies / name).write_text("dummy-credential\n")
    (prom_dir / "promtool-check.yml").write_text(text.replace(PROM_SECRETS, f"{dummies}/"))
    return subprocess.run([promtool, "check", "config", "promtool-check.yml"], cwd=prom_dir,
                          capture_output=True, text=True)


def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    ri = release_input(make_lab(tmp_path / "lab"))
    out = write_tree(tmp_path / "b", render_observability(ri))
    prom = out / "observability/prometheus"
    proc = promtool_check_config(promtool, prom)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
    proc = subprocess.run([promtool, "check", "rules", "rules/lab-alerts.yml"], cwd=prom, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = yaml.safe_load((prom / "rules/lab-alerts.yml").read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"TargetDown", "ContainerRestarting", "DiskNearlyFull", "HostMemoryHigh"}
    cfg = yaml.safe_load((prom / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"web", "prometheus", "litellm", "cadvisor"}  # cadvisor without [metrics] too
    assert jobs["web"]["static_configs"][0]["targets"] == ["web:8080"]
    assert jobs["litellm"]["metrics_path"] == "/metrics/" and jobs["litellm"]["params"] == {"format": ["prometheus"]}


def _check_dashboard(doc: dict) -> None:
    for key in ("title", "uid", "panels", "schemaVersion", "time", "templating", "annotations"):
        assert key in doc, key
    assert len(doc["uid"]) <= 40
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        assert {"id", "type", "title", "gridPos"} <= set(p)
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] not in ("row", "text"):
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
            assert p["datasource"]["uid"] == "lab-prometheus"


def test_grafana_provisioning_and_dashboards(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"))
    files = render_observability(ri)
    ds = yaml.safe_load(files["observability/grafana/provisioning/datasources/prometheus.yml"])
    assert ds["apiVersion"] == 1
    assert ds["datasources"][0] == {**ds["datasources"][0], "uid": "lab-prometheus", "type": "prometheus",
                                    "url": "http://prometheus:9090"}
    prov = yaml.safe_load(files["observability/grafana/provisioning/dashboards/local-ai-lab.yml"])
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/local-ai-lab"
    overview = json.loads(files["observability/grafana/dashboards/lab-overview.json"])
    _check_dashboard(overview)
    rows = [p["title"].split(":")[0] for p in overview["panels"] if p["type"] == "row"]
    assert rows == list(ri.services)
    tokens = json.loads(files["observability/grafana/dashboards/tokens-and-cost.json"])
    _check_dashboard(tokens)
    assert tokens["title"] == "Tokens & cost"
    assert any("litellm_spend_metric" in t["expr"] for p in tokens["panels"] for t in p.get("targets", []))
    base = render_observability(release_input(tmp_path / "lab", profile="base"))
    assert "observability/grafana/dashboards/tokens-and-cost.json" not in base


# --------------------------------------------------------------------------- runbooks

def test_runbooks_cover_operations_and_every_service(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"))
    pages = render_runbooks(ri)
    assert set(pages) == {"runbooks/README.md"} | {f"runbooks/{s}.md" for s in ri.services}
    readme = pages["runbooks/README.md"]
    for heading in ("## Install", "## Upgrade", "## Rollback", "## Air-gapped install", "## Troubleshooting",
                    "port is already taken", "keeps restarting", "Out of disk", "GPU not visible",
                    "unhealthy after an upgrade"):
        assert heading.lower() in readme.lower(), heading
    assert "cd DIR && docker compose ps" in readme and "docker compose exec SERVICE sh" in readme
    assert "--env-file" not in readme and " -p " not in readme      # plain compose in DIR (issue 11)
    assert "A web app \\| with a pipe" in readme
    web = pages["runbooks/web.md"]
    for text in ("18080", "127.0.0.1:18080", "testlab_web_data", "WEB__API_TOKEN", "/healthz",
                 "Web answers 502", "the app is still starting", "https://example.org/web",
                 "cd DIR && docker compose ps", "docker compose logs --tail 100 -f web", "docker compose restart web",
                 "docker compose exec web sh"):
        assert text in web, text
    assert "--env-file" not in web


def test_rendering_is_deterministic_and_independent_of_dict_order(tmp_path):
    ri = release_input(make_lab(tmp_path / "lab"))
    assert render_text_files(ri) == render_text_files(release_input(tmp_path / "lab"))


from hypothesis import given, settings, strategies as st


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=40))
def test_env_file_quoting_round_trips_any_value_or_refuses_it(value):
    from builder.escape import env_value_problem
    if env_value_problem(value):
        with pytest.raises(ValueError):
            env_file_value(value)
        return
    assert parse_env_file(f"K={env_file_value(value)}\n") == {"K": value}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab$ {}:.\\", max_size=30))
def test_compose_literals_survive_interpolation(value):
    from builder.render.envfile import compose_literal
    # compose turns $$ back into $; nothing else may be interpolated
    assert compose_literal(value).replace("$$", "\x00").count("$") == 0


ALERT_TESTS = '''
rule_files: [rules/lab-alerts.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="web",instance="web:8080"}'
        values: '0x20'
      - series: 'up{job="db",instance="db:5432"}'
        values: '1x20'
      - series: 'node_filesystem_avail_bytes{mountpoint="/",fstype="ext4"}'
        values: '5x20'
      - series: 'node_filesystem_size_bytes{mountpoint="/",fstype="ext4"}'
        values: '100x20'
    alert_rule_test:
      - eval_time: 1m
        alertname: TargetDown
        exp_alerts: []
      - eval_time: 5m
        alertname: TargetDown
        exp_alerts:
          - exp_labels: {severity: critical, job: web, instance: "web:8080"}
            exp_annotations:
              summary: "web is down"
              description: "Prometheus could not scrape web:8080 for 2 minutes. See runbooks/web.md."
      - eval_time: 15m
        alertname: DiskNearlyFull
        exp_alerts:
          - exp_labels: {severity: warning, mountpoint: "/", fstype: ext4}
            exp_annotations:
              summary: "Less than 10% free on /"
              description: "Models and volumes fill disks fast. See runbooks/README.md, 'Out of disk'."
'''


def test_alert_rules_fire_when_promtool_replays_a_down_target_and_a_full_disk(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    ri = release_input(make_lab(tmp_path / "lab"), profile="base")
    prom = write_tree(tmp_path / "b", render_observability(ri)) / "observability/prometheus"
    (prom / "alerts.test.yml").write_text(ALERT_TESTS)
    proc = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=prom, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_lab_without_gpu_services_gets_no_gpu_override(tmp_path):
    files = render_text_files(release_input(make_lab(tmp_path / "lab")))
    assert "compose.gpu.yaml" in files and "count: all" in files["compose.gpu.yaml"]   # app has gpus = "all"
    plain = make_lab(tmp_path / "plain", app=SERVICES["app"].replace("gpus = \"all\"", ""))
    assert "compose.gpu.yaml" not in render_text_files(release_input(plain))
