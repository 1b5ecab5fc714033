"""No first-visitor admin (issue 23): [[provision]] and `show` secrets, from the blueprint to the
install side, and the shipped catalog's settings for each app that hands its admin to whoever
signs up first (Langfuse, Open WebUI by env; n8n, Flowise, Dify by provisioning calls).

The provisioning calls against a real HTTP server in a container: tests/e2e/test_provision_e2e.py.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import bcrypt
import pytest
from test_blueprint import blueprint, make_lab, problems_of

from builder.blueprint import load_lab
from builder.bundle.pack import manifest_provision
from builder.format.manifest import Manifest, ManifestProvision
from builder.install.provision import ProvisionFailed, credentials_shown, fill_body, redact
from builder.install.secrets import generate_secret

REPO = Path(__file__).resolve().parents[1]
ADMIN = "admin@local-ai-lab.localhost"

STEP = '''
    [secrets.ADMIN_PASSWORD]
    generate = "password"
    prefix = "Lab1-"
    description = "the admin's password"
    show = true
    rotate = false
    rotate_reason = "set once by the provisioning call"

    [[provision]]
    description = "claim the owner"
    port = "http"
    path = "/rest/owner/setup"
    status = [200]
    already_status = [400]
    already_text = "already setup"
    [provision.json]
    email = "admin@example.test"
    note = {note}
    [provision.json.user]
    password = "${{secret:app.ADMIN_PASSWORD}}"
    both = "pw=${{secret:app.ADMIN_PASSWORD}}; key=${{secret:db.DB_PASSWORD}}"
    '''
DB = '''
    [secrets.DB_PASSWORD]
    generate = "hex"
    '''


HEALTH = """
    [health]
    port = "http"
    """


def _lab(tmp_path: Path, step: str = STEP + HEALTH, note: str = '"plain"', depends: str = '["db"]') -> Path:
    return make_lab(tmp_path, {"app": blueprint("app", depends_on=depends, extra=step.format(note=note)),
                               "db": blueprint("db", host=5432, extra=DB)})


# --------------------------------------------------------------------------- schema and rules

def test_a_provision_step_loads_into_the_model(tmp_path):
    lab = load_lab(_lab(tmp_path))
    (step,) = lab.services["app"].provision
    assert (step.method, step.port, step.path, step.status) == ("POST", "http", "/rest/owner/setup", (200,))
    assert step.json["user"]["password"] == "${secret:app.ADMIN_PASSWORD}"
    assert ("user", "both") in dict(step.leaves())
    assert next(s for s in lab.services["app"].secrets if s.name == "ADMIN_PASSWORD").show


@pytest.mark.parametrize("change,words", [
    (('port = "http"', 'port = "admin"'), "no port named 'admin'"),
    (('status = [200]', 'status = []'), "status"),
    (('already_text = "already setup"\n', ''), "already_text"),
    (('path = "/rest/owner/setup"', 'path = "/rest/owner/setup?x=1"'), "path"),
    (('method = "POST"', ''), None),      # the default: still valid
    (('description = "the admin\'s password"\n', ''), "description"),     # show needs a description
])
def test_provision_refusals_name_the_key(tmp_path, change, words):
    step = (STEP + HEALTH).replace("[[provision]]\n", '[[provision]]\n    method = "POST"\n').replace(*change)
    problems = problems_of(_lab(tmp_path, step))
    if words is None:
        assert problems == []
    else:
        assert problems and any(words in p for p in problems), problems


def test_provisioning_needs_a_health_probe(tmp_path):
    make_lab(tmp_path, {"app": blueprint("app", depends_on='["db"]', extra=STEP.format(note='"x"')),
                        "db": blueprint("db", host=5432, extra=DB)})
    assert any("need a [health] probe" in p for p in problems_of(tmp_path))


def test_a_provision_port_needs_a_host_port(tmp_path):
    make_lab(tmp_path, {"app": blueprint("app", host=None, depends_on='["db"]', extra='''
        [[ports]]
        name = "http"
        container = 80
        ''' + STEP.format(note='"x"')), "db": blueprint("db", host=5432, extra=DB)})
    assert any("has no host port to call" in p for p in problems_of(tmp_path))   # (and no health probe)


def test_a_stray_placeholder_and_a_reference_to_a_service_that_may_be_absent_are_refused(tmp_path):
    assert any("'${' outside a ${secret:SERVICE.NAME} reference" in p
               for p in problems_of(_lab(tmp_path / "a", note='"${HOME}"')))
    assert any("which may be absent" in p for p in problems_of(_lab(tmp_path / "b", depends="[]")))


# --------------------------------------------------------------------------- manifest and body

HOSTILE = 'a "quoted" \\ back\\slash, </script>, $x {y}, ünï, tab\tend'


def test_the_body_is_built_by_the_json_encoder_and_each_free_text_value_survives(tmp_path):
    lab = load_lab(_lab(tmp_path, note=json.dumps(HOSTILE)))
    bp = lab.services["app"]
    shipped = manifest_provision(bp, bp.provision[0])
    assert shipped.keys == ("APP__ADMIN_PASSWORD", "DB__DB_PASSWORD") and shipped.host_port == 8080
    assert json.loads(shipped.body)["note"] == HOSTILE
    assert json.loads(shipped.body)["user"]["password"] == "${APP__ADMIN_PASSWORD}"
    value = 'pw with "quotes", \\ and ${APP__ADMIN_PASSWORD} inside'    # a value is data, never a template
    sent = json.loads(fill_body(shipped.body, {"APP__ADMIN_PASSWORD": value, "DB__DB_PASSWORD": "d"}))
    assert sent == {"email": "admin@example.test", "note": HOSTILE,
                    "user": {"password": value, "both": f"pw={value}; key=d"}}
    with pytest.raises(ProvisionFailed, match="DB__DB_PASSWORD has no value"):
        fill_body(shipped.body, {"APP__ADMIN_PASSWORD": "x"})


def test_manifest_round_trips_provision_and_show_and_omits_them_otherwise():
    step = ManifestProvision(description="claim", method="POST", host_port=5678, path="/rest/owner/setup",
                             body='{"p":"${APP__PW}"}', keys=("APP__PW",), status=(200,), already_status=(400,),
                             already_text="already setup")
    m = Manifest.loads(json.dumps({
        "format": 1, "lab": "lab", "name": "lab-base-1.0.0", "version": "1.0.0", "profile": "base", "inputs": "i",
        "labbuild": "t", "offline": False, "platforms": ["linux/amd64"], "files": {},
        "services": {name: {"image": "x/y:1", "digest": "sha256:" + "0" * 64, "verified": True,
                            "config_digests": {}, "ports": [], "health": None, "depends_on": [], "volumes": [],
                            "secrets": ["APP__PW"], "runbook": "runbooks/x.md",
                            **({"provision": [step.to_json()], "show": ["APP__PW"]} if name == "app" else {})}
                     for name in ("app", "other")}}).encode())
    assert m.services["app"].provision == (step,) and m.services["app"].show == ("APP__PW",)
    data = m.to_json()
    assert "provision" not in data["services"]["other"] and "show" not in data["services"]["other"]
    assert Manifest.loads(m.dumps()) == m
    bad = json.loads(m.dumps())
    bad["services"]["app"]["provision"][0]["path"] = "/x\ny"
    bad["services"]["app"]["show"] = ["OTHER__KEY"]
    with pytest.raises(Exception, match="is not a request path"):
        Manifest.loads(json.dumps(bad).encode())


def test_credentials_are_shown_only_when_generated_now_and_answers_are_redacted():
    step = ManifestProvision(description="c", method="POST", host_port=1, path="/", body="", keys=(), status=(200,))
    m = Manifest.loads(json.dumps({
        "format": 1, "lab": "lab", "name": "lab-base-1.0.0", "version": "1.0.0", "profile": "base", "inputs": "i",
        "labbuild": "t", "offline": False, "platforms": ["linux/amd64"], "files": {},
        "services": {"app": {"image": "x/y:1", "digest": "sha256:" + "0" * 64, "verified": True,
                             "config_digests": {}, "ports": [], "health": None, "depends_on": [], "volumes": [],
                             "secrets": ["APP__PW", "APP__KEY"], "runbook": "r.md",
                             "provision": [step.to_json()], "show": ["APP__PW"]}}}).encode())
    env = "APP__PW=Lab1-abc\nAPP__KEY=k\n"
    assert credentials_shown(m, ["APP__PW", "APP__KEY"], env) == [("app", "APP__PW", "Lab1-abc")]
    assert credentials_shown(m, [], env) == []        # kept from an earlier install: never shown again
    assert redact('{"password": "Lab1-abc", "x": "\x1b[31m"}', ["Lab1-abc"]) == '{"password": "***", "x": " [31m"}'


# --------------------------------------------------------------------------- the shipped catalog

@pytest.fixture(scope="module")
def lab():
    return load_lab(REPO)


def _secret(lab, service: str, name: str):
    return next(s for s in lab.services[service].secrets if s.name == name)


def test_langfuse_and_open_webui_get_their_admin_from_env_and_close_sign_up(lab):
    lf = lab.services["langfuse"].env
    assert lf["AUTH_DISABLE_SIGNUP"] == "true" and lf["LANGFUSE_INIT_ORG_ID"]
    assert lf["LANGFUSE_INIT_USER_EMAIL"] == ADMIN
    assert _secret(lab, "langfuse", "LANGFUSE_INIT_USER_PASSWORD").show
    ow = lab.services["open-webui"].env
    assert (ow["WEBUI_ADMIN_EMAIL"], ow["ENABLE_SIGNUP"], ow["DEFAULT_USER_ROLE"]) == (ADMIN, "false", "pending")
    assert _secret(lab, "open-webui", "WEBUI_ADMIN_PASSWORD").show
    text = (REPO / "blueprints" / "services" / "open-webui.toml").read_text()
    assert "main.py:348-352" in text and "utils/auth.py:525" in text     # the upstream source, cited


def test_n8n_gets_its_owner_from_env_with_a_hash_derived_at_install(lab):
    """n8n 2.35.5 sets its owner from env before its routes serve: no provisioning call, no window."""
    bp = lab.services["n8n"]
    assert not bp.provision
    env = bp.env
    assert (env["N8N_INSTANCE_OWNER_MANAGED_BY_ENV"], env["N8N_INSTANCE_OWNER_EMAIL"]) == ("true", ADMIN)
    assert env["N8N_INSTANCE_OWNER_PASSWORD_HASH"] == "${secret:n8n.LAB_ADMIN_PASSWORD_HASH}"
    derived = _secret(lab, "n8n", "LAB_ADMIN_PASSWORD_HASH")
    assert (derived.derive, derived.source, derived.generate, derived.rotate) == ("bcrypt", "LAB_ADMIN_PASSWORD",
                                                                                    None, False)
    secret = _secret(lab, "n8n", "LAB_ADMIN_PASSWORD")
    assert secret.show and secret.rotate is False and secret.prefix == "Lab1-"
    for _ in range(300):
        value = secret.prefix + generate_secret(secret.generate, secret.length)
        assert RULES["n8n"](value) and len(value.encode()) <= 72, value     # bcrypt reads 72 bytes
    text = (REPO / "blueprints" / "services" / "n8n.toml").read_text()
    assert "owner.instance-settings-loader.js" in text and "instance-settings-loader.config.js" in text


# the apps' own password rules (upstream sources cited in the blueprints)
RULES = {
    "n8n": lambda p: 8 <= len(p) <= 64 and re.search(r"\d", p) and re.search(r"[A-Z]", p),
    "flowise": lambda p: 8 <= len(p) <= 128 and re.fullmatch(r"(?=.*[a-z])(?=.*[A-Z])(?=.*\d)(?=.*[^a-zA-Z0-9]).{8,}", p),
    "dify-api": lambda p: re.fullmatch(r"(?=.*[a-zA-Z])(?=.*\d).{8,}", p),
}
PROVISIONED = {   # service with [[provision]] -> (paths in order, service owning the admin password)
    "flowise": (["/api/v1/account/register"], "flowise"),
    "dify": (["/console/api/init", "/console/api/setup"], "dify-api"),
}


@pytest.mark.parametrize("service", sorted(PROVISIONED))
def test_n8n_flowise_and_dify_claim_their_admin_by_provisioning_calls(lab, service):
    paths, owner = PROVISIONED[service]
    bp = lab.services[service]
    assert [s.path for s in bp.provision] == paths
    for step in bp.provision:
        assert step.method == "POST" and step.already_status and step.already_text
        assert bp.port(step.port).host is not None
    last = manifest_provision(bp, bp.provision[-1])
    body = json.loads(last.body)
    flat = json.dumps(body)
    assert ADMIN in flat and f"${{{owner.upper().replace('-', '_')}__LAB_ADMIN_PASSWORD}}" in flat
    secret = _secret(lab, owner, "LAB_ADMIN_PASSWORD")
    assert secret.show and secret.rotate is False and secret.prefix == "Lab1-"
    for _ in range(300):      # what install generates always meets the app's rule
        value = secret.prefix + generate_secret(secret.generate, secret.length)
        assert RULES[owner](value), value
    if service == "dify":
        init = _secret(lab, "dify-api", "INIT_PASSWORD")
        assert len(init.prefix) + init.length <= 30      # Dify's StrLen(30)


def test_every_app_that_hands_out_its_first_admin_is_covered(lab):
    """Each first-visitor app: either env (Langfuse, Open WebUI) or provisioning calls; and every shown
    secret is a generated one with a rotation decision."""
    covered_by_env = {"langfuse", "open-webui", "n8n"}
    assert covered_by_env | set(PROVISIONED) == {"langfuse", "open-webui", "n8n", "flowise", "dify"}
    shown = {(svc, s.name) for svc, bp in lab.services.items() for s in bp.secrets if s.show}
    assert shown == {("langfuse", "LANGFUSE_INIT_USER_PASSWORD"), ("open-webui", "WEBUI_ADMIN_PASSWORD"),
                     ("n8n", "LAB_ADMIN_PASSWORD"), ("flowise", "LAB_ADMIN_PASSWORD"),
                     ("dify-api", "LAB_ADMIN_PASSWORD")}
    for svc, name in shown:
        s = _secret(lab, svc, name)
        assert s.generate and s.rotate is False and s.rotate_reason and s.description


def test_install_sh_prints_the_calls_it_cannot_make():
    text = (REPO / "builder" / "templates" / "install.sh").read_text()
    assert "6. provisioning: printed, not made" in text and "--data-binary @-" in text
    assert textwrap.dedent("""\
        #   6. prints the provisioning calls""") in text


