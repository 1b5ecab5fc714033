"""Operator-supplied inputs (issue 11), without Docker: the format (supplied secrets,
prefixes, optional services, metrics bearer secrets, [[when.X.files]]), what the bundle
says about them, and the install side's pure decisions (``builder.install.inputs``).

The engine side (install stops before loading, optional services start later,
install.sh under dash) is in ``tests/e2e/test_inputs_e2e.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest
import yaml
from test_blueprint import blueprint, problems_of
from test_blueprint import make_lab as make_plain_lab
from test_render import (
    SERVICES,
    compose_bin,
    digest,
    make_lab,
    release_input,
    write_tree,
)

from builder.blueprint import load_lab
from builder.errors import InstallError
from builder.format.manifest import Manifest
from builder.host.dotenv import filled_keys
from builder.install.inputs import (
    check_supplied,
    missing_inputs,
    startable_optional,
    waiting_optional,
)
from builder.install.secrets import write_secrets
from builder.render import render_runbooks, render_secrets_example, render_text_files

TUNNEL = f'''
    [service]
    name = "tunnel"
    description = "A connector with a third-party token"
    phase = 2
    category = "access"
    [image]
    name = "docker.io/example/tunnel"
    tag = "1.0"
    digest = "{digest('tunnel')}"
    [env]
    TUNNEL_METRICS = "0.0.0.0:2000"
    [secrets.TUNNEL_TOKEN]
    supplied = true
    description = "Dashboard > Tunnels > copy the token"
'''

# test_render's litellm, scraped with its own sk- key, with a config replaced when web is present
LITELLM = SERVICES["litellm"].replace('''
        [metrics]
        port = "http"
''', '''
        [secrets.MASTER_KEY]
        generate = "token"
        length = 40
        prefix = "sk-"
        [metrics]
        port = "http"
        bearer_secret = "${{secret:litellm.MASTER_KEY}}"
''') + '''
        [[files]]
        name = "config.yaml"
        target = "/app/config.yaml"
        content = "plain: true\\n"
        [when.web]
        [[when.web.files]]
        name = "config.yaml"
        target = "/app/config.yaml"
        content = "with_web: true\\n"
'''
assert "bearer_secret" in LITELLM

PROFILES = '''
[lab]
name = "{name}"
default_profile = "base"

[profiles.base]
services = ["web"]

[profiles.full]
extends = ["base"]
services = ["app", "prometheus", "grafana", "litellm", "cadvisor"]
optional = ["tunnel"]

[profiles.more]
extends = ["full"]
services = []
'''


@pytest.fixture
def ri(tmp_path):
    root = make_lab(tmp_path / "lab", services={"tunnel": TUNNEL, "litellm": LITELLM}, profiles=PROFILES)
    return release_input(root)


# --------------------------------------------------------------------------- the format

def test_optional_services_join_the_closure_and_are_inherited_through_extends(ri):
    lab = ri.lab
    assert "tunnel" in lab.profile_closure("full") and "tunnel" in lab.profile_closure("more")
    assert lab.optional_services("full") == lab.optional_services("more") == ("tunnel",)
    assert lab.optional_services("base") == ()
    (token,) = lab.services["tunnel"].secrets
    assert token.supplied and token.generate is None and lab.services["tunnel"].supplied_secrets == (token,)


@pytest.mark.parametrize("secret, message", [
    ('supplied = true', "description"),                                  # where to get it is required
    ('supplied = true\ndescription = "x"\ngenerate = "token"', "supplied"),
    ('supplied = true\ndescription = "x"\nprefix = "sk-"', "supplied"),
    ('generate = "token"\nprefix = "sk-$(reboot)"', "prefix"),
    ('generate = "token"\nprefix = "sk- x"', "prefix"),
    ('length = 32', "generate"),
])
def test_secret_shapes_are_checked_by_the_schema(tmp_path, secret, message):
    extra = "\n[secrets.TOKEN]\n" + secret + "\n"
    root = make_plain_lab(tmp_path, {"svc": blueprint("svc", extra=extra)})
    problems = problems_of(root)
    assert problems and any("secrets.TOKEN" in p for p in problems), problems
    assert message in " ".join(problems), problems


def test_good_secret_shapes_validate(tmp_path):
    extra = ('\n[secrets.KEY]\ngenerate = "hex"\nlength = 32\nprefix = "pk-lf-"\n'
             '\n[secrets.TOKEN]\nsupplied = true\ndescription = "from the vendor"\n')
    root = make_plain_lab(tmp_path, {"svc": blueprint("svc", extra=extra)})
    assert problems_of(root) == []


def test_optional_profile_entries_must_exist_and_nothing_required_may_wait_for_them(tmp_path):
    services = {"aa": blueprint("aa", host=None, depends_on='["bb"]'), "bb": blueprint("bb", host=None),
                "cc": blueprint("cc", host=None, extra='[when.bb]\ndepends_on = true\n'),
                "dd": blueprint("dd", host=None, extra='[when.bb.env]\nX = "wired, not waiting"\n')}
    profiles = textwrap.dedent("""\
        [lab]
        name = "tt"
        default_profile = "p"
        [profiles.p]
        services = ["aa", "cc", "dd"]
        optional = ["bb", "nope"]
        """)
    root = make_plain_lab(tmp_path, services, profiles)
    problems = "\n".join(problems_of(root))
    assert "profiles.p.optional[1]: no blueprint for service 'nope'" in problems
    assert "'bb' is optional in profile 'p' but 'aa' depends on it" in problems
    assert "'bb' is optional in profile 'p' but 'cc' depends on it" in problems
    assert "'dd' depends" not in problems


def test_when_files_replace_a_declared_file_at_the_same_target(tmp_path):
    base = '[[files]]\nname = "c.yaml"\ntarget = "/c.yaml"\ncontent = "a"\n'
    good = base + '[when.bb]\n[[when.bb.files]]\nname = "c.yaml"\ntarget = "/c.yaml"\ncontent = "b"\n'
    bad = base + ('[when.bb]\n[[when.bb.files]]\nname = "d.yaml"\ntarget = "/d.yaml"\ncontent = "b"\n'
                  '[[when.bb.files]]\nname = "c.yaml"\ntarget = "/elsewhere"\ncontent = "b"\n')
    root = make_plain_lab(tmp_path / "good", {"aa": blueprint("aa", host=None, extra=good), "bb": blueprint("bb")})
    assert problems_of(root) == []
    lab = load_lab(root)
    assert lab.services["aa"].effective_files(["aa"])[0].content == "a"
    assert lab.services["aa"].effective_files(["aa", "bb"])[0].content == "b"
    root = make_plain_lab(tmp_path / "bad", {"aa": blueprint("aa", host=None, extra=bad), "bb": blueprint("bb")})
    problems = "\n".join(problems_of(root))
    assert "when.bb.files[0].name: no [[files]] entry named 'd.yaml'" in problems
    assert "when.bb.files[1].target: target /elsewhere differs" in problems


def test_bearer_secret_must_reference_a_declared_reachable_secret(tmp_path):
    extra = '[metrics]\nport = "http"\nbearer_secret = "${secret:other.KEY}"\n'
    root = make_plain_lab(tmp_path, {"aa": blueprint("aa", extra=extra), "other": blueprint("other", host=9999)})
    problems = "\n".join(problems_of(root))
    assert "metrics.bearer_secret: secret reference to 'other', which may be absent" in problems
    extra = '[metrics]\nport = "http"\nbearer_secret = "sk-inline-value"\n'
    root = make_plain_lab(tmp_path / "inline", {"aa": blueprint("aa", extra=extra)})
    assert any("metrics.bearer_secret" in p for p in problems_of(root))


def test_the_schema_documents_every_new_field(capsys):
    from builder.blueprint import blueprint_schema

    schema = blueprint_schema()
    secret = schema["$defs"]["secret"]["properties"]
    for key in ("supplied", "prefix", "description", "generate", "length"):
        assert secret[key].get("description"), key
    assert schema["properties"]["metrics"]["properties"]["bearer_secret"]["description"]
    assert schema["properties"]["when"]["additionalProperties"]["properties"]["files"]["description"]


# --------------------------------------------------------------------------- what the bundle says

def test_compose_starts_optional_services_only_by_profile_and_provides_the_scrape_secret(ri, tmp_path):
    out = write_tree(tmp_path / "b", render_text_files(ri))
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    assert compose["services"]["tunnel"]["profiles"] == ["tunnel"]
    # a missing supplied secret of an optional service must not stop compose for everything else
    assert compose["services"]["tunnel"]["environment"]["TUNNEL_TOKEN"] == "${TUNNEL__TUNNEL_TOKEN:-}"
    assert compose["services"]["prometheus"]["secrets"] == [
        {"source": "litellm_metrics_bearer", "target": "/etc/prometheus/secrets/litellm", "uid": "65534",
         "mode": 0o400}]
    assert compose["secrets"] == {"litellm_metrics_bearer": {"environment": "LITELLM__MASTER_KEY"}}
    assert (out / "config/litellm/config.yaml").read_text() == "with_web: true\n"   # web is in the profile
    prom = yaml.safe_load((out / "observability/prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "litellm")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/secrets/litellm"}
    # compose accepts it with only the generated secrets; --profile names the optional service
    env = out / "generated.env"
    env.write_text("".join(f"{k}=v-{k}\n" for k in re.findall(r"^([A-Z_0-9]+)=$", (out / "secrets.env.example")
                                                                .read_text(), re.M)))
    base = [compose_bin(), "-p", "inputs", "-f", "compose.yaml", "--env-file", "lab.env", "--env-file", str(env)]
    proc = subprocess.run([*base, "config", "--services"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "tunnel" not in proc.stdout.split() and "litellm" in proc.stdout.split()
    proc = subprocess.run([*base, "--profile", "tunnel", "config", "--format", "json"], cwd=out,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert "tunnel" in cfg["services"]
    assert cfg["secrets"]["litellm_metrics_bearer"]["environment"] == "LITELLM__MASTER_KEY"


def test_secrets_example_comments_out_supplied_secrets_and_states_prefixes(ri):
    text = render_secrets_example(ri)
    assert "# litellm: generate=token length=40 prefix=sk-\nLITELLM__MASTER_KEY=\n" in text
    assert "#TUNNEL__TUNNEL_TOKEN=\n" in text and "\nTUNNEL__TUNNEL_TOKEN=" not in text
    assert "# tunnel: supplied by the operator, never generated (optional: tunnel starts only once it is set): " \
           "Dashboard > Tunnels > copy the token\n" in text


def test_runbook_tells_where_a_supplied_secret_comes_from(ri):
    page = render_runbooks(ri)["runbooks/tunnel.md"]
    assert "`TUNNEL__TUNNEL_TOKEN`" in page and "supplied by you, never generated" in page
    assert "only started once it is set" in page
    assert "starts with `sk-`" in render_runbooks(ri)["runbooks/litellm.md"]


def test_manifest_carries_optional_and_supplied_and_omits_them_otherwise(ri):
    from builder.bundle.pack import manifest_services

    services = manifest_services(ri)
    assert services["tunnel"].optional and [s.key for s in services["tunnel"].supplied] == ["TUNNEL__TUNNEL_TOKEN"]
    assert services["tunnel"].secrets == ()            # never generated
    assert not services["web"].optional and services["web"].supplied == ()
    m = Manifest(lab="lab", name="lab-full-1.0.0", version="1.0.0", profile="full", inputs="i", labbuild="t",
                 offline=False,
                 platforms=("linux/amd64",), services=services, files={})
    data = m.to_json()
    assert data["services"]["tunnel"]["optional"] is True
    assert data["services"]["tunnel"]["supplied"] == [
        {"key": "TUNNEL__TUNNEL_TOKEN", "description": "Dashboard > Tunnels > copy the token"}]
    assert "optional" not in data["services"]["web"] and "supplied" not in data["services"]["web"]
    assert Manifest.loads(m.dumps()) == m


# --------------------------------------------------------------------------- the install side (pure)

def _manifest(ri) -> Manifest:
    from builder.bundle.pack import manifest_services

    return Manifest(lab="l", name="n", version="1.0.0", profile="full", inputs="i", labbuild="t", offline=False,
                    platforms=("linux/amd64",), services=manifest_services(ri), files={})


def test_filled_keys_ignore_empty_and_commented_assignments():
    text = "A=1\nB=\nC=''\n#D=4\n  export E = 5\nF=\"\"\n"
    assert filled_keys(text) == {"A", "E"}


def test_optional_service_waits_for_its_input_and_starts_once_it_exists(ri, tmp_path):
    m = _manifest(ri)
    assert waiting_optional(m, "") == {"tunnel": ["TUNNEL__TUNNEL_TOKEN"]}
    assert startable_optional(m, "") == []
    check_supplied(m, tmp_path)                          # optional: never stops the install
    assert waiting_optional(m, "TUNNEL__TUNNEL_TOKEN=abc\n") == {}
    assert startable_optional(m, "TUNNEL__TUNNEL_TOKEN=abc\n") == ["tunnel"]


def test_missing_supplied_secret_of_a_required_service_stops_naming_key_file_and_hint(ri, tmp_path):
    from dataclasses import replace

    m = _manifest(ri)
    required = replace(m, services={**m.services, "tunnel": replace(m.services["tunnel"], optional=False)})
    assert [x.key for x in missing_inputs(required, "")] == ["TUNNEL__TUNNEL_TOKEN"]
    with pytest.raises(InstallError) as err:
        check_supplied(required, tmp_path)
    text = err.value.message + (err.value.hint or "")
    assert "TUNNEL__TUNNEL_TOKEN (for tunnel): Dashboard > Tunnels > copy the token" in text
    assert str(tmp_path / ".env") in text and "nothing was installed" in text
    (tmp_path / ".env").write_text("TUNNEL__TUNNEL_TOKEN=from-the-vendor\n")
    check_supplied(required, tmp_path)


def test_generated_secrets_carry_their_prefix_and_supplied_ones_are_never_generated(ri, tmp_path):
    added = write_secrets(tmp_path, render_secrets_example(ri), _manifest(ri).secret_keys)
    assert "TUNNEL__TUNNEL_TOKEN" not in added
    env = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert env["LITELLM__MASTER_KEY"].startswith("sk-") and len(env["LITELLM__MASTER_KEY"]) == 3 + 40
    assert "TUNNEL__TUNNEL_TOKEN" not in env
