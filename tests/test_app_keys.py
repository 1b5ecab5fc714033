"""Apps are principals too (issue 23): every app wired to LiteLLM holds a LiteLLM key of its own,
generated on the target and registered by litellm's [[when.APP.provision]] calls once LiteLLM is
healthy; the master key stays with the operator (litellm itself) and Prometheus' scrape.

Here, without an engine: the format ([[when.X.provision]], ``bearer``, GET checks) from blueprint to
manifest, and the shipped catalog rendered for every profile (compose.yaml, manifest.json, runbooks,
install.sh's printed calls). The calls against a stand-in of LiteLLM's key API and against the real
LiteLLM (no database here): tests/e2e/test_app_keys_e2e.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_blueprint import blueprint, make_lab, problems_of
from test_install_sh import SCRIPT, awk_program

from builder.blueprint import load_lab
from builder.bundle.pack import manifest_provision, manifest_services
from builder.format.grammar import provision_grammar_problems
from builder.format.manifest import Manifest, ManifestProvision
from builder.lockfile import LOCK_PATH, read_lock
from builder.render import ReleaseInput, render_runbooks, render_text_files

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("base", "phase1", "phase2", "phase3", "phase4")
MASTER = "LITELLM__LITELLM_MASTER_KEY"
# app (service) -> (its key in DIR/.env, its alias in LiteLLM, whether its env holds it)
APPS = {"open-webui": ("LITELLM__OPEN_WEBUI_KEY", "open-webui", True),
        "n8n": ("LITELLM__N8N_KEY", "n8n", True),
        "jupyter": ("LITELLM__JUPYTER_KEY", "jupyter", True),
        "dify-api": ("LITELLM__DIFY_KEY", "dify", False),          # pasted into Dify's UI (runbook)
        "flowise": ("LITELLM__FLOWISE_KEY", "flowise", False)}     # pasted into Flowise's UI (runbook)


@pytest.fixture(scope="module")
def lab():
    return load_lab(REPO)


@pytest.fixture(scope="module")
def releases(lab):
    out = {}
    for profile in PROFILES:
        ri = ReleaseInput(lab=lab, lock=read_lock(REPO / LOCK_PATH), profile=profile, version="0.0.0",
                          labbuild_version="test")
        out[profile] = (ri, render_text_files(ri), manifest_services(ri))
    return out


# --------------------------------------------------------------------------- the shipped catalog

@pytest.mark.parametrize("profile", PROFILES)
def test_each_app_holds_its_own_key_and_only_litellm_and_prometheus_the_master_key(releases, profile):
    ri, files, services = releases[profile]
    compose = yaml.safe_load(files["compose.yaml"])
    secrets = set(services["litellm"].secrets) if "litellm" in services else set()
    holders: dict[str, set[str]] = {}
    for name, svc in compose["services"].items():
        for key in re.findall(r"\$\{(LITELLM__[A-Z0-9_]+)", json.dumps(svc.get("environment", {}))):
            holders.setdefault(key, set()).add(name)
    holders = {k: v for k, v in holders.items() if k in secrets}      # (not LiteLLM's settings)
    if "litellm" not in ri.services:
        assert holders == {}
        return
    assert holders.pop(MASTER) == {"litellm"}                  # no app's environment holds it
    scrape = compose.get("secrets", {})
    if "prometheus" in ri.services:                            # the scrape's credential file, from DIR/.env
        assert {v["environment"] for v in scrape.values()} >= {MASTER}
        source = next(k for k, v in scrape.items() if v["environment"] == MASTER)
        assert source in {s["source"] for s in compose["services"]["prometheus"]["secrets"]}
    wired = set()
    for app, (key, _, in_env) in APPS.items():
        expected = {"litellm"} | ({app} if in_env and app in ri.services else set())
        assert holders.pop(key) == expected, (app, key)        # litellm has it as its own (the holder's env)
        wired |= expected - {"litellm"}
    assert set(holders) == {"LITELLM__LITELLM_SALT_KEY", "LITELLM__UI_PASSWORD"}
    assert all(h == {"litellm"} for h in holders.values())
    # every service whose environment points at LiteLLM is one of the apps with a key of its own
    pointing = {name for name in ri.services if name != "litellm"
                and "litellm:4000" in json.dumps(ri.lab.services[name].effective_env(ri.services))}
    assert pointing == wired


@pytest.mark.parametrize("profile", ["phase2", "phase3", "phase4"])
def test_litellm_registers_the_key_of_each_app_in_the_profile_then_checks_it_with_that_key(releases, profile):
    ri, _, services = releases[profile]
    steps = services["litellm"].provision
    present = {app for app in APPS if app in ri.services}
    assert {"open-webui", "n8n", "dify-api"} <= present and ("jupyter" in present) == (profile != "phase2")
    assert len(steps) == 2 * len(present)
    by_key = {}
    for register, check in zip(steps[::2], steps[1::2]):
        body = json.loads(register.body)
        assert (register.method, register.path, register.bearer) == ("POST", "/key/generate", MASTER)
        assert register.status == (200,) and register.already_status == (400,)
        assert register.already_text == f"Key with alias '{body['key_alias']}' already exists"
        assert body["key_type"] == "llm_api" and body["metadata"] == {"lab_app": body["key_alias"]}
        key = body["key"][2:-1]                                 # "${KEY}": filled in at install
        assert set(register.keys) == {MASTER, key}
        # done before only if the app's own key is then accepted: the check uses that key, not the master
        assert (check.method, check.path, check.bearer, check.body, check.keys) == ("GET", "/v1/models", key, "",
                                                                                     (key,))
        assert check.already_status == () and check.status == (200,)
        by_key[key] = body["key_alias"]
        door = profile == "phase4"                              # behind the front door: no host port
        assert (register.host_port, register.container_port) == ((None, 4000) if door else (4000, 4000))
    assert by_key == {APPS[a][0]: APPS[a][1] for a in present}
    assert len(set(by_key.values())) == len(by_key)             # one alias, one key per app
    rotation = services["litellm"].rotation
    for app in APPS:                                            # rotated by a holder that re-registers it
        policy = rotation[APPS[app][0]]
        assert policy.rotate and policy.holder == ("python3", "/app/lab_app_key.py", APPS[app][1], "LAB_SECRET_NEW",
                                                 "LAB_SECRET_OLD")
    assert rotation[MASTER].rotate and not rotation[MASTER].holder


def test_the_holder_script_ships_with_litellm_and_never_takes_a_value_in_argv(releases):
    _, files, _ = releases["phase3"]
    compose = yaml.safe_load(files["compose.yaml"])
    assert "./config/litellm/lab_app_key.py:/app/lab_app_key.py:ro" in compose["services"]["litellm"]["volumes"]
    script = files["config/litellm/lab_app_key.py"]
    compile(script, "lab_app_key.py", "exec")
    assert 'os.environ[sys.argv[2]]' in script and 'os.environ["LITELLM_MASTER_KEY"]' in script


def test_the_runbooks_say_which_key_each_app_holds_and_no_app_is_told_to_use_the_master_key(releases):
    _, _, services = releases["phase3"]
    pages = {page: re.sub(r"\\(.)", r"\1", text)            # Markdown's escapes undone: the text as read
             for page, text in render_runbooks(releases["phase3"][0]).items()}
    litellm = pages["runbooks/litellm.md"]
    assert "## Provisioning" in litellm and "with `LITELLM__LITELLM_MASTER_KEY` as the bearer token" in litellm
    for app, (key, alias, _) in APPS.items():
        assert key in litellm and f"(alias {alias})" in litellm
    assert "labbuild secrets rotate --dir DIR LITELLM__OPEN_WEBUI_KEY" in litellm
    told = {"open-webui": "LITELLM__OPEN_WEBUI_KEY", "dify-api": "LITELLM__DIFY_KEY",
            "dify-plugin-daemon": "LITELLM__DIFY_KEY", "flowise": "LITELLM__FLOWISE_KEY"}
    for service, key in told.items():
        assert key in pages[f"runbooks/{service}.md"], service
    for page, text in pages.items():
        if page not in ("runbooks/litellm.md", "runbooks/prometheus.md"):
            assert MASTER not in text, page


def _install_sh_calls(releases, profile: str, tmp_path: Path) -> str:
    """Section 6 of install.sh, run under dash over the flattened manifest of ``profile``."""
    if not shutil.which("dash"):
        pytest.skip("dash missing")
    _, _, services = releases[profile]
    m = Manifest(lab="lab", name="x", version="0.0.0", profile=profile, inputs="i", labbuild="t", offline=False,
                 platforms=("linux/amd64",), services=services, files={})
    (tmp_path / "manifest.json").write_bytes(m.dumps())
    flat = subprocess.run(["awk", awk_program('"$1"'), str(tmp_path / "manifest.json")],
                          capture_output=True, text=True, check=True).stdout
    (tmp_path / "manifest.flat").write_text(flat)

    mget = SCRIPT[SCRIPT.index("\nmget() {") + 1:SCRIPT.index("\n", SCRIPT.index("\nmget() {") + 1) + 1]
    valid = SCRIPT[SCRIPT.index("\nvalid() {") + 1:SCRIPT.index("\n}\n", SCRIPT.index("\nvalid() {")) + 3]
    section = SCRIPT[SCRIPT.index("# ---------------------------------------------------------------- 6. provisioning"):]
    preamble = ('WORK=' + str(tmp_path) + '; DIR=/srv/lab; LAB=lab; ORDER="litellm flowise"; WAITING=""\n'
                "say() { printf '%s\\n' \"$*\"; }\n" + mget + valid)
    return subprocess.run(["dash", "-c", preamble + section], capture_output=True, text=True, check=True).stdout


def test_install_sh_prints_the_bearer_and_the_get_checks(releases, tmp_path):
    """The calls install.sh prints (it makes none) carry the bearer as ${KEY} to fill in; the GET
    checks have no body."""
    out = _install_sh_calls(releases, "phase3", tmp_path)
    assert "NOT DONE: litellm is not set up until these calls are made" in out
    assert ("curl -sS -b cookies.txt -c cookies.txt -X POST -H 'Content-Type: application/json' "
            "-H 'Authorization: Bearer ${LITELLM__LITELLM_MASTER_KEY}' --data-binary @- "
            "http://127.0.0.1:4000/key/generate <<'BODY'") in out
    assert '{"key":"${LITELLM__OPEN_WEBUI_KEY}","key_alias":"open-webui","key_type":"llm_api"' in out
    assert ("curl -sS -b cookies.txt -c cookies.txt -H 'Authorization: Bearer ${LITELLM__OPEN_WEBUI_KEY}' "
            "http://127.0.0.1:4000/v1/models\n") in out
    assert out.count("/key/generate") == 5 and out.count("/v1/models") == 5
    assert "NOT DONE: flowise is not set up" in out and "/api/v1/account/register" in out   # its admin claim, no bearer
    flowise = out[out.index("NOT DONE: flowise"):]
    assert "Authorization: Bearer" not in flowise and "ADDR" not in out


def test_install_sh_prints_the_containers_address_behind_the_front_door(releases, tmp_path):
    """phase4 (the door on) publishes no port of litellm or flowise: the calls go to $ADDR, which the
    printed docker command finds (not "127.0.0.1:null")."""
    out = _install_sh_calls(releases, "phase4", tmp_path)
    assert "null" not in out and "127.0.0.1" not in out
    assert "-H 'Authorization: Bearer ${LITELLM__LITELLM_MASTER_KEY}' --data-binary @- http://$ADDR:4000/key/generate" in out
    assert "label=com.docker.compose.project=lab --filter label=com.docker.compose.service=litellm" in out
    assert "http://$ADDR:3000/api/v1/account/register" in out


# --------------------------------------------------------------------------- the format

KEYS = '''
    [secrets.MASTER]
    generate = "token"
    [secrets.APP_KEY]
    generate = "token"
    prefix = "sk-"

    [health]
    port = "http"

    [[when.app.provision]]
    description = "register app's key"
    port = "http"
    path = "/key/generate"
    bearer = "${{secret:gw.MASTER}}"
    status = [200]
    [when.app.provision.json]
    key = "${{secret:gw.APP_KEY}}"
    key_alias = "app"
    {extra}

    [[when.app.provision]]
    description = "check app's key"
    method = "GET"
    port = "http"
    path = "/v1/models"
    bearer = "{bearer}"
    status = [200]
    {check_extra}
    '''


def _gw(tmp_path: Path, extra: str = "", bearer: str = "${secret:gw.APP_KEY}", app_extra: str = "",
        check_extra: str = "") -> Path:
    return make_lab(tmp_path, {
        "gw": blueprint("gw", host=4000, extra=KEYS.format(extra=extra, bearer=bearer, check_extra=check_extra)),
        "app": blueprint("app", host=8081, extra=app_extra),
        "other": blueprint("other", host=8082, extra='[secrets.OTHER_KEY]\ngenerate = "hex"\n')})


def test_when_provision_steps_apply_only_with_their_service_and_carry_the_bearer(tmp_path):
    root = _gw(tmp_path, app_extra='[when.gw.env]\nAPI_KEY = "${secret:gw.APP_KEY}"\n')
    assert problems_of(root) == []
    gw = load_lab(root).services["gw"]
    assert gw.provision == () and gw.effective_provision({"gw"}) == ()
    register, check = gw.effective_provision({"gw", "app"})
    shipped = manifest_provision(gw, register)
    assert shipped.bearer == "GW__MASTER" and shipped.keys == ("GW__APP_KEY", "GW__MASTER")
    assert json.loads(shipped.body) == {"key": "${GW__APP_KEY}", "key_alias": "app"}
    checked = manifest_provision(gw, check)
    assert (checked.method, checked.body, checked.bearer, checked.keys) == ("GET", "", "GW__APP_KEY", ("GW__APP_KEY",))


@pytest.mark.parametrize("change,words", [
    ({"extra": 'note = "${secret:other.OTHER_KEY}"'}, "which may be absent"),     # neither gw's nor app's
    ({"bearer": "${secret:other.OTHER_KEY}"}, "which may be absent"),
    ({"bearer": "${secret:gw.NOPE}"}, "declares no secret 'NOPE'"),
    ({"bearer": "Bearer sk-1234"}, "bearer"),                                      # a literal: refused
    ({"extra": 'x = "${HOME}"'}, "'${' outside a ${secret:SERVICE.NAME} reference"),
])
def test_when_provision_refusals_name_the_key(tmp_path, change, words):
    problems = problems_of(_gw(tmp_path, **change))
    assert problems and any(words in p for p in problems), problems


def test_a_get_check_carries_no_body(tmp_path):
    problems = problems_of(_gw(tmp_path, check_extra='[when.app.provision.json]\n    x = "y"'))
    assert any("a GET call carries no body" in p for p in problems), problems


def test_the_manifest_round_trips_the_bearer_and_its_grammar_is_checked():
    step = ManifestProvision(description="register", method="POST", host_port=4000, path="/key/generate",
                             body='{"key":"${GW__APP_KEY}"}', keys=("GW__APP_KEY", "GW__MASTER"), status=(200,),
                             bearer="GW__MASTER")
    assert step.to_json()["bearer"] == "GW__MASTER"
    assert ManifestProvision.from_json(step.to_json()) == step
    plain = ManifestProvision(description="c", method="POST", host_port=1, path="/", body="", keys=(), status=(200,))
    assert "bearer" not in plain.to_json() and ManifestProvision.from_json(plain.to_json()).bearer == ""

    class S:
        show = ()
        secrets = ()

        def __init__(self, *steps):
            self.provision = steps
    assert provision_grammar_problems("gw", S(step)) == []
    from dataclasses import replace
    problems = provision_grammar_problems("gw", S(replace(step, bearer="OTHER__KEY"),
                                                  replace(step, method="GET"), replace(step, method="DELETE")))
    assert any("provision.0.bearer: 'OTHER__KEY' is not one of the step's keys" in p for p in problems)
    assert any("provision.1.body: a GET call carries no body" in p for p in problems)
    assert any("provision.2.method: 'DELETE' is not POST, PUT, PATCH or GET" in p for p in problems)