def test_no_generated_credential_lands_in_the_bundle_only_its_key_does(lab, tmp_path):
    """The phase3 release of the shipped lab (every first-visitor app): what install generates into
    DIR/.env appears in no bundle file; the provisioning bodies name the keys, never a value."""
    from builder.bundle.pack import manifest_services
    from builder.install.secrets import write_secrets
    from builder.lockfile import LOCK_PATH, read_lock
    from builder.render import ReleaseInput, render_text_files
    from builder.format.files import SECRETS_EXAMPLE
    from builder.host.dotenv import env_values, plain_value

    ri = ReleaseInput(lab=lab, lock=read_lock(REPO / LOCK_PATH), profile="phase3", version="0.0.0",
                      labbuild_version="test")
    files = render_text_files(ri)
    m = Manifest(lab=lab.name, name="x", version="0.0.0", profile="phase3", inputs="i", labbuild="t", offline=False,
                 platforms=("linux/amd64",), services=manifest_services(ri), files={})
    files["manifest.json"] = m.dumps().decode()
    added = write_secrets(tmp_path, files[SECRETS_EXAMPLE], m.secret_keys, owners=m.secret_owners)
    values = env_values((tmp_path / ".env").read_text())
    for key in ("N8N__LAB_ADMIN_PASSWORD", "FLOWISE__LAB_ADMIN_PASSWORD", "DIFY_API__LAB_ADMIN_PASSWORD",
                "DIFY_API__INIT_PASSWORD", "OPEN_WEBUI__WEBUI_ADMIN_PASSWORD"):
        assert key in added and len(values[key]) >= 24
        assert values[key].startswith("Lab1-") or key.startswith("OPEN_WEBUI")
        assert f"${{{key}}}" in files["manifest.json"] or key.startswith(("OPEN_WEBUI", "N8N"))
    assert "N8N__LAB_ADMIN_PASSWORD_HASH" in added      # derived from the password just generated
    assert bcrypt.checkpw(values["N8N__LAB_ADMIN_PASSWORD"].encode(),
                          plain_value(values["N8N__LAB_ADMIN_PASSWORD_HASH"]).encode())
    for rel, text in files.items():
        for key in added:
            assert values[key] not in text, (rel, key)
    shown = credentials_shown(m, added, (tmp_path / ".env").read_text())
    assert {k for _, k, _ in shown} == {"LANGFUSE__LANGFUSE_INIT_USER_PASSWORD", "OPEN_WEBUI__WEBUI_ADMIN_PASSWORD",
                                        "N8N__LAB_ADMIN_PASSWORD", "FLOWISE__LAB_ADMIN_PASSWORD",
                                        "DIFY_API__LAB_ADMIN_PASSWORD"}
    assert m.services["dify"].provision[0].keys == ("DIFY_API__INIT_PASSWORD",)


