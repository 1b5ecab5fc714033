"""`labbuild export helm` (builder.export): the chart, checked with real Helm and
kubernetes-validate (1.37 schemas, strict) on the shipped catalog."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import bcrypt
import pytest
import tomlkit
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from builder.blueprint import SECRET_KEY_RE, load_lab
from builder.bundle.release import build_release
from builder.bundle.verify import safe_extract
from builder.errors import BundleError
from builder.escape import env_value_problem
from builder.export.helm import export_helm
from builder.export.model import ChartLab, ChartService, Mount
from builder.export.objects import kube_escape, service_template
from builder.export.values import resources
from builder.export.yamltext import Raw, emit, quoted, template_text
from builder.lockfile import LOCK_PATH, read_lock
from support.dockerenv import require_tool

REPO = Path(__file__).resolve().parents[1]
LABBUILD = str(REPO / ".venv" / "bin" / "labbuild")
LAB = load_lab(REPO)
LOCK = read_lock(REPO / LOCK_PATH)
PROFILES = sorted(LAB.profiles)
MIRROR = "mirror.example:5000/airgap/lab"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([require_tool("helm"), *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def supplied_sets(chart: Path) -> list[str]:
    """What an operator sets for the chart's operator-supplied secrets (cloudflared's tunnel token): their Secret."""
    present = yaml.safe_load((chart / "values.yaml").read_text()).get("services", {})
    return [f"services.{name}.existingSecret={name}-operator" for name, bp in LAB.services.items()
            if bp.supplied_secrets and name in present]


def template(chart: Path, *sets: str) -> list[dict]:
    args = ["template", "lab", str(chart), "--namespace", "lab"]
    for s in (*supplied_sets(chart), *sets):
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def validate(objects: list[dict], where: Path) -> None:
    """kubernetes-validate, 1.37 schemas, strict: every object must pass."""
    tool = require_tool("kubernetes-validate")
    where.write_text(yaml.safe_dump_all(objects))
    proc = subprocess.run([tool, "-k", "1.37.0", "--strict", "--quiet", str(where)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def workloads(objects: list[dict]) -> dict[str, dict]:
    return {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}


def closure(profile: str) -> list[str]:
    return LAB.profile_closure(profile)


@pytest.fixture(scope="module")
def phase4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chart") / "phase4"
    export_helm(out, root=REPO, profile="phase4", version="1.0.0")
    return out


@pytest.fixture(scope="module")
def rendered(phase4) -> list[dict]:
    return template(phase4)


# --------------------------------------------------------------------------- every profile, real tools

@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_exports_lints_strictly_and_every_object_validates(profile, tmp_path):
    out = tmp_path / "chart"
    export_helm(out, root=REPO, profile=profile, version="1.0.0")
    chart = yaml.safe_load((out / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["version"] == "1.0.0"
    lint = helm("lint", "--strict", str(out))
    assert "0 chart(s) failed" in lint.stdout
    default = template(out)
    mirrored = template(out, f"global.imageRegistry={MIRROR}")
    assert {w for w in workloads(default)} == set(closure(profile))
    validate(default + mirrored, tmp_path / "objects.yaml")
    helm("package", str(out), "--destination", str(tmp_path))
    assert (tmp_path / "local-ai-lab-1.0.0.tgz").is_file()
    needs = [name for name in closure(profile) if LAB.services[name].supplied_secrets]
    required = [n for n in needs if n not in LAB.optional_services(profile)]
    bare = helm("template", "lab", str(out), check=False)
    if required:   # without the operator's Secret, install stops naming the key
        assert bare.returncode == 1 and f"{required[0]} needs the secret" in bare.stderr, bare.stderr
    else:          # optional ones wait for their Secret; the rest installs
        assert bare.returncode == 0, bare.stderr
        assert set(workloads([d for d in yaml.safe_load_all(bare.stdout) if d])) == set(closure(profile)) - set(needs)


# --------------------------------------------------------------------------- per service

def test_each_service_is_a_deployment_or_a_statefulset_with_a_claim_per_volume(rendered):
    loads = workloads(rendered)
    for name in closure("phase4"):
        bp = LAB.services[name]
        w = loads[name]
        if bp.volumes:
            assert w["kind"] == "StatefulSet", name
            claims = {c["metadata"]["name"]: c for c in w["spec"]["volumeClaimTemplates"]}
            assert set(claims) == {v.name for v in bp.volumes}, name
            assert all(c["spec"]["resources"]["requests"]["storage"] == "10Gi" for c in claims.values())
            mounts = {m["mountPath"] for m in w["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
            assert {v.target for v in bp.volumes} <= mounts
        else:
            assert w["kind"] == "Deployment", name


def test_each_port_is_served_and_probes_honour_start_period(rendered):
    services, loads = by_kind(rendered, "Service"), workloads(rendered)
    for name in closure("phase4"):
        bp = LAB.services[name]
        container = loads[name]["spec"]["template"]["spec"]["containers"][0]
        if bp.ports:
            assert {(p["name"], p["port"]) for p in services[name]["spec"]["ports"]} == \
                   {(p.name, p.container) for p in bp.ports}, name
        else:
            assert name not in services
        if bp.health is None and bp.healthcheck is None:
            assert "startupProbe" not in container, name
            continue
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, (name, probe)
        startup = container["startupProbe"]
        if bp.health:
            action = startup.get("httpGet") or startup.get("tcpSocket")
            assert action["port"] == bp.health.port, name
            if "httpGet" in startup:
                assert startup["httpGet"]["path"] == bp.health.path
        else:
            assert "exec" in startup, name
        start = (bp.health.start_period if bp.health else bp.healthcheck.start_period) or "0s"
        seconds = sum(int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+)([smh])", start))
        assert startup["periodSeconds"] * startup["failureThreshold"] >= seconds + 60, name


def test_resources_come_from_the_blueprints_and_gpus_only_with_global_gpu(rendered, phase4):
    container = workloads(rendered)["ollama"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"memory": "16Gi"}}      # a cluster without GPUs schedules it
    sandbox = workloads(rendered)["dify-sandbox"]["spec"]["template"]["spec"]["containers"][0]
    assert sandbox["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}
    gpu = ChartService(name="x", description="", repository="docker.io/x/y", tag="1", digest="sha256:0",
                       memory="4Gi", gpus=2)
    assert resources(gpu) == {"limits": {"memory": "4Gi"}}
    on = workloads(template(phase4, "global.gpu=true"))
    assert on["ollama"]["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "16Gi", "nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}   # gpus = "all" -> 1
    assert on["dify-sandbox"]["spec"]["template"]["spec"]["containers"][0]["resources"] == sandbox["resources"]
    two = workloads(template(phase4, "global.gpu=true", "services.ollama.gpus=2"))
    assert two["ollama"]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"nvidia.com/gpu": 2}
    typo = helm("template", "lab", str(phase4), "--set", "services.dify-sandbox.gpus=1", check=False)
    assert typo.returncode != 0 and "gpus" in typo.stderr                # only services with [resources] gpus


def test_gpus_of_a_blueprint_become_nvidia_gpu_requests_and_limits(lab_copy, tmp_path):
    ollama = lab_copy / "blueprints" / "services" / "ollama.toml"
    text = re.sub(r"(?m)^gpus = .*\n", "", ollama.read_text())     # the shipped blueprint may set one
    ollama.write_text(text.replace("[resources]\n", "[resources]\ngpus = 3\n", 1))
    export_helm(tmp_path / "c", root=lab_copy, profile="base", version="1.0.0")
    container = workloads(template(tmp_path / "c", "global.gpu=true"))["ollama"]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["resources"] == {"limits": {"memory": "16Gi", "nvidia.com/gpu": 3},
                                      "requests": {"nvidia.com/gpu": 3}}


def test_files_are_configmaps_mounted_at_their_targets(rendered):
    maps = by_kind(rendered, "ConfigMap")
    litellm = workloads(rendered)["litellm"]["spec"]["template"]["spec"]
    bp = LAB.services["litellm"]
    for f in bp.effective_files(closure("phase4")):      # [[when.langfuse.files]] replaces the config
        mount = next(m for m in litellm["containers"][0]["volumeMounts"] if m["mountPath"] == f.target)
        volume = next(v for v in litellm["volumes"] if v["name"] == mount["name"])
        cm = maps[volume["configMap"]["name"]]
        assert cm["data"][mount["subPath"]] == f.content and mount["readOnly"] is True
    grafana_maps = [m for n, m in maps.items() if n.startswith("grafana-")]
    assert any("lab-overview.json" in m["data"] for m in grafana_maps)


def test_env_wiring_is_resolved_for_the_profile_with_secrets_by_reference(tmp_path, rendered):
    def env(objects, name):
        c = workloads(objects)[name]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e for e in c.get("env", [])}
    webui = env(rendered, "open-webui")
    assert webui["OLLAMA_BASE_URL"]["value"] == "http://ollama:11434"
    assert webui["QDRANT_URI"]["value"] == "http://qdrant:6333"
    assert webui["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "qdrant-secrets",
                                                                    "key": "QDRANT__SERVICE__API_KEY"}
    # a setting embedding another service's secret: the kubelet expands $(VAR) from an earlier entry
    names = list(env(rendered, "dify-api"))
    broker = env(rendered, "dify-api")["CELERY_BROKER_URL"]["value"]
    assert broker == "redis://:$(LAB_SECRET_DIFY_REDIS__REDIS_PASSWORD)@dify-redis:6379/1"
    assert names.index("LAB_SECRET_DIFY_REDIS__REDIS_PASSWORD") < names.index("CELERY_BROKER_URL")
    # [when.qdrant] is not active in base: no Qdrant wiring there
    out = tmp_path / "base"
    export_helm(out, root=REPO, profile="base", version="1.0.0")
    base = env(template(out), "open-webui")
    assert "QDRANT_URI" not in base and base["OLLAMA_BASE_URL"]["value"] == "http://ollama:11434"
    assert kube_escape("a$(b)$$c$d") == "a$$(b)$$$c$d"


def _edges(objects: list[dict]) -> dict[str, set[str]]:
    """client -> servers, read from the servers' NetworkPolicy ingress rules."""
    out: dict[str, set[str]] = {}
    for name, pol in by_kind(objects, "NetworkPolicy").items():
        for rule in pol["spec"].get("ingress") or []:
            for peer in rule.get("from", []):
                out.setdefault(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"], set()).add(name)
    return out


def test_network_policy_denies_by_default_and_allows_exactly_the_declared_edges(rendered):
    policies = by_kind(rendered, "NetworkPolicy")
    deny = policies["local-ai-lab-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    edges = _edges(rendered)
    # the front door (phase4): the services that sign in with OIDC call the provider (discovery, tokens),
    # at https://auth.<domain>, which the lab's proxy answers (frontDoor.proxyClusterIP): traefik too
    assert edges["open-webui"] == {"ollama", "qdrant", "litellm", "authelia", "traefik"}
    assert edges["litellm"] == {"litellm-db", "ollama", "langfuse"}     # [when.langfuse]: wiring without depends_on
    assert edges["n8n"] == {"litellm", "ollama"}
    assert edges["grafana"] == {"prometheus", "authelia", "traefik"}   # its provisioned datasource; OIDC
    assert "ollama" not in edges and "qdrant" not in edges             # they call nobody
    present = closure("phase4")
    for name in present:
        declared = set(LAB.services[name].effective_depends_on(present))   # [when.X] depends_on included
        assert {d for d in declared if LAB.services[d].ports} <= edges.get(name, set()), name
    # Prometheus reaches each scraped service on its metrics port only
    openbao = policies["openbao"]["spec"]["ingress"]
    prom_rule = next(r for r in openbao if r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                     == "prometheus")
    assert [p["port"] for p in prom_rule["ports"]] == [LAB.services["openbao"].metrics.port]
    # egress mirrors ingress, plus DNS
    webui_egress = policies["open-webui"]["spec"]["egress"]
    assert webui_egress[0]["ports"][0] == {"port": 53, "protocol": "UDP"}
    assert {r["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for r in webui_egress[1:]
            if "podSelector" in r["to"][0]} == edges["open-webui"]


def test_every_active_when_block_is_an_edge(rendered):
    edges, present = _edges(rendered), closure("phase4")
    missing = {(n, w.other) for n in present for w in LAB.services[n].active_when(present)
               if LAB.services[w.other].ports and w.other not in edges.get(n, set())
               and (w.env or w.files or w.depends_on or w.embedding_env)}
    assert not missing
    # litellm's [[when.APP.provision]] blocks (the apps' own keys) are calls install makes, not edges
    assert {"open-webui", "n8n", "jupyter", "dify-api", "flowise"} & edges["litellm"] == set()


def test_an_optional_service_waiting_for_a_supplied_secret_is_left_out_until_it_has_one(phase4):
    bare = [d for d in yaml.safe_load_all(helm("template", "lab", str(phase4), "--namespace", "lab").stdout) if d]
    names = {d["metadata"]["name"] for d in bare}
    assert "cloudflared" not in workloads(bare) and not any(n.startswith("cloudflared") for n in names)
    assert "openbao" in workloads(bare) and "flowise" in workloads(bare)   # optional without supplied secrets: there
    with_token = workloads(template(phase4))          # template() sets cloudflared's existingSecret
    env = {e["name"]: e for e in with_token["cloudflared"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TUNNEL_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "cloudflared-operator",
                                                               "key": "TUNNEL_TOKEN"}   # compose's ${..:-}


def test_ingress_per_exposed_service_with_the_configured_class(phase4):
    objects = template(phase4, "ingress.className=nginx", "services.grafana.ingress.enabled=true",
                       "services.grafana.ingress.host=grafana.example.org")
    ingresses = by_kind(objects, "Ingress")
    assert set(ingresses) == {"grafana"}
    spec = ingresses["grafana"]["spec"]
    assert spec["ingressClassName"] == "nginx" and spec["rules"][0]["host"] == "grafana.example.org"
    assert spec["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": "grafana", "port": {"name": "http"}}
    rules = by_kind(objects, "NetworkPolicy")["grafana"]["spec"]["ingress"]
    assert {"ports": [{"port": "http"}]} in rules
    assert not by_kind(template(phase4), "Ingress")


# --------------------------------------------------------------------------- images

def test_every_image_carries_its_locked_digest_and_the_mirror_prefix_when_set(phase4):
    for objects, mirror in ((template(phase4), None), (template(phase4, f"global.imageRegistry={MIRROR}/"), MIRROR)):
        loads = workloads(objects)
        for name in closure("phase4"):
            image = loads[name]["spec"]["template"]["spec"]["containers"][0]["image"]
            rec = LOCK.services[name]
            assert image.endswith("@" + rec.digest), (name, image)
            repo = rec.name
            if mirror:
                assert image == f"{mirror}/{repo.split('/', 1)[1]}@{rec.digest}", image
            else:
                assert image == f"{rec.reference}@{rec.digest}"
    postgres = workloads(template(phase4, f"global.imageRegistry={MIRROR}"))["dify-db"]
    assert postgres["spec"]["template"]["spec"]["containers"][0]["image"].startswith(f"{MIRROR}/library/postgres@")


# --------------------------------------------------------------------------- secrets

def test_no_secret_value_in_configmaps_values_or_chart_files(phase4, rendered):
    secrets = by_kind(rendered, "Secret")
    values = {base64.b64decode(v).decode() for s in secrets.values() for v in s["data"].values()}
    assert len(values) >= 20 and all(len(v) >= 16 for v in values)
    for cm in by_kind(rendered, "ConfigMap").values():
        for text in cm["data"].values():
            assert not any(v in text for v in values)
    for path in phase4.rglob("*"):
        if path.is_file():
            data = path.read_text("utf-8", "replace")
            assert not any(v in data for v in values), path
    env_values = yaml.safe_load((phase4 / "values.yaml").read_text())["services"]
    assert not [k for s in env_values.values() for k, v in s["env"].items()
                if SECRET_KEY_RE.search(k) and v not in ("true", "false")]     # a switch is no secret


def test_secrets_are_generated_once_kept_and_replaceable_by_an_existing_secret(phase4):
    text = (phase4 / "templates" / "qdrant.yaml").read_text()
    assert 'lookup "v1" "Secret" $.Release.Namespace "qdrant-secrets"' in text
    secret = by_kind(template(phase4), "Secret")["qdrant-secrets"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    generated = by_kind(template(phase4), "Secret")
    for name in closure("phase4"):
        for s in LAB.services[name].secrets:
            if s.supplied:          # never generated: the operator's existingSecret holds it
                continue
            value = base64.b64decode(generated[f"{name}-secrets"]["data"][s.name]).decode()
            if s.derive:            # the bcrypt hash of the value stored beside it (n8n's owner)
                source = base64.b64decode(generated[f"{name}-secrets"]["data"][s.source])
                assert bcrypt.checkpw(source, value.encode()), (name, s.name)
                continue
            assert value.startswith(s.prefix) and len(value) == len(s.prefix) + s.length, (name, s.name)
            random_part = value[len(s.prefix):]
            assert re.fullmatch("[0-9a-f]+" if s.generate == "hex" else "[A-Za-z0-9]+", random_part), (name, s.name)
    objects = template(phase4, "services.qdrant.existingSecret=my-qdrant")
    assert "qdrant-secrets" not in by_kind(objects, "Secret")
    webui = workloads(objects)["open-webui"]["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in webui if e["name"] == "QDRANT_API_KEY")["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "my-qdrant"


# --------------------------------------------------------------------------- values, schema, observability

@pytest.mark.parametrize("typo", ["global.imageRegistri=x", "services.open-webui.ingres.enabled=true",
                                  "services.no-such-service.env.A=b", "networkPolicy.enable=false"])
def test_values_schema_makes_set_typos_fail(phase4, typo):
    proc = helm("template", "lab", str(phase4), "--set", typo, check=False)
    assert proc.returncode != 0 and "additional properties" in proc.stderr.lower(), proc.stderr


def test_observability_uses_kubernetes_discovery_or_service_monitors(phase4, rendered):
    prom = yaml.safe_load((phase4 / "files/observability/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert "openbao" in jobs and jobs["openbao"]["params"] == {"format": ["prometheus"]}
    assert all(j["kubernetes_sd_configs"][0]["role"] == "endpointslice" for j in jobs.values())
    assert "prometheus" == workloads(rendered)["prometheus"]["spec"]["template"]["spec"]["serviceAccountName"]
    assert "prometheus" in by_kind(rendered, "Role")
    assert not by_kind(rendered, "ServiceMonitor")
    monitors = by_kind(template(phase4, "prometheus.serviceMonitors=true"), "ServiceMonitor")
    assert set(monitors) == set(jobs)
    assert monitors["openbao"]["spec"]["endpoints"][0] == {
        "port": "http", "path": "/v1/sys/metrics", "params": {"format": ["prometheus"]},
        "authorization": {"type": "Bearer", "credentials": {"name": "openbao-secrets", "key": "BAO_METRICS_TOKEN"}}}
    assert (phase4 / "runbooks" / "ollama.md").is_file()
    readme = (phase4 / "README.md").read_text()
    for word in ("helm install", "helm upgrade", "helm rollback", "labbuild mirror", "global.imageRegistry"):
        assert word in readme


def test_openbao_is_carried_with_its_config_secrets_volumes_probe_and_scrape_token(phase4, rendered):
    bp = LAB.services["openbao"]
    (sts,) = [o for o in rendered if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "openbao"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == f"{bp.image.name}:{bp.image.tag}@{bp.image.digest}" and c["args"] == ["server"]
    assert c["ports"] == [{"name": "http", "containerPort": 8200, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/sys/health"       # 200 only initialised + unsealed
    env = {e["name"]: e for e in c["env"]}
    for s in bp.secrets:          # the seal key and self-init credentials from the chart's Secret, never values
        assert env[s.name]["valueFrom"]["secretKeyRef"] == {"name": "openbao-secrets", "key": s.name}
    (cm,) = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "openbao-files"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/openbao/config/lab.hcl")
    assert cm["data"][mount["subPath"]] == bp.files[0].content and mount["readOnly"] is True
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert claims == {"data", "audit"} and {m["mountPath"] for m in c["volumeMounts"]} >= {"/openbao/file",
                                                                                         "/openbao/logs"}
    # Prometheus scrapes /v1/sys/metrics with the metrics token, mounted from openbao's Secret
    prom = yaml.safe_load((phase4 / "files/observability/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "openbao")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/secrets/openbao"}
    ppod = workloads(rendered)["prometheus"]["spec"]["template"]["spec"]
    creds = next(v for v in ppod["volumes"] if v["name"] == "scrape-credentials")["projected"]["sources"]
    assert {"secret": {"name": "openbao-secrets", "items": [{"key": "BAO_METRICS_TOKEN", "path": "openbao"}]}} in creds
    assert {"name": "scrape-credentials", "mountPath": "/etc/prometheus/secrets", "readOnly": True} in \
        ppod["containers"][0]["volumeMounts"]
    rules = (phase4 / "files/observability/prometheus/rules/lab-alerts.yml").read_text()
    assert "alert: OpenBaoSealed" in rules
    secret = by_kind(rendered, "Secret")["openbao-secrets"]
    assert set(secret["data"]) == {s.name for s in bp.secrets}
    assert re.fullmatch(r"[0-9a-f]{64}", base64.b64decode(secret["data"]["BAO_SEAL_KEY"]).decode())  # 32 bytes
    # a Kubernetes volume is root's: the pod's fsGroup (OpenBao's chart: 100/1000) makes it writable
    assert pod["securityContext"] == {"runAsUser": 100, "runAsGroup": 1000, "fsGroup": 1000}
    assert env["SKIP_CHOWN"]["value"] == "true"


# --------------------------------------------------------------------------- free text is data, never template code

# A description that closed the template comment it was pasted into (Markdown escaping leaves "*/}}" whole)
# and ran the rest as template code: `validate` and `helm lint` passed and `helm template` added this Pod.
HOSTPID_POD = ('x */}}{{ $n := printf "%c" 10 }}{{ print $n "---" $n "apiVersion: v1" $n "kind: Pod" $n '
               '"metadata: {name: pwn}" $n "spec:" $n "  hostPID: true" $n "  containers:" $n '
               '"  - {name: pwn, image: busybox, securityContext: {privileged: true}}" $n "---" $n (printf "%c" 35) }}')


def edit_blueprint(root: Path, service: str, change) -> None:
    """Apply ``change`` to the parsed blueprint of ``service`` in the lab at ``root`` and save it."""
    path = root / "blueprints" / "services" / f"{service}.toml"
    doc = tomlkit.parse(path.read_text("utf-8"))
    change(doc)
    path.write_text(tomlkit.dumps(doc), "utf-8")


def object_names(objects: list[dict]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objects)


@pytest.fixture(scope="module")
def base_objects(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("chart") / "base"
    export_helm(out, root=REPO, profile="base", version="1.0.0")
    return template(out)


@pytest.mark.parametrize("description", [HOSTPID_POD, "Stores vectors */ fast", 'Q&A */}}{{ fail "injected" }}'],
                                         ids=["hostpid-pod", "comment-end", "fail-action"])
def test_a_description_never_becomes_template_code(description, lab_copy, tmp_path, base_objects):
    edit_blueprint(lab_copy, "node-red", lambda bp: bp["service"].__setitem__("description", description))
    assert run("--root", str(lab_copy), "validate").returncode == 0      # free text: nothing to refuse
    out = tmp_path / "chart"
    export_helm(out, root=lab_copy, profile="base", version="1.0.0")
    assert "0 chart(s) failed" in helm("lint", "--strict", str(out)).stdout
    assert object_names(template(out)) == object_names(base_objects)     # no hostPID Pod, none lost
    schema = json.loads((out / "values.schema.json").read_text("utf-8"))
    assert schema["properties"]["services"]["properties"]["node-red"]["description"] == description   # not Markdown


def test_metrics_params_are_data_in_keys_too(lab_copy, tmp_path):
    params = {"a{{ 7 }}": "{{ 7 }}", "b{{/*": "*/}}", "on": "y", "-1": ".5", "k" * 1100: "a key YAML must mark"}
    edit_blueprint(lab_copy, "grafana", lambda bp: bp["metrics"].__setitem__("params", params))
    out = tmp_path / "chart"
    export_helm(out, root=lab_copy, profile="phase1", version="1.0.0")
    monitors = by_kind(template(out, "prometheus.serviceMonitors=true"), "ServiceMonitor")
    assert monitors["grafana"]["spec"]["endpoints"][0]["params"] == {k: [v] for k, v in params.items()}


def test_env_settings_keep_the_characters_yaml_reads_as_line_breaks(lab_copy, tmp_path):
    value = "a\x85b\u2028c\u2029d\xa0e"          # validate allows them; a raw NEL in values.yaml read back as a space
    edit_blueprint(lab_copy, "node-red", lambda bp: bp["env"].__setitem__("LAB_TEXT", value))
    out = tmp_path / "chart"
    export_helm(out, root=lab_copy, profile="base", version="1.0.0")
    env = workloads(template(out))["node-red"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LAB_TEXT", "value": value} in env


def test_a_mounted_file_outside_the_charts_files_renders_without_a_traceback():
    svc = ChartService(name="x", description="", repository="docker.io/x/y", tag="1", digest="sha256:0",
                       mounts=(Mount("file", "lab.env", "/etc/lab.env", True),))
    lab = ChartLab(lab="l", profile="p", version="1.0.0", labbuild="0", services={"x": svc}, files={},
                   edges={"x": {}})
    assert '$.Files.Get "files/lab.env" | quote' in service_template(lab, "x")


# every character class that broke a template or a YAML reader, then anything (controls included)
TEMPLATE_TRICKY = st.sampled_from(["{{", "}}", "{{/*", "*/}}", "/*", "*/", "{{-", "-}}", "{", "}", "`", "'", '"',
                                   "\\", "$", "$(", "$$", "%c", "%I", "%J", "#", ": ", "- ", "---", "\n", "\r\n",
                                   "\t", "\x00", "\x7f", "\x85", "\u2028", "\ufeff", "on", "y", "-1", ".5", "~",
                                   "&a", "*a", "!t"])
ANY_TEXT = st.lists(st.one_of(TEMPLATE_TRICKY, st.text(max_size=4)), max_size=12).map("".join)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(ANY_TEXT, min_size=1, max_size=16))
def test_quoted_and_template_text_are_read_back_exactly_by_helm(tmp_path_factory, texts):
    """The three ways yamltext lets data into a template, each read back by Helm itself: a YAML
    scalar and key (``emit``), a Go string literal (``quoted``) and template text (``template_text``)."""
    chart = tmp_path_factory.mktemp("chart")
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.1.0\n")
    (chart / "templates").mkdir()
    defines = "".join(f'{{{{ define "t{i}" }}}}{template_text(t)}{{{{ end }}}}' for i, t in enumerate(texts))
    data = {**{f"yaml{i}": t for i, t in enumerate(texts)},
            **{f"go{i}": Raw(f"{{{{ {quoted(t)} | b64enc | quote }}}}") for i, t in enumerate(texts)},
            **{f"text{i}": Raw(f'{{{{ include "t{i}" . | b64enc | quote }}}}') for i in range(len(texts))}}
    keys = {t: str(i) for i, t in enumerate(texts)}
    doc = "\n".join(emit({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"}, "data": data,
                          "keys": keys}))
    (chart / "templates" / "t.yaml").write_text(defines + "\n" + doc + "\n", "utf-8")
    got = yaml.safe_load(helm("template", "t", str(chart)).stdout)
    for i, t in enumerate(texts):
        assert got["data"][f"yaml{i}"] == t
        assert base64.b64decode(got["data"][f"go{i}"]).decode("utf-8") == t
        assert base64.b64decode(got["data"][f"text{i}"]).decode("utf-8") == t
    assert got["keys"] == keys


# Every free-text field of a blueprint that reaches the chart, filled with arbitrary text: the same objects
# (kinds and names) as with plain text, and each text where it belongs. One chart render holds every text of
# an example. `pytest -m nightly` runs LABBUILD_HELM_FUZZ_EXAMPLES (300) examples.
LINE = st.lists(st.one_of(TEMPLATE_TRICKY, st.text(max_size=4)), max_size=10).map(    # no control characters
    lambda parts: re.sub(r"[\x00-\x1f\x7f]", "", "".join(parts)))
ENV = LINE.map(lambda t: t.replace("`", "") if env_value_problem(t) else t)            # what an env file carries
# a mount path: compose reads ':' as an option, and interpolates '$' (render.compose does not escape it there yet)
PATH_TEXT = LINE.map(lambda t: t.replace(":", "").replace("$", ""))
FIELD_TEXTS = {"description": LINE, "env": ENV, "mixed": ENV, "file": ANY_TEXT, "command": ANY_TEXT,
               "entrypoint": ANY_TEXT, "health_path": LINE, "volume": PATH_TEXT, "bind": PATH_TEXT,
               "metrics_path": LINE, "param": ANY_TEXT, "param_value": ANY_TEXT, "runbook": ANY_TEXT,
               "healthcheck": ANY_TEXT}
HELM_FUZZ = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
                     phases=[Phase.explicit, Phase.reuse, Phase.generate])   # shrinking takes minutes of helm runs
HELM_FUZZ_NIGHTLY = settings(max_examples=int(os.environ.get("LABBUILD_HELM_FUZZ_EXAMPLES", "300")), deadline=None,
                             suppress_health_check=list(HealthCheck))


def _fill_node_red(bp, t: dict[str, str]) -> None:
    bp["service"]["description"] = f"d{t['description']}d"          # markdown_text drops surrounding space
    bp["service"]["command"] = [t["command"], t["description"]]
    bp["service"]["entrypoint"] = [t["entrypoint"]]
    bp["env"]["LAB_TEXT"] = t["env"]
    bp["env"]["LAB_MIXED"] = "m${secret:node-red.FUZZ_TOKEN}" + t["mixed"]      # text around a secret: a literal
    bp["secrets"] = {"FUZZ_TOKEN": {"generate": "token"}}
    bp["files"] = [{"name": "fuzz.txt", "target": "/fuzz/fuzz.txt", "content": t["file"]}]
    bp["health"]["path"] = "/" + t["health_path"]
    bp["volumes"].append({"name": "fuzz", "target": "/v" + t["volume"]})
    bp["binds"] = [{"source": "/h" + t["bind"], "target": "/b" + t["bind"]}]
    bp["metrics"] = {"port": "http", "path": "/" + t["metrics_path"], "params": {t["param"]: t["param_value"]}}
    bp["runbook"][0]["title"] = f"t{t['description']}"
    for key in ("symptom", "cause", "fix"):
        bp["runbook"][0][key] = f"r{t['runbook']}"


def _fill_langfuse_redis(bp, t: dict[str, str]) -> None:
    bp["healthcheck"]["test"] = ["CMD", t["healthcheck"], t["command"]]


def _fuzz_chart(lab: Path, originals: dict[str, str], texts: dict[str, str], out: Path) -> list[dict]:
    """Export phase1 of ``lab`` with ``texts`` in node-red's and langfuse-redis' free-text fields; its objects."""
    for service, fill in (("node-red", _fill_node_red), ("langfuse-redis", _fill_langfuse_redis)):
        (lab / "blueprints" / "services" / f"{service}.toml").write_text(originals[service], "utf-8")
        edit_blueprint(lab, service, lambda bp: fill(bp, texts))
    export_helm(out, root=lab, profile="phase1", version="1.0.0")
    return template(out, "prometheus.serviceMonitors=true")


def _assert_each_text_where_it_belongs(t: dict[str, str], objects: list[dict], out: Path) -> None:
    pod = workloads(objects)["node-red"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LAB_TEXT"] == t["env"].replace("$", "$$")                        # the kubelet reads $$ as $
    assert env["LAB_MIXED"] == "m$(LAB_SECRET_NODE_RED__FUZZ_TOKEN)" + kube_escape(t["mixed"])
    assert yaml.safe_load((out / "values.yaml").read_text("utf-8"))["services"]["node-red"]["env"]["LAB_TEXT"] \
        == t["env"]
    assert container["args"] == [kube_escape(t["command"]), kube_escape(t["description"])]
    assert container["command"] == [kube_escape(t["entrypoint"])]
    assert container["startupProbe"]["httpGet"]["path"] == "/" + t["health_path"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["fuzz"] == "/v" + t["volume"] and "/b" + t["bind"] in mounts.values()
    assert {"path": "/h" + t["bind"]} in [v.get("hostPath") for v in pod["volumes"]]
    assert by_kind(objects, "ConfigMap")["node-red-files"]["data"] == {"config_node-red_fuzz.txt": t["file"]}
    endpoint = by_kind(objects, "ServiceMonitor")["node-red"]["spec"]["endpoints"][0]
    assert endpoint["path"] == "/" + t["metrics_path"] and endpoint["params"] == {t["param"]: [t["param_value"]]}
    probe = workloads(objects)["langfuse-redis"]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["exec"]["command"] == [t["healthcheck"], t["command"]]
    schema = json.loads((out / "values.schema.json").read_text("utf-8"))
    assert schema["properties"]["services"]["properties"]["node-red"]["description"] == f"d{t['description']}d"


@pytest.mark.parametrize("cfg", [pytest.param(HELM_FUZZ, id="fast"),
                                 pytest.param(HELM_FUZZ_NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_free_text_in_every_field_renders_the_same_objects_and_stays_verbatim(cfg, lab_copy, tmp_path):
    originals = {s: (lab_copy / "blueprints" / "services" / f"{s}.toml").read_text("utf-8")
                 for s in ("node-red", "langfuse-redis")}
    out = tmp_path / "chart"            # each export replaces the one before
    plain = object_names(_fuzz_chart(lab_copy, originals, dict.fromkeys(FIELD_TEXTS, "plain"), out))

    def check(texts: dict[str, str]) -> None:
        objects = _fuzz_chart(lab_copy, originals, texts, out)
        assert object_names(objects) == plain
        _assert_each_text_where_it_belongs(texts, objects, out)

    check(dict.fromkeys(FIELD_TEXTS, HOSTPID_POD) | {"volume": "*/}}{{ 7 }}", "bind": "{{/*",
                                                     "file": "\ufeff{{ 7 }}\x7f\x85\n*/}}", "mixed": "100%I%J */}}"})
    cfg(given(st.fixed_dictionaries(FIELD_TEXTS))(check))()


# --------------------------------------------------------------------------- reproducible, one model

def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_export_twice_gives_identical_bytes_and_refreshes_an_earlier_export(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    export_helm(a, root=REPO, profile="phase2", version="2.0.0")
    export_helm(b, root=REPO, profile="phase2", version="2.0.0")
    assert _tree(a) == _tree(b)
    again = export_helm(a, root=REPO, profile="base", version="2.0.0")
    assert "templates/litellm.yaml" in again.removed and not (a / "templates" / "litellm.yaml").exists()
    assert set(_tree(a)) == set(again.files)


def test_a_bundle_and_its_profile_give_the_same_chart(lab_copy, tmp_path):
    result = build_release(lab_copy, "1.2.3", profile="phase1", out_dir=tmp_path / "dist")
    from_bundle, from_profile = tmp_path / "bundle", tmp_path / "profile"
    export_helm(from_bundle, bundle=result.bundle)
    export_helm(from_profile, root=lab_copy, profile="phase1", version="1.2.3")
    assert _tree(from_bundle) == _tree(from_profile)
    extracted = safe_extract(result.bundle, tmp_path / "x")
    export_helm(tmp_path / "dir", bundle=extracted)
    assert _tree(tmp_path / "dir") == _tree(from_profile)
    # only a verified bundle is exported
    compose = extracted / "compose.yaml"
    compose.write_text(compose.read_text().replace("open-webui", "open-webul"))
    with pytest.raises(BundleError, match="failed verification") as err:
        export_helm(tmp_path / "tampered", bundle=extracted)
    assert any(p.file == "compose.yaml" for p in err.value.problems)
    assert not (tmp_path / "tampered").exists()


# --------------------------------------------------------------------------- the command line

def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([LABBUILD, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_exports_and_prints_one_json_object(tmp_path):
    proc = run("--json", "export", "helm", "--profile", "base", "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and data["chart"] == "local-ai-lab" and data["profile"] == "base"
    assert "Chart.yaml" in data["files"]


@pytest.mark.parametrize("case", ["unknown-profile", "missing-bundle", "out-is-a-file", "out-is-foreign",
                                  "damaged-bundle", "bad-version"])
def test_cli_bad_input_exits_1_with_a_message_and_no_traceback(case, tmp_path):
    out = tmp_path / "out"
    args = ["--profile", "phase1"]
    if case == "unknown-profile":
        args, want = ["--profile", "phase9"], "unknown profile"
    elif case == "missing-bundle":
        args, want = [str(tmp_path / "nope.tar.gz")], "no such bundle"
    elif case == "out-is-a-file":
        out.write_text("x")
        want = "not a directory"
    elif case == "out-is-foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        want = "not empty"
    elif case == "damaged-bundle":
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(b"not a tar")
        args, want = [str(bad)], "not a readable bundle"
    else:
        args, want = ["--profile", "phase1", "--version", "one"], "SemVer"
    proc = run("export", "helm", *args, "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert want in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    if case == "out-is-foreign":
        assert (out / "notes.txt").read_text() == "mine" and not (out / "Chart.yaml").exists()


def test_cli_needs_exactly_one_source(tmp_path):
    assert run("export", "helm", "--out", str(tmp_path)).returncode == 2
