"""OpenBao's blueprint: its rendered server configuration parsed with a real HCL parser (python-hcl2)
and checked field by field against OpenBao's documentation (v2.6.2, github.com/openbao/openbao,
website/content/docs/...), its compose service, its health probe and its sealed alert (promtool).

OpenBao itself cannot run here (no package of it in the registries we reach): what it does with this
file is not tested, only that the file says what the docs require."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
import yaml

from builder.blueprint import load_lab

REPO = Path(__file__).resolve().parents[1]
LAB = load_lab(REPO)
BP = LAB.services["openbao"]
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")        # docs/configuration/self-init.mdx: block names
OPTS = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False)


def _s(value):
    """An HCL string literal as python-hcl2 returns it (quoted, escaped) -> its value."""
    assert isinstance(value, str) and value.startswith('"'), value
    return json.loads(value)


def _plain(value):
    """Every string literal of a parsed HCL value, decoded."""
    if isinstance(value, str):
        return _s(value)
    if isinstance(value, dict):
        return {(_s(k) if k.startswith('"') else k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _block(doc: dict, kind: str, *labels: str) -> dict:
    """The one ``kind "label"...`` block (python-hcl2 nests labels as keys of a list of dicts)."""
    found = doc.get(kind, [])
    found = found if isinstance(found, list) else [found]
    for label in labels:
        found = [b[label] for b in found if label in b]
    assert len(found) == 1, (kind, labels, found)
    return found[0]


@pytest.fixture(scope="module")
def config() -> dict:
    from builder.render.files import render_config_files
    from test_catalog import _ri

    files = render_config_files(_ri(LAB, "phase4"))
    (path,) = [p for p in files if p.startswith("config/openbao/")]
    assert path == "config/openbao/lab.hcl"
    return _plain(hcl2.loads(files[path], serialization_options=OPTS))


def test_image_is_openbao_pinned_by_its_index_digest() -> None:
    assert BP.image.name == "docker.io/openbao/openbao" and BP.image.tag == "2.6.2"
    assert BP.image.digest == "sha256:11fd73a2102cda9c55d5d881a8c3210303146a7ec1e8ac76f526e175c6d24641"
    assert BP.command == ("server",)          # docker-entrypoint.sh: server -> bao server -config=/openbao/config
    assert [(p.container, p.host) for p in BP.ports] == [(8200, 8200)]
    assert "vault" not in LAB.services


def test_server_settings_match_the_docs(config: dict) -> None:
    # docs/configuration/index.mdx: ui (bool), api_addr, cluster_addr (full URLs)
    assert config["ui"] is True
    assert config["api_addr"] == "http://127.0.0.1:8200" and config["cluster_addr"] == "http://127.0.0.1:8201"
    assert "disable_mlock" not in config           # OpenBao 2.x documents no mlock setting (removed upstream)
    # docs/configuration/storage/raft.mdx: path, node_id; on the data volume
    raft = _block(config, "storage", "raft")
    assert set(raft) == {"path", "node_id"}
    assert raft["path"] in {v.target for v in BP.volumes if v.name == "data"}
    # docs/configuration/listener/tcp.mdx: address, tls_disable, telemetry.unauthenticated_metrics_access
    tcp = _block(config, "listener", "tcp")
    assert tcp["address"] == "0.0.0.0:8200" and tcp["tls_disable"] is True
    assert tcp["telemetry"] == [{"unauthenticated_metrics_access": False}]      # the scrape needs the token
    # docs/configuration/telemetry.mdx: prometheus_retention_time (non-zero enables /v1/sys/metrics' prometheus format)
    (telemetry,) = config["telemetry"]
    assert telemetry == {"prometheus_retention_time": "30s", "disable_hostname": True}


def test_static_seal_key_comes_from_a_generated_32_byte_secret(config: dict) -> None:
    # docs/configuration/seal/static.mdx: current_key_id and current_key required; env:// prefix; 32 bytes
    seal = _block(config, "seal", "static")
    assert set(seal) == {"current_key_id", "current_key"}
    assert seal["current_key_id"] and seal["current_key"] == "env://BAO_SEAL_KEY"
    key = next(s for s in BP.secrets if s.name == "BAO_SEAL_KEY")
    assert key.generate == "hex" and key.length == 64            # 64 hex characters = 32 bytes (AES-256)
    assert key.rotate is False and "previous_key" in key.rotate_reason


def test_file_audit_device_writes_to_its_own_volume(config: dict) -> None:
    # docs/configuration/audit.mdx: audit "<type>" "<path>" { description, options { ... } }
    # docs/audit/file.mdx: file_path, mode
    device = _block(config, "audit", "file", "lab-file")
    assert device["options"] == [{"file_path": "/openbao/logs/audit.log", "mode": "0600"}]
    audit = {v.name: v.target for v in BP.volumes}
    assert audit["audit"] == "/openbao/logs" and audit["audit"] != audit["data"]


def _requests(config: dict) -> dict[str, dict]:
    out = {}
    for block in config["initialize"]:
        ((group, body),) = block.items()
        assert NAME_RE.match(group), group
        for req in body["request"]:
            ((name, fields),) = req.items()
            assert NAME_RE.match(name) and name not in out, name
            # docs/configuration/self-init.mdx: operation, path required; data optional; nothing else used
            assert {"operation", "path"} <= set(fields) <= {"operation", "path", "data", "token", "allow_failure"}
            out[name] = fields
    return out


def test_self_initialisation_requests_match_the_api_docs(config: dict) -> None:
    reqs = _requests(config)
    paths = {n: (r["operation"], r["path"]) for n, r in reqs.items()}
    assert all(op == "update" for op, _ in paths.values())         # POST in the API docs = update
    # docs/api/system/mounts.mdx: a KV version 2 mount for the lab
    assert reqs["mount-lab-kv"]["path"] == "sys/mounts/lab"
    assert reqs["mount-lab-kv"]["data"]["type"] == "kv" and reqs["mount-lab-kv"]["data"]["options"] == {"version": "2"}
    # docs/api/system/auth.mdx + docs/api/auth/approle.mdx
    assert reqs["enable-approle"]["data"] == {"type": "approle"}
    role = reqs["role-labbuild"]["data"]
    assert role["token_policies"] == ["labbuild"] and role["secret_id_ttl"] == "0" and role["secret_id_num_uses"] == 0
    assert reqs["role-id-labbuild"]["path"] == "auth/approle/role/labbuild/role-id"
    assert reqs["secret-id-labbuild"]["path"] == "auth/approle/role/labbuild/custom-secret-id"
    # docs/api/auth/token.mdx: id (root only; self-init runs as root), policies, no_default_policy
    token = reqs["metrics-token"]["data"]
    assert reqs["metrics-token"]["path"] == "auth/token/create"
    assert token["policies"] == ["lab-metrics"] and token["no_default_policy"] is True and token["renewable"] is False
    assert token["ttl"] == reqs["tune-token-ttl"]["data"]["max_lease_ttl"]   # the token mount allows that TTL
    # the mount exists before the policy naming it is used, the approle before its role
    order = list(reqs)
    assert order.index("enable-approle") < order.index("role-labbuild") < order.index("secret-id-labbuild")
    assert order.index("tune-token-ttl") < order.index("metrics-token")


def test_every_env_source_is_a_secret_compose_gives_the_container(config: dict) -> None:
    # docs/concepts/profiles.mdx: { eval_source = "env", eval_type, env_var, require_present }
    found = {}
    for name, req in _requests(config).items():
        for key, value in (req.get("data") or {}).items():
            if isinstance(value, dict) and "eval_source" in value:
                assert value["eval_source"] == "env" and value["eval_type"] == "string"
                assert value["require_present"] is True
                found[(name, key)] = value["env_var"]
    assert found == {("role-id-labbuild", "role_id"): "BAO_LABBUILD_ROLE_ID",
                     ("secret-id-labbuild", "secret_id"): "BAO_LABBUILD_SECRET_ID",
                     ("metrics-token", "id"): "BAO_METRICS_TOKEN"}
    from builder.render.compose import compose_service
    from test_catalog import _ri

    env = compose_service(_ri(LAB, "phase4"), "openbao")["environment"]
    for var in [*found.values(), "BAO_SEAL_KEY"]:
        assert env[var].startswith("${OPENBAO__" + var + ":?"), env[var]   # from DIR/.env, never the bundle


def test_policies_parse_as_hcl_and_grant_only_what_labbuild_and_prometheus_need(config: dict) -> None:
    reqs = _requests(config)
    # docs/concepts/policies.mdx: path "<glob>" { capabilities = [...] }
    labbuild = _plain(hcl2.loads(reqs["policy-labbuild"]["data"]["policy"], serialization_options=OPTS))
    caps = {k: v["capabilities"] for p in labbuild["path"] for k, v in p.items()}
    assert caps == {"lab/data/*": ["create", "update", "read"], "lab/metadata/*": ["read", "list"]}
    metrics = _plain(hcl2.loads(reqs["policy-lab-metrics"]["data"]["policy"], serialization_options=OPTS))
    assert {k: v["capabilities"] for p in metrics["path"] for k, v in p.items()} == {"sys/metrics": ["read"]}


def test_health_is_green_only_when_initialised_and_unsealed() -> None:
    # docs/api/system/health.mdx: 200 initialised+unsealed+active, 429 standby, 501 uninitialised, 503 sealed;
    # no query parameter may turn 501/503 into a success, and install accepts only 2xx.
    assert BP.health.path == "/v1/sys/health" and not BP.health.status
    assert BP.metrics.path == "/v1/sys/metrics" and dict(BP.metrics.params) == {"format": "prometheus"}
    assert BP.metrics.bearer_ref is not None


def test_every_secret_of_openbao_is_decided_and_kept_out_of_the_bundle() -> None:
    names = {s.name for s in BP.secrets}
    assert names == {"BAO_SEAL_KEY", "BAO_LABBUILD_ROLE_ID", "BAO_LABBUILD_SECRET_ID", "BAO_METRICS_TOKEN"}
    assert all(s.generate == "hex" and s.rotate is False and s.rotate_reason for s in BP.secrets)


def test_runbook_says_what_changed_and_names_the_seal_trade_off() -> None:
    titles = {r.title: r for r in BP.runbook}
    changed = titles["What changed for operators: OpenBao replaces Vault"]
    assert "8200" in changed.fix and "vault_file" in changed.fix
    trade = titles["Trade-off: the unseal key lives on the host, in DIR/.env"]
    assert "OPENBAO__BAO_SEAL_KEY" in trade.cause and "never in the bundle" in trade.cause


def test_sealed_alert_fires_when_sealed_or_unscrapeable(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    rules = REPO / "builder/templates/observability/lab-alerts.yml"
    shutil.copy(rules, tmp_path / "lab-alerts.yml")
    alert = {"exp_labels": {"severity": "critical", "job": "openbao", "instance": "openbao:8200"},
             "exp_annotations": {"summary": "OpenBao is sealed or unreachable",
                                 "description": "The lab's secrets store answers 503 while sealed. See "
                                                "runbooks/openbao.md, 'OpenBao stays sealed or uninitialised'."}}
    tests = {"rule_files": ["lab-alerts.yml"], "evaluation_interval": "30s", "tests": [
        {"interval": "30s",
         "input_series": [{"series": 'vault_core_unsealed{job="openbao",instance="openbao:8200"}',
                           "values": "1 1 1 0 0 0 0 0 0"},
                          {"series": 'up{job="openbao",instance="openbao:8200"}', "values": "1 1 1 1 1 1 1 1 1"}],
         "alert_rule_test": [{"eval_time": "1m", "alertname": "OpenBaoSealed", "exp_alerts": []},
                             {"eval_time": "4m", "alertname": "OpenBaoSealed", "exp_alerts": [alert]}]},
        {"interval": "30s",
         "input_series": [{"series": 'up{job="openbao",instance="openbao:8200"}', "values": "1 0 0 0 0 0 0"}],
         "alert_rule_test": [{"eval_time": "3m", "alertname": "OpenBaoSealed", "exp_alerts": [alert]}]},
        {"interval": "30s",
         "input_series": [{"series": 'up{job="grafana",instance="grafana:3000"}', "values": "0 0 0 0 0 0 0"},
                          {"series": 'vault_core_unsealed{job="openbao",instance="openbao:8200"}',
                           "values": "1 1 1 1 1 1 1"}],
         "alert_rule_test": [{"eval_time": "3m", "alertname": "OpenBaoSealed", "exp_alerts": []}]},
    ]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