def test_runbooks_list_the_provisioning_calls_and_the_passwords_shown_once(lab):
    from builder.lockfile import LOCK_PATH, read_lock
    from builder.render import ReleaseInput, render_runbooks

    ri = ReleaseInput(lab=lab, lock=read_lock(REPO / LOCK_PATH), profile="phase3", version="0.0.0",
                      labbuild_version="test")
    pages = render_runbooks(ri)
    dify = pages["runbooks/dify.md"]
    assert "## Provisioning" in dify
    assert "1. `POST http://127.0.0.1:3000/console/api/init`" in dify
    assert "2. `POST http://127.0.0.1:3000/console/api/setup`" in dify
    assert "`N8N__LAB_ADMIN_PASSWORD` → `LAB_ADMIN_PASSWORD` (password, 24 characters, starts with `Lab1-`): " \
           "a sign-in password, printed once" in pages["runbooks/n8n.md"]
    assert "## Provisioning" not in pages["runbooks/open-webui.md"]     # env does it there


def test_the_helm_chart_says_which_admins_it_leaves_unclaimed_and_how():
    """The chart makes no provisioning call: its NOTES.txt names each service and call (helm template
    renders it: tests/test_export_helm.py runs the real helm over the same notes)."""
    from builder.export.docs import render_notes
    from builder.export.model import lab_model
    from builder.export.source import profile_members

    chart = lab_model(profile_members(REPO, "phase3", "0.0.0"))
    notes = render_notes(chart)
    for svc, paths in {"flowise": ["/api/v1/account/register"],
                       "dify": ["/console/api/init", "/console/api/setup"]}.items():
        assert f"NOT DONE by the chart: {svc} is not set up until these calls are made" in notes
        for path in paths:
            assert f"  POST {path}: " in notes
    assert "chart: open-webui is" not in notes and "chart: langfuse is" not in notes
    assert "NOT DONE by the chart: litellm is not set up" in notes          # the apps' own keys (issue 23)
    for app in ("open-webui", "n8n", "jupyter", "dify", "flowise"):
        assert "  POST /key/generate: register " in notes and f"(alias {app})" in notes
    assert "of open-webui stays" not in notes and "of langfuse stays" not in notes and "of n8n stays" not in notes
