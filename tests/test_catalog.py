"""The shipped catalog: every service of the roadmap as a blueprint, and the lab's profiles.

These tests read the real ``blueprints/`` of the repository (no Docker, no
network). They protect the roadmap's contract: which services exist, on which
host ports, in which phase profile, pinned how, with which runbooks and which
conditional wiring. When ``../shared/CATALOG.md`` (the list of digests confirmed
from public files) is present, every pin that CATALOG lists must match it; in a
clean clone without it, only that check is skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.blueprint import SECRET_REF_RE, Lab, load_lab, validate_paths
from builder.outdated import group_members
from builder.tracks import choose
from support.dockerenv import require_compose

REPO = Path(__file__).resolve().parents[1]
CATALOG_MD = REPO.parent / "shared" / "CATALOG.md"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

# The roadmap (issue 2): phase -> services a user asks for by name.
ROADMAP = {
    0: {"open-webui", "ollama", "n8n", "node-red"},
    1: {"prometheus", "grafana", "cadvisor", "node-exporter", "qdrant", "langfuse"},
    2: {"litellm", "dify"},
    3: {"jupyter", "code-server", "weaviate", "flowise"},
    4: {"openbao", "traefik", "cloudflared", "authelia", "home"},   # authelia + home: the front door (roadmap 4.2, issue 23)
}

# Parts the roadmap services bring along through depends_on.
PARTS = {
    "langfuse": {"langfuse-worker", "langfuse-db", "langfuse-clickhouse", "langfuse-redis", "langfuse-s3"},
    "litellm": {"litellm-db"},
    "dify": {"dify-api", "dify-worker", "dify-web", "dify-sandbox", "dify-plugin-daemon", "dify-beat",
             "dify-db", "dify-redis", "dify-s3", "dify-ssrf-proxy"},
    "flowise": {"flowise-db"},
}

# Optional services per profile (installed, started only once their supplied secrets exist; never
# failing an install), inherited through extends.
OPTIONAL = {"base": set(), "phase1": set(), "phase2": set(), "phase3": {"flowise"},
            "phase4": {"flowise", "cloudflared"}}

# Every published host port of the catalog. The roadmap fixes 9090, 3003, 6333,
# 3001, 4000, 3000, 8888, 8443, 3002 and 8200; the others are the lab's choice
# (Open WebUI moves to 3080 because Dify's gateway owns 3000).
HOST_PORTS = {
    "open-webui": {3080}, "ollama": {11434}, "n8n": {5678}, "node-red": {1880},
    "prometheus": {9090}, "grafana": {3003}, "cadvisor": {8088}, "node-exporter": {9100},
    "qdrant": {6333}, "langfuse": {3001},
    "litellm": {4000}, "dify": {3000},
    "jupyter": {8888}, "code-server": {8443}, "weaviate": {8081}, "flowise": {3002},
    "openbao": {8200}, "traefik": {80, 443, 8082}, "cloudflared": {20241},   # authelia: none (front door only)
}

# Services without any health signal, each for a stated reason: no published
# port to probe from the host, and no probe command known to exist in the image.
# dify-worker: upstream ships its healthcheck disabled (a broker ping fails whenever it is busy; issue 11).
NO_HEALTH = {"dify-web", "dify-sandbox", "dify-plugin-daemon", "dify-beat", "dify-worker"}


@pytest.fixture(scope="module")
def lab() -> Lab:
    return load_lab(REPO)


def _closure(phase: int) -> set[str]:
    names: set[str] = set()
    for p in range(phase + 1):
        for svc in ROADMAP[p]:
            names |= {svc} | PARTS.get(svc, set())
    return names


def _parse_catalog(text: str) -> dict[tuple[str, str], str]:
    """``{(image, tag): digest}`` for each CATALOG.md table row that pins a digest."""
    pins: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1] or not cells[2]:
            continue
        image, tag = cells[1].split()[0], cells[2].split()[0]
        digest = cells[3].split()[0] if cells[3] else ""
        if DIGEST_RE.match(digest):
            pins[(image, tag)] = digest
    return pins


# --------------------------------------------------------------------------- the lab as a whole

def test_shipped_lab_loads_without_problems(lab: Lab) -> None:
    assert validate_paths(REPO) == []
    assert lab.name == "local-ai-lab"
    assert lab.default_profile == "phase1"
    assert lab.platforms == ("linux/amd64", "linux/arm64")


def test_every_roadmap_service_and_part_has_a_blueprint_in_its_phase(lab: Lab) -> None:
    for phase, services in ROADMAP.items():
        for name in services:
            assert name in lab.services, f"roadmap service {name} has no blueprint"
            assert lab.services[name].phase == phase, name
            for part in PARTS.get(name, ()):
                assert lab.services[part].phase == phase, part
    expected = _closure(4)
    assert set(lab.services) == expected, set(lab.services) ^ expected


@pytest.mark.parametrize("profile,phase", [("base", 0), ("phase1", 1), ("phase2", 2),
                                           ("phase3", 3), ("phase4", 4)])
def test_profile_closure_is_the_roadmap_up_to_its_phase(lab: Lab, profile: str, phase: int) -> None:
    assert set(lab.profile_closure(profile)) == _closure(phase)
    assert set(lab.optional_services(profile)) == OPTIONAL[profile]
    assert lab.profiles[profile].description, f"profile {profile} needs a description"


def test_each_phase_profile_extends_the_previous_one(lab: Lab) -> None:
    order = ["base", "phase1", "phase2", "phase3", "phase4"]
    assert lab.profiles["base"].extends == ()
    for prev, cur in zip(order, order[1:]):
        assert lab.profiles[cur].extends == (prev,)
        assert set(lab.profile_closure(prev)) < set(lab.profile_closure(cur))


# --------------------------------------------------------------------------- ports

def test_host_ports_are_the_port_map(lab: Lab) -> None:
    published = {name: {p.host for p in bp.ports if p.host is not None}
                 for name, bp in lab.services.items()}
    assert {n: ports for n, ports in published.items() if ports} == HOST_PORTS


def test_every_published_port_binds_loopback_only(lab: Lab) -> None:
    for name, bp in lab.services.items():
        for p in bp.ports:
            if p.host is not None:
                assert p.bind == "127.0.0.1", f"{name}.{p.name} binds {p.bind}"
                assert p.expose_reason is None


def test_no_two_services_share_a_host_port(lab: Lab) -> None:
    owners: dict[int, str] = {}
    for name, bp in sorted(lab.services.items()):
        for p in bp.ports:
            if p.host is not None:
                assert p.host not in owners, f"{p.host} used by {owners.get(p.host)} and {name}"
                owners[p.host] = name


# --------------------------------------------------------------------------- each blueprint

def test_every_blueprint_is_documented_and_pinned(lab: Lab) -> None:
    for name, bp in lab.services.items():
        assert bp.docs and bp.docs.startswith("https://"), f"{name}: docs link"
        assert len(bp.runbook) >= 3, f"{name}: {len(bp.runbook)} runbook entries"
        for entry in bp.runbook:
            assert entry.title and entry.symptom and entry.fix, name
        host = bp.image.name.split("/", 1)[0]
        assert "." in host, f"{name}: image {bp.image.name} is not fully qualified"
        assert DIGEST_RE.match(bp.image.digest), f"{name}: {bp.image.digest}"
        assert bp.image.tag != "latest"


def test_every_blueprint_file_names_its_schema_and_the_source_of_its_digest() -> None:
    for path in sorted((REPO / "blueprints" / "services").glob("*.toml")):
        lines = path.read_text("utf-8").splitlines()
        assert lines[0] == "#:schema ../../builder/schemas/blueprint.schema.json", path.name
        i = lines.index("[image]")
        comments = []
        while i > 0 and lines[i - 1].startswith("#"):
            i -= 1
            comments.insert(0, lines[i])
        assert comments and comments[0].startswith("# digest: "), \
            f"{path.name}: a '# digest: <where it was found>' comment must precede [image]"


def test_health_signal_everywhere_except_the_documented_exceptions(lab: Lab) -> None:
    without = {n for n, bp in lab.services.items() if bp.health is None and bp.healthcheck is None}
    assert without == NO_HEALTH
    for name, bp in lab.services.items():
        if bp.health is not None:
            assert bp.port(bp.health.port).host is not None, name


def test_data_lives_in_named_volumes(lab: Lab) -> None:
    stateful = {"ollama", "open-webui", "n8n", "node-red", "prometheus", "grafana", "qdrant",
                "langfuse-db", "langfuse-clickhouse", "langfuse-redis", "langfuse-s3",
                "litellm-db", "dify-db", "dify-redis", "dify-s3", "dify-plugin-daemon",
                "jupyter", "code-server", "weaviate", "flowise", "flowise-db", "openbao"}
    for name in stateful:
        assert lab.services[name].volumes, f"{name} keeps data but has no volume"


def test_secrets_never_sit_in_plain_env(lab: Lab) -> None:
    secretish = re.compile(r"(_KEY|_TOKEN|_PASSWORD|_SECRET)$")
    for name, bp in lab.services.items():
        for key, value in bp.env.items():
            if secretish.search(key) and value not in ("true", "false"):
                assert SECRET_REF_RE.fullmatch(value), f"{name}.env.{key}"
        for w in bp.when:
            for key, value in w.env.items():
                if secretish.search(key) and value not in ("true", "false"):    # a switch is no secret
                    assert SECRET_REF_RE.fullmatch(value), f"{name}.when.{w.other}.env.{key}"


# --------------------------------------------------------------------------- pins

def test_one_image_reference_has_one_digest_and_no_digest_changes_registry(lab: Lab) -> None:
    by_ref: dict[tuple[str, str], set[str]] = {}
    by_digest: dict[str, set[str]] = {}
    for bp in lab.services.values():
        by_ref.setdefault((bp.image.name, bp.image.tag), set()).add(bp.image.digest)
        by_digest.setdefault(bp.image.digest, set()).add(bp.image.name)
    assert {r: d for r, d in by_ref.items() if len(d) > 1} == {}
    assert {d: n for d, n in by_digest.items() if len(n) > 1} == {}


def test_catalog_parser_reads_pins_and_skips_leads() -> None:
    text = "\n".join([
        "| service | image | tag | digest | found in |",
        "|---|---|---|---|---|",
        "| grafana | docker.io/grafana/grafana | 13.2.0 | sha256:" + "a" * 64 + " | x |",
        "| langfuse | docker.io/langfuse/langfuse (+ worker) | 3.1 | sha256:" + "b" * 64 + " ⚠ | y |",
        "| dify-api | docker.io/langgenius/dify-api | 1.16.1 (tag) | no pair found; leads: sha256:"
        + "c" * 64 + " | z |",
    ])
    assert _parse_catalog(text) == {
        ("docker.io/grafana/grafana", "13.2.0"): "sha256:" + "a" * 64,
        ("docker.io/langfuse/langfuse", "3.1"): "sha256:" + "b" * 64,
    }


def test_pins_match_the_confirmed_catalog(lab: Lab) -> None:
    if not CATALOG_MD.is_file():
        pytest.skip(f"{CATALOG_MD} is absent (clean clone): nothing to compare the pins with")
    pins = _parse_catalog(CATALOG_MD.read_text("utf-8"))
    assert len(pins) >= 15, "CATALOG.md no longer parses: fix _parse_catalog"
    names_of = {}
    for (image, _tag), digest in pins.items():
        names_of.setdefault(digest, set()).add(image)
    checked = 0
    for name, bp in lab.services.items():
        ref = (bp.image.name, bp.image.tag)
        if ref in pins:
            assert bp.image.digest == pins[ref], f"{name}: {ref} is pinned to {pins[ref]} in CATALOG.md"
            checked += 1
        if bp.image.digest in names_of:
            assert names_of[bp.image.digest] == {bp.image.name}, \
                f"{name}: digest belongs to {names_of[bp.image.digest]} in CATALOG.md"
    assert checked >= 20


# --------------------------------------------------------------------------- conditional wiring

def test_conditional_wiring_targets_exist_and_are_not_static_dependencies(lab: Lab) -> None:
    for name, bp in lab.services.items():
        for w in bp.when:
            assert w.other in lab.services, f"{name}: when.{w.other}"
            assert w.other not in bp.depends_on, f"{name}: when.{w.other} is also a static dependency"
            assert w.env or w.depends_on or w.files or w.provision, f"{name}: when.{w.other} does nothing"


def _env(lab: Lab, service: str, profile: str) -> dict[str, str]:
    return lab.services[service].effective_env(lab.profile_closure(profile))


def test_open_webui_uses_qdrant_and_litellm_only_when_present(lab: Lab) -> None:
    base = _env(lab, "open-webui", "base")
    assert "VECTOR_DB" not in base and "OPENAI_API_BASE_URL" not in base
    assert base["OLLAMA_BASE_URL"] == "http://ollama:11434"
    p1 = _env(lab, "open-webui", "phase1")
    assert p1["VECTOR_DB"] == "qdrant"
    assert p1["QDRANT_API_KEY"] == "${secret:qdrant.QDRANT__SERVICE__API_KEY}"
    assert "OPENAI_API_BASE_URL" not in p1
    p2 = _env(lab, "open-webui", "phase2")
    assert p2["OPENAI_API_BASE_URL"] == "http://litellm:4000/v1"
    assert p2["OPENAI_API_KEY"] == "${secret:litellm.OPEN_WEBUI_KEY}"      # its own key (tests/test_app_keys.py)
    bp = lab.services["open-webui"]
    assert "litellm" not in bp.effective_depends_on(lab.profile_closure("phase1"))
    assert "litellm" in bp.effective_depends_on(lab.profile_closure("phase2"))


def test_n8n_and_dify_are_wired_through_litellm_and_qdrant(lab: Lab) -> None:
    assert "CREDENTIALS_OVERWRITE_DATA" not in _env(lab, "n8n", "phase1")
    overwrite = _env(lab, "n8n", "phase2")["CREDENTIALS_OVERWRITE_DATA"]
    assert "http://litellm:4000/v1" in overwrite and "${secret:litellm.N8N_KEY}" in overwrite
    for part in ("dify-api", "dify-worker"):
        env = _env(lab, part, "phase2")
        assert env["VECTOR_STORE"] == "qdrant"
        assert env["QDRANT_API_KEY"] == "${secret:qdrant.QDRANT__SERVICE__API_KEY}"
    assert "litellm" in lab.services["dify-api"].effective_depends_on(lab.profile_closure("phase2"))


def test_litellm_reports_to_langfuse_with_the_initialised_project_keys(lab: Lab) -> None:
    env = _env(lab, "litellm", "phase2")
    assert env["LANGFUSE_PUBLIC_KEY"] == "${secret:langfuse.LANGFUSE_INIT_PROJECT_PUBLIC_KEY}"
    assert env["LANGFUSE_HOST"] == "http://langfuse:3000"
    lab_without = {n for n in lab.profile_closure("phase2") if not n.startswith("langfuse")}
    assert "LANGFUSE_PUBLIC_KEY" not in lab.services["litellm"].effective_env(lab_without)


def test_shared_secrets_have_one_owner_and_are_referenced(lab: Lab) -> None:
    """Database passwords and shared keys are declared once and embedded by reference."""
    langfuse = lab.services["langfuse"].env
    assert langfuse["DATABASE_URL"] == \
        "postgresql://postgres:${secret:langfuse-db.POSTGRES_PASSWORD}@langfuse-db:5432/postgres"
    assert langfuse["SALT"] == "${secret:langfuse-worker.SALT}"
    assert lab.services["dify-worker"].env["SECRET_KEY"] == "${secret:dify-api.SECRET_KEY}"
    declared: dict[tuple[str, str], str] = {}
    for name, bp in lab.services.items():
        for s in bp.secrets:
            declared[(name, s.name)] = s.generate
        for value in [*bp.env.values(), *(v for w in bp.when for v in w.env.values())]:
            for m in SECRET_REF_RE.finditer(value):
                assert (m.group(1), m.group(2)) in {(n, s.name) for n, b in lab.services.items()
                                                    for s in b.secrets}, value
    # LiteLLM's master key is generated once, by litellm, and only referenced elsewhere.
    owners = [n for (n, s) in declared if s == "LITELLM_MASTER_KEY"]
    assert owners == ["litellm"]


# --------------------------------------------------------------------------- CI of the lab repository

# Secrets whose data is encrypted or hashed with them (issue 24): never rotated, and the blueprint says why.
NEVER_ROTATED = {("n8n", "N8N_ENCRYPTION_KEY"), ("langfuse-worker", "ENCRYPTION_KEY"), ("langfuse-worker", "SALT"),
                 ("litellm", "LITELLM_SALT_KEY"), ("flowise", "FLOWISE_SECRETKEY_OVERWRITE"), ("dify-api", "SECRET_KEY")}


def test_every_shipped_secret_has_a_rotation_decision(lab: Lab) -> None:
    undecided = [f"{name}.{s.name}" for name, bp in sorted(lab.services.items()) for s in bp.secrets
                 if s.rotate is None]
    assert undecided == [], "decide [secrets.NAME] rotate = true | false (+ rotate_reason) for: " + ", ".join(undecided)
    for name, bp in lab.services.items():
        for s in bp.secrets:
            assert s.rotate or len(s.rotate_reason) >= 10, f"{name}.{s.name}"
    never = {(name, s.name) for name, bp in lab.services.items() for s in bp.secrets if s.rotate is False}
    assert NEVER_ROTATED <= never, NEVER_ROTATED - never


def test_postgres_passwords_rotate_in_the_server_first_with_the_value_never_in_argv(lab: Lab) -> None:
    databases = sorted(n for n, bp in lab.services.items() if bp.image.name == "docker.io/library/postgres")
    assert databases == ["dify-db", "flowise-db", "langfuse-db", "litellm-db"]
    for name in databases:
        [pw] = [s for s in lab.services[name].secrets if s.name == "POSTGRES_PASSWORD"]
        assert pw.rotate and pw.rotate_days == 90, name
        sh, flag, script = pw.holder
        assert (sh, flag) == ("sh", "-c"), name
        # psql reads the value from its own environment (\getenv) inside a quoted here-document: the shell
        # never expands it into an argument, and the server is told not to log the statement
        assert "\\getenv lab_secret_new LAB_SECRET_NEW" in script and "<<'SQL'" in script, name
        assert "ALTER ROLE CURRENT_USER PASSWORD :'lab_secret_new'" in script and "ON_ERROR_STOP=1" in script, name
        assert "$LAB_SECRET_NEW" not in script and "log_min_error_statement" in script, name


def test_ci_workflow_runs_the_suite_validate_and_lock_check() -> None:
    import yaml

    wf = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text("utf-8"))
    runs = [step.get("run", "") for job in wf["jobs"].values() for step in job["steps"]]
    assert all(job["runs-on"] == "ubuntu-latest" for job in wf["jobs"].values())
    assert "bash .ci/run" in runs
    assert ".venv/bin/labbuild validate" in runs
    assert ".venv/bin/labbuild lock --check" in runs
    assert "LABBUILD_REQUIRE_DOCKER=1" in (REPO / ".ci" / "run").read_text("utf-8")


# --------------------------------------------------------------------------- the catalog as compose

@pytest.mark.parametrize("profile", ["base", "phase1", "phase2", "phase3", "phase4"])
def test_every_profile_renders_to_a_compose_file_compose_accepts(lab: Lab, profile: str,
                                                                 tmp_path: Path) -> None:
    """`docker compose config` (no engine needed) accepts each profile's rendered compose.yaml."""
    import subprocess

    import yaml

    from builder.lockfile import Lock
    from builder.render import (ReleaseInput, render_compose, render_config_files,
                                render_lab_env, secret_keys)

    compose = require_compose()
    lock = Lock(lab=lab.name, inputs="catalog-test", platforms=lab.platforms, services={})
    ri = ReleaseInput(lab=lab, lock=lock, profile=profile, version="0.0.0", labbuild_version="test")
    (tmp_path / "compose.yaml").write_text(render_compose(ri))
    (tmp_path / "lab.env").write_text(render_lab_env(ri))
    for rel, text in render_config_files(ri).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    secrets = [k for name in ri.services for k in secret_keys(ri, name)]   # generated ones; no supplied one
    (tmp_path / "secrets.env").write_text("".join(f"{k}=s3cret-{i}\n" for i, k in enumerate(secrets)))
    argv = [*compose, "-p", "catalog", "-f", "compose.yaml", "--env-file", "lab.env", "--env-file", "secrets.env"]
    proc = subprocess.run([*argv, "config", "--services"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # without the operator's tunnel token compose still accepts the file; optional services stay off
    assert set(proc.stdout.split()) == set(lab.profile_closure(profile)) - OPTIONAL[profile]
    proc = subprocess.run([*argv, "--profile", "*", "config", "--format", "json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert set(services) == set(lab.profile_closure(profile))
    for name in OPTIONAL[profile]:
        assert services[name]["profiles"] == [name]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)
    if "langfuse" in services:
        env = services["langfuse"]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://postgres:s3cret-")
        assert env["DATABASE_URL"].endswith("@langfuse-db:5432/postgres")


# --------------------------------------------------------------------------- issue 11: each catalog fix, pinned

def _text(service: str) -> str:
    return (REPO / "blueprints" / "services" / f"{service}.toml").read_text("utf-8")


def _ri(lab: Lab, profile: str):
    from builder.lockfile import Lock
    from builder.render import ReleaseInput

    lock = Lock(lab=lab.name, inputs="catalog-test", platforms=lab.platforms, services={})
    return ReleaseInput(lab=lab, lock=lock, profile=profile, version="0.0.0", labbuild_version="test")


def test_cloudflared_takes_the_operator_token_is_optional_and_probes_itself(lab: Lab) -> None:
    bp = lab.services["cloudflared"]
    (token,) = bp.secrets
    assert token.name == "TUNNEL_TOKEN" and token.supplied and token.generate is None
    assert "Zero Trust" in token.description and "Tunnels" in token.description
    assert "cloudflared" in lab.optional_services("phase4")
    assert "cloudflared" not in lab.profiles["phase4"].services
    metrics = bp.port("metrics").container
    assert bp.command == ("tunnel", "--no-autoupdate", "--metrics", f"0.0.0.0:{metrics}", "run")
    assert bp.env["TUNNEL_METRICS"] == f"0.0.0.0:{metrics}"          # what `tunnel ready` asks
    assert bp.healthcheck.test == ("CMD", "cloudflared", "tunnel", "ready")
    assert (bp.health.path, bp.metrics.path) == ("/ready", "/metrics")


def test_flowise_runs_on_its_own_postgres_and_is_optional_from_phase3(lab: Lab) -> None:
    bp = lab.services["flowise"]
    assert bp.depends_on == ("flowise-db",)
    env = bp.env
    assert env["DATABASE_TYPE"] == "postgres"      # never the connect-sqlite3 session store (issue #6688)
    assert (env["DATABASE_HOST"], env["DATABASE_PORT"], env["DATABASE_USER"]) == ("flowise-db", "5432", "postgres")
    assert env["DATABASE_PASSWORD"] == "${secret:flowise-db.POSTGRES_PASSWORD}"
    db = lab.services["flowise-db"]
    assert db.env["POSTGRES_DB"] == env["DATABASE_NAME"] == "flowise"
    assert db.healthcheck is not None               # flowise waits for service_healthy
    for profile in ("phase3", "phase4"):
        assert "flowise" in lab.optional_services(profile)
    assert "#6688" in _text("flowise") and "SessionPersistance.ts" in _text("flowise")


def test_dify_worker_has_no_healthcheck_and_the_gateway_only_waits_for_it_to_start(lab: Lab) -> None:
    from builder.render import compose_service

    assert lab.services["dify-worker"].healthcheck is None
    assert "COMPOSE_WORKER_HEALTHCHECK_DISABLED" in _text("dify-worker")
    gateway = compose_service(_ri(lab, "phase2"), "dify")
    assert gateway["depends_on"]["dify-worker"] == {"condition": "service_started"}
    assert gateway["depends_on"]["dify-api"] == {"condition": "service_healthy"}


def test_dify_reaches_its_files_inside_the_lab_network(lab: Lab) -> None:
    api_port = lab.services["dify-api"].port("http").container
    for part in ("dify-api", "dify-worker"):
        assert lab.services[part].env["INTERNAL_FILES_URL"] == f"http://dify-api:{api_port}"


def test_dify_plugin_daemon_pairing_is_upstreams_or_flagged_for_lock_update(lab: Lab) -> None:
    daemon, api = lab.services["dify-plugin-daemon"], lab.services["dify-api"]
    paired = {"1.15.0": "0.6.3-local", "1.16.0": "0.6.3-local", "1.16.1": "0.6.3-local"}
    assert api.image.tag in paired
    if daemon.image.tag != paired[api.image.tag]:
        # no public tag+digest pair for the paired daemon yet: the blueprint must say how to move it
        text = _text("dify-plugin-daemon")
        assert f'tag = "{paired[api.image.tag]}"' in text and "lock --update dify-plugin-daemon" in text
        assert any(paired[api.image.tag] in r.fix for r in daemon.runbook)


def test_litellm_master_key_is_sk_shaped_and_scrapes_with_it_without_inlining_it(lab: Lab) -> None:
    from builder.render.observability import render_prometheus

    key = next(s for s in lab.services["litellm"].secrets if s.name == "LITELLM_MASTER_KEY")
    assert key.prefix == "sk-" and key.generate and not key.supplied
    metrics = lab.services["litellm"].metrics
    assert metrics.bearer_ref == ("litellm", "LITELLM_MASTER_KEY")
    import yaml
    prom = yaml.safe_load(render_prometheus(_ri(lab, "phase2")))
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "litellm")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/secrets/litellm"}
    assert "credentials" not in job["authorization"] and "bearer_token" not in job


def test_litellm_shares_prometheus_counts_across_its_workers(lab: Lab) -> None:
    bp = lab.services["litellm"]
    workers = int(bp.command[bp.command.index("--num_workers") + 1])
    assert workers > 1 and bp.env["PROMETHEUS_MULTIPROC_DIR"].startswith("/")


def test_litellm_sends_traces_to_langfuse_only_when_langfuse_is_present(lab: Lab) -> None:
    import yaml

    bp = lab.services["litellm"]
    with_lf = yaml.safe_load(bp.effective_files(lab.profile_closure("phase2"))[0].content)
    assert with_lf["litellm_settings"]["success_callback"] == ["langfuse"]
    assert "prometheus" in with_lf["litellm_settings"]["callbacks"]
    without = [n for n in lab.profile_closure("phase2") if not n.startswith("langfuse")]
    plain = yaml.safe_load(bp.effective_files(without)[0].content)
    assert "success_callback" not in plain["litellm_settings"]
    assert {k: v for k, v in with_lf.items() if k != "litellm_settings"} == \
        {k: v for k, v in plain.items() if k != "litellm_settings"}


def test_langfuse_init_keys_have_langfuse_shapes(lab: Lab) -> None:
    secrets = {s.name: s for s in lab.services["langfuse"].secrets}
    assert secrets["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"].prefix == "pk-lf-"
    assert secrets["LANGFUSE_INIT_PROJECT_SECRET_KEY"].prefix == "sk-lf-"


def test_s3_stores_are_a_maintained_server_not_the_archived_minio(lab: Lab) -> None:
    """MinIO (CVE-2025-62506, no images published any more) is gone: Dify and Langfuse store their
    objects in RustFS, reached with its root keys, in the region it signs in, console and update check off."""
    assert not any("minio" in bp.image.name for bp in lab.services.values())
    stores = {"dify-s3": ("dify-api", "dify-worker", "dify-beat"), "langfuse-s3": ("langfuse", "langfuse-worker")}
    for store, consumers in stores.items():
        bp = lab.services[store]
        assert bp.image.name == "docker.io/rustfs/rustfs" and "(RustFS)" in bp.description
        assert bp.env["RUSTFS_CONSOLE_ENABLE"] == "false" and bp.env["RUSTFS_CHECK_UPDATE"] == "false"
        assert [p.container for p in bp.ports] == [9000] and all(p.host is None for p in bp.ports)
        keys = {s.name: s for s in bp.secrets}
        assert set(keys) == {"RUSTFS_ACCESS_KEY", "RUSTFS_SECRET_KEY"}
        assert all(s.rotate is False and s.rotate_reason for s in keys.values())
        assert any("CVE-2025-62506" in r.cause and "minio" in r.title for r in bp.runbook)
        for consumer in consumers:
            env = lab.services[consumer].env
            assert store in lab.services[consumer].depends_on
            endpoint = env.get("S3_ENDPOINT") or env["LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"]
            assert endpoint == f"http://{store}:9000"
            assert (env.get("S3_REGION") or env["LANGFUSE_S3_EVENT_UPLOAD_REGION"]) == "us-east-1"
            refs = {v for v in env.values() if v.startswith(f"${{secret:{store}.")}
            assert refs == {f"${{secret:{store}.RUSTFS_ACCESS_KEY}}", f"${{secret:{store}.RUSTFS_SECRET_KEY}}"}
    # Langfuse does not create its bucket (upstream runs `mkdir -p /data/langfuse` before the server); Dify does.
    assert lab.services["langfuse-s3"].command[-1].startswith("mkdir -p /data/langfuse && exec /entrypoint.sh")
    assert lab.services["dify-s3"].command == () or not lab.services["dify-s3"].command


def test_dify_egress_goes_through_its_ssrf_proxy_as_upstream_wires_it(lab: Lab) -> None:
    """The sandbox's HTTP(S)_PROXY and dify-api/worker's SSRF_PROXY_HTTP(S)_URL name the squid service
    (upstream docker-compose.yaml), and its config denies private destinations before any allow rule
    (tests/test_ssrf_proxy.py runs it)."""
    proxy = lab.services["dify-ssrf-proxy"]
    url = f"http://dify-ssrf-proxy:{proxy.port('proxy').container}"
    assert proxy.port("proxy").host is None and proxy.healthcheck is not None
    sandbox = lab.services["dify-sandbox"]
    assert sandbox.env["HTTP_PROXY"] == sandbox.env["HTTPS_PROXY"] == url
    assert "dify-ssrf-proxy" in sandbox.depends_on
    for part in ("dify-api", "dify-worker"):
        env = lab.services[part].env
        assert env["SSRF_PROXY_HTTP_URL"] == env["SSRF_PROXY_HTTPS_URL"] == url
    conf = next(f.content for f in proxy.files if f.target == "/etc/squid/squid.conf").splitlines()
    assert conf.index("http_access deny to_private_networks") < conf.index("http_access allow client_localnet")
    assert conf.index("include /etc/squid/dify_allow_private.conf") < conf.index("http_access deny to_private_networks")
    assert conf[-1] == "http_access deny all" and "http_port 3128" in conf
    assert {f.target for f in proxy.files} == {"/etc/squid/squid.conf", "/etc/squid/dify_common.conf",
                                               "/etc/squid/dify_allow_private.conf"}


def test_dify_runbook_gives_the_offline_model_provider_procedure(lab: Lab) -> None:
    """Bundling .difypkg files is not done: the runbook carries the offline procedure instead, with the
    settings the plugin daemon reads (Dify docs, third-party signature verification) and the marketplace's
    download API, and the gateway's runbook points at it."""
    from builder.render import render_runbooks

    entry = next(r for r in lab.services["dify-plugin-daemon"].runbook if r.title.startswith("Model providers offline"))
    for needle in ("https://marketplace.dify.ai/api/v1/plugins/langgenius/openai_api_compatible/0.0.56/download",
                   "langgenius/ollama", "plugin_repackaging.sh", "--no-index --find-links=./wheels/",
                   "dify signature sign", "THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED = \"true\"",
                   "THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS", "/app/storage/public_keys/",
                   "Local Package File", "http://litellm:4000/v1", "http://ollama:11434"):
        assert needle in entry.fix, needle
    storage = next(v.target for v in lab.services["dify-plugin-daemon"].volumes)
    assert "/app/storage/public_keys/".startswith(storage)   # the key survives restarts in the daemon's volume
    assert lab.services["dify-plugin-daemon"].env["FORCE_VERIFYING_SIGNATURE"] == "true"
    page = render_runbooks(_ri(lab, "phase2"))["runbooks/dify-plugin-daemon.md"]
    assert "1\\. Download the packages" in page and "7\\. Settings" in page   # one line per step
    assert any("dify-plugin-daemon runbook" in r.fix for r in lab.services["dify"].runbook)


def test_stale_pins_are_listed_for_lock_update() -> None:
    for service, word in (("langfuse", "v4"), ("dify-api", "1.17.1")):
        text = _text(service)
        assert "STALE (issue 11" in text and word in text


def test_clickhouse_is_an_lts_line_langfuse_v3_and_v4_both_accept(lab: Lab) -> None:
    """Langfuse v3 needs ClickHouse >= 24.3, v4 >= 25.12 (langfuse.com .../infrastructure/clickhouse); the pin is an
    LTS line (YY.3 or YY.8) at least that new, and its upgrade is one-way (no downgrade once 26.x wrote data)."""
    import re

    bp = lab.services["langfuse-clickhouse"]
    assert re.fullmatch(bp.image.track, bp.image.tag)
    assert tuple(int(x) for x in bp.image.tag.split(".")) >= (25, 12)
    assert bp.migrations == "one-way"
    assert "langfuse-clickhouse" in lab.services["langfuse"].data_in


def test_phase4_prometheus_config_passes_promtool_and_holds_no_credential(lab: Lab, tmp_path: Path) -> None:
    import shutil

    from builder.render.observability import render_prometheus

    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed (Debian package prometheus)")
    from test_render import promtool_check_config

    text = render_prometheus(_ri(lab, "phase4"))
    assert "credentials:" not in text and "bearer_token:" not in text
    assert "credentials_file: /etc/prometheus/secrets/litellm" in text
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / "rules").mkdir()
    proc = promtool_check_config(promtool, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "promtool-secrets" / "litellm").is_file()   # the full check ran


def test_optional_services_of_the_catalog_are_scrape_targets_only_once_started(lab: Lab, tmp_path: Path) -> None:
    """cloudflared waits for its token in phase4: no static target (which would fire TargetDown on
    a healthy default install), but a file_sd file install fills once it runs; promtool accepts it."""
    import shutil

    import yaml

    from builder.render.observability import optional_targets, render_prometheus
    from test_render import promtool_check_config

    ri = _ri(lab, "phase4")
    assert "cloudflared" in ri.optional
    jobs = {j["job_name"]: j for j in yaml.safe_load(render_prometheus(ri))["scrape_configs"]}
    assert "static_configs" not in jobs["cloudflared"]
    assert jobs["cloudflared"]["file_sd_configs"] == [{"files": ["/prometheus/optional-targets/cloudflared.json"],
                                                        "refresh_interval": "30s"}]
    assert all("static_configs" in j for name, j in jobs.items() if name not in ri.optional)
    spec = json.loads(optional_targets(ri))
    assert spec["dir"] == "/prometheus/optional-targets" and set(spec["groups"]) == {
        s for s in ri.optional if s in jobs}
    assert optional_targets(_ri(lab, "phase1")) is None                 # nothing optional: no file, same bytes
    (tmp_path / "prometheus.yml").write_text(render_prometheus(ri))
    (tmp_path / "rules").mkdir()
    proc = promtool_check_config(shutil.which("promtool"), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dify_gateway_routes_socket_io_as_upstream_does_and_prometheus_has_no_lifecycle_api(lab: Lab) -> None:
    """Issue 22's catalog fixes: Dify's /socket.io/ route with the websocket upgrade (upstream's
    default.conf.template), Prometheus without --web.enable-lifecycle (any lab container could
    POST /-/quit), Flowise not scraped anonymously (its /api/v1/metrics answers 401)."""
    conf = next(f.content for f in lab.services["dify"].files if f.target.endswith("default.conf"))
    block = conf[conf.index("location /socket.io/"):]
    block = block[:block.index("}")]
    assert "proxy_pass http://dify-api:5001;" in block and 'Connection "upgrade"' in block \
        and "Upgrade $http_upgrade" in block
    assert not any("enable-lifecycle" in arg for arg in lab.services["prometheus"].command)
    assert lab.services["flowise"].metrics is None


def test_tracks_and_groups_where_the_tag_scheme_needs_them(lab: Lab) -> None:
    """Dify's images and its plugin daemon move as one group (a mismatched daemon answers 400s),
    Langfuse web and worker too; ClickHouse follows its LTS lines, RustFS its stable releases, and
    every Postgres stays on its major (a major upgrade needs a dump and restore)."""
    assert group_members(lab) == {
        "dify": ("dify-api", "dify-beat", "dify-plugin-daemon", "dify-web", "dify-worker"),
        "langfuse": ("langfuse", "langfuse-worker"),
    }
    track = {name: bp.image.track for name, bp in lab.services.items()}
    assert choose("26.3", ["26.4", "26.8", "26.10", "26.8.1.5", "27.1"], track["langfuse-clickhouse"]).newest == "26.8"
    assert choose("0.6.0-local", ["0.6.3-serverless", "0.6.3-local"], track["dify-plugin-daemon"]).newest == "0.6.3-local"
    for store in ("dify-s3", "langfuse-s3"):
        tags = ["1.0.1-preview.3", "1.1.0-rc.1", "1.0.1", "1.0.0-beta.9", "latest"]
        assert choose(lab.services[store].image.tag, tags, track[store]).newest == "1.0.1"
    postgres = sorted(n for n, bp in lab.services.items() if bp.image.name == "docker.io/library/postgres")
    assert postgres == ["dify-db", "flowise-db", "langfuse-db", "litellm-db"]
    for name in postgres:
        major = lab.services[name].image.tag.split(".")[0]
        assert choose(lab.services[name].image.tag, ["18.1", f"{major}.99"], track[name], major=True).newest == \
            f"{major}.99"
