"""Blueprint loading, schema and semantic rules: every bad input gets a
located, actionable problem; nothing raises."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from builder.blueprint import (blueprint_schema, load_lab, locate_lines, secret_env_key,
                               validate_paths)
from builder.cli import main
from builder.errors import BlueprintError

DIGEST = "sha256:" + "a" * 64


def blueprint(name: str, *, phase: int = 1, host: int | None = 8080, extra: str = "",
              depends_on: str = "[]", tag: str = "1.0", digest: str = DIGEST,
              category: str = "data") -> str:
    ports = f"\n[[ports]]\nname = \"http\"\ncontainer = 80\nhost = {host}\n" if host else ""
    return textwrap.dedent(f"""\
        [service]
        name = "{name}"
        description = "test service {name}"
        phase = {phase}
        category = "{category}"
        depends_on = {depends_on}

        [image]
        name = "127.0.0.1:5000/test/{name}"
        tag = "{tag}"
        digest = "{digest}"
        """) + ports + textwrap.dedent(extra)


def make_lab(root: Path, services: dict[str, str], profiles: str | None = None) -> Path:
    svc_dir = root / "blueprints" / "services"
    svc_dir.mkdir(parents=True, exist_ok=True)
    for name, text in services.items():
        (svc_dir / f"{name}.toml").write_text(text)
    names = ", ".join(f'"{n}"' for n in services)
    (root / "blueprints" / "lab.toml").write_text(profiles or textwrap.dedent(f"""\
        [lab]
        name = "test-lab"
        default_profile = "all"

        [profiles.all]
        services = [{names}]
        """))
    return root


def problems_of(root: Path) -> list[str]:
    return [p.render() for p in validate_paths(root)]


def test_valid_lab_loads_into_typed_models(tmp_path):
    make_lab(tmp_path, {
        "db": blueprint("db", host=5432, extra="""
            [secrets.POSTGRES_PASSWORD]
            generate = "password"
            length = 24
            [healthcheck]
            test = ["CMD", "pg_isready"]
            """),
        "web": blueprint("web", depends_on='["db"]', extra="""
            [env]
            DATABASE_URL = "postgresql://postgres:${secret:db.POSTGRES_PASSWORD}@db/app"
            [health]
            port = "http"
            path = "/healthz"
            [when.cache.env]
            CACHE_URL = "redis://cache:6379"
            """),
        "cache": blueprint("cache", host=6379),
    })
    lab = load_lab(tmp_path)
    assert lab.name == "test-lab"
    web = lab.services["web"]
    assert web.depends_on == ("db",)
    assert web.health.path == "/healthz"
    assert web.image.pinned == f"127.0.0.1:5000/test/web:1.0@{DIGEST}"
    assert lab.profile_closure("all") == ["cache", "db", "web"]
    assert web.effective_env(["web", "db"]) == {"DATABASE_URL": web.env["DATABASE_URL"]}
    assert "CACHE_URL" in web.effective_env(["web", "db", "cache"])
    assert secret_env_key("open-webui", "X_KEY") == "OPEN_WEBUI__X_KEY"


def test_rotation_decisions_load_into_the_model_and_undecided_secrets_stay_valid(tmp_path):
    make_lab(tmp_path, {"db": blueprint("db", extra="""
        [secrets.POSTGRES_PASSWORD]
        generate = "hex"
        rotate = true
        rotate_days = 90
        [secrets.POSTGRES_PASSWORD.holder]
        exec = ["sh", "-c", "psql <<SQL ... \\\\getenv pw LAB_SECRET_NEW ... SQL"]
        [secrets.ENCRYPTION_KEY]
        generate = "hex"
        rotate = false
        rotate_reason = "stored credentials are encrypted with it"
        [secrets.UNDECIDED]
        generate = "token"
        [secrets.TUNNEL_TOKEN]
        supplied = true
        description = "from the dashboard"
        rotate = true
        """)})
    assert problems_of(tmp_path) == []
    by_name = {s.name: s for s in load_lab(tmp_path).services["db"].secrets}
    pw = by_name["POSTGRES_PASSWORD"]
    assert (pw.rotate, pw.rotate_days, pw.rotate_reason) == (True, 90, "")
    assert pw.holder[:2] == ("sh", "-c") and "LAB_SECRET_NEW" in pw.holder[2]
    assert (by_name["ENCRYPTION_KEY"].rotate, by_name["ENCRYPTION_KEY"].rotate_reason) == (
        False, "stored credentials are encrypted with it")
    assert by_name["UNDECIDED"].rotate is None and by_name["UNDECIDED"].holder == ()
    assert by_name["TUNNEL_TOKEN"].rotate is True and by_name["TUNNEL_TOKEN"].supplied


def test_profile_closure_follows_extends_and_depends_on(tmp_path):
    make_lab(tmp_path, {
        "aa": blueprint("aa", host=1001), "bb": blueprint("bb", host=1002, depends_on='["aa"]'),
        "cc": blueprint("cc", host=1003, phase=2),
    }, profiles=textwrap.dedent("""\
        [lab]
        name = "tl"
        default_profile = "p2"
        [profiles.p1]
        services = ["bb"]
        [profiles.p2]
        extends = ["p1"]
        services = ["cc"]
        """))
    lab = load_lab(tmp_path)
    assert lab.profile_closure("p1") == ["aa", "bb"]
    assert lab.profile_closure("p2") == ["aa", "bb", "cc"]
    with pytest.raises(BlueprintError, match="unknown profile"):
        lab.profile_closure("nope")


def test_toml_syntax_error_names_line_and_column(tmp_path):
    make_lab(tmp_path, {"aa": blueprint("aa") + "\nbroken = = 1\n"})
    [p] = validate_paths(tmp_path)
    assert p.line == blueprint("aa").count("\n") + 2
    assert "column" in p.message and "TOML syntax error" in p.message


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace('phase = 1', 'phase = "one"'), "service.phase: expected integer"),
    (lambda t: t.replace('description = "test service aa"\n', ''), "required key 'description' is missing"),
    (lambda t: t.replace('category = "data"', 'categroy = "data"'), "unknown key 'categroy' (did you mean 'category'?)"),
    (lambda t: t.replace('tag = "1.0"', 'tag = "latest"'), "tag 'latest' is not allowed"),
    (lambda t: t.replace('tag = "1.0"\n', ''), "required key 'tag' is missing"),
    (lambda t: t.replace(DIGEST, "sha256:abc"), "expected 'sha256:' followed by 64"),
    (lambda t: t.replace(DIGEST, "md5:" + "a" * 32), "is not a digest"),
    (lambda t: t.replace("host = 8080", "host = 70000"), "ports[0].host: 70000 is out of range"),
    (lambda t: t.replace("container = 80", "container = 0"), "ports[0].container: 0 is out of range"),
    (lambda t: t.replace('category = "data"', 'category = "misc"'), "'misc' is not one of"),
    (lambda t: t.replace('name = "aa"', 'name = "bb"'), "name 'bb' differs from the file stem 'aa'"),
    (lambda t: t.replace('name = "aa"', 'name = "A!"'), "service.name: 'A!' does not match"),
    (lambda t: t.replace("127.0.0.1:5000/test/a", "qdrant/qdrant"), "is not fully qualified"),
    (lambda t: t + '[env]\nOPENAI_API_KEY = "sk-123"\n', "env.OPENAI_API_KEY: OPENAI_API_KEY looks like a secret"),
    (lambda t: t + '[env]\nDB_PASSWORD = "x"\n', "DB_PASSWORD looks like a secret"),
    (lambda t: t.replace("host = 8080", 'host = 8080\nbind = "0.0.0.0"'), "publishes on every interface"),
    (lambda t: t + '[[binds]]\nsource = "/var/run/docker.sock"\ntarget = "/var/run/docker.sock"\n', "docker socket"),
    (lambda t: t.replace('category = "data"', 'category = "data"\nprivileged = true'), "privileged_reason"),
    (lambda t: t + '[health]\nport = "web"\n', "health.port: no port named 'web'"),
    (lambda t: t + '[[ports]]\nname = "http"\ncontainer = 81\n', "duplicate port name 'http'"),
    (lambda t: t + '[[volumes]]\nname = "dd"\ntarget = "/d"\n[[volumes]]\nname = "dd"\ntarget = "/e"\n', "duplicate volume name 'dd'"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "uuid"\n', "'uuid' is not one of"),
    (lambda t: t + '[env]\nX = "${secret:nobody.PW}"\n', "secret reference to unknown service 'nobody'"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = false\n', "required key 'rotate_reason' is missing"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = "yes"\n', "secrets.TOKEN.rotate: expected boolean"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = true\nrotate_reason = "data is encrypted"\n',
     "secrets.TOKEN.rotate_reason: rotate_reason explains rotate = false"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate_days = 30\n', "secrets.TOKEN.rotate_days: rotate_days needs rotate = true"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = true\nrotate_days = 0\n', "rotate_days: 0 is out of range"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = false\nrotate_reason = "encrypts the data"\n'
               '[secrets.TOKEN.holder]\nexec = ["sh", "-c", "echo $LAB_SECRET_NEW"]\n', "holder: holder needs rotate = true"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = true\n[secrets.TOKEN.holder]\nexec = ["sh", "-c", "x"]\n',
     "holder.exec: the holder never reads $LAB_SECRET_NEW"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = true\n[secrets.TOKEN.holder]\nexec = []\n',
     "secrets.TOKEN.holder.exec: [] should be non-empty"),
    (lambda t: t + '[secrets.TOKEN]\ngenerate = "hex"\nrotate = true\n[secrets.TOKEN.holder]\nrun = ["x"]\n',
     "unknown key 'run'"),
])
def test_each_bad_input_gets_a_located_message(tmp_path, mutate, expected):
    make_lab(tmp_path, {"aa": mutate(blueprint("aa"))})
    found = problems_of(tmp_path)
    assert any(expected in p for p in found), found
    assert all(p.startswith("blueprints/services/aa.toml") for p in found), found


def test_problem_lines_point_at_the_offending_key(tmp_path):
    text = blueprint("aa").replace('tag = "1.0"', 'tag = "latest"')
    make_lab(tmp_path, {"aa": text})
    [p] = validate_paths(tmp_path)
    assert p.line == text.splitlines().index('tag = "latest"') + 1
    assert p.render().startswith(f"blueprints/services/aa.toml:{p.line}: image.tag: ")


def test_every_problem_is_reported_at_once(tmp_path):
    bad = blueprint("aa").replace('tag = "1.0"', 'tag = "latest"').replace("host = 8080", "host = 0")
    make_lab(tmp_path, {"aa": bad, "bb": blueprint("bb", host=9000, depends_on='["zzz"]')})
    found = problems_of(tmp_path)
    assert len(found) == 3, found


def test_dependency_rules(tmp_path):
    make_lab(tmp_path, {
        "aa": blueprint("aa", host=1, depends_on='["bb"]'),
        "bb": blueprint("bb", host=2, depends_on='["aa"]'),
        "cc": blueprint("cc", host=3, depends_on='["dd"]', phase=1),
        "dd": blueprint("dd", host=4, phase=3),
        "ee": blueprint("ee", host=5, depends_on='["ddd"]'),
    })
    found = "\n".join(problems_of(tmp_path))
    assert "dependency cycle: aa -> bb -> aa" in found
    assert "'dd' is in phase 3, later than this service's phase 1" in found
    assert "unknown service 'ddd' (did you mean 'dd'?)" in found


def test_duplicate_host_ports_across_services(tmp_path):
    make_lab(tmp_path, {"aa": blueprint("aa", host=3000), "bb": blueprint("bb", host=3000)})
    found = problems_of(tmp_path)
    assert any("host port 3000/tcp is also used by 'aa'" in p for p in found), found


def test_secret_reference_must_be_reachable(tmp_path):
    make_lab(tmp_path, {
        "db": blueprint("db", host=1, extra='[secrets.PW]\ngenerate = "hex"\n'),
        "app": blueprint("app", host=2, extra='[env]\nURL = "x:${secret:db.PW}"\nDB_KEY = "${secret:db.NOPE}"\n'),
        "ok": blueprint("ok", host=3, extra='[when.db.env]\nDB_PASSWORD = "${secret:db.PW}"\n'),
    })
    found = "\n".join(problems_of(tmp_path))
    assert "secret reference to 'db', which may be absent" in found
    assert "ok.toml" not in found


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"   \n\n", "file is empty"),
    (b"\x00\x01\x02binary", "binary file"),
    (b"\xff\xfe[service]", "not UTF-8"),
])
def test_empty_and_binary_files(tmp_path, content, message):
    make_lab(tmp_path, {"aa": blueprint("aa")})
    (tmp_path / "blueprints/services/aa.toml").write_bytes(content)
    found = problems_of(tmp_path)
    assert any(message in p for p in found), found


def test_lab_toml_rules(tmp_path):
    make_lab(tmp_path, {"aa": blueprint("aa")}, profiles=textwrap.dedent("""\
        [lab]
        name = "tl"
        default_profile = "missing"
        platfroms = ["linux/amd64"]
        [profiles.p]
        services = ["aa", "qdrnt"]
        extends = ["q"]
        [profiles.q]
        extends = ["p"]
        """))
    found = "\n".join(problems_of(tmp_path))
    assert "profiles.p.services[1]: no blueprint for service 'qdrnt'" in found
    assert "unknown key 'platfroms' (did you mean 'platforms'?)" in found
    assert "default_profile: unknown profile 'missing'" in found
    assert "profile cycle" in found


def test_validating_given_files_uses_the_lab_as_context(tmp_path):
    make_lab(tmp_path, {"db": blueprint("db", host=5432)})
    new = tmp_path / "elsewhere" / "app.toml"
    new.parent.mkdir()
    new.write_text(blueprint("app", host=5432, depends_on='["db"]'))
    found = [p.render() for p in validate_paths(tmp_path, [new])]
    assert len(found) == 1 and "also used by 'db'" in found[0]


def test_no_lab_here_is_a_clear_problem(tmp_path):
    [p] = validate_paths(tmp_path)
    assert "no lab here" in p.message
    with pytest.raises(BlueprintError):
        load_lab(tmp_path)


def test_locate_lines_handles_arrays_of_tables_and_dotted_keys():
    text = '[service]\nname = "x"\n[[ports]]\nname = "aa"\n[[ports]]\nname = "bb"\n[secrets.K]\ngenerate = "hex"\n'
    lines = locate_lines(text)
    assert lines[("ports", 1, "name")] == 6
    assert lines[("secrets", "K", "generate")] == 8


# ---------------------------------------------------------------- CLI

def test_cli_validate_exit_codes_and_json(tmp_path, capsys):
    make_lab(tmp_path, {"aa": blueprint("aa")})
    assert main(["--root", str(tmp_path), "validate"]) == 0
    (tmp_path / "blueprints/services/aa.toml").write_text(blueprint("aa", tag="latest"))
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "--json", "validate"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["errors"][0]["path"] == "image.tag"
    assert out["errors"][0]["file"] == "blueprints/services/aa.toml"
    assert out["errors"][0]["line"] == 10


def test_cli_validate_missing_file_is_not_a_traceback(tmp_path, capsys):
    make_lab(tmp_path, {"aa": blueprint("aa")})
    assert main(["--root", str(tmp_path), "validate", str(tmp_path / "nope.toml")]) == 1
    err = capsys.readouterr().err
    assert "file not found" in err and "Traceback" not in err


def test_cli_usage_error_exits_2(capsys):
    assert main(["validate", "--frobnicate"]) == 2


def test_schema_command_prints_the_shipped_schema(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == blueprint_schema()
    assert printed["$schema"].endswith("2020-12/schema")


# ---------------------------------------------------------------- fuzzing

toml_scalars = st.one_of(st.integers(-10**6, 10**6), st.text(max_size=20), st.booleans(),
                         st.floats(allow_nan=False, allow_infinity=False))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8),
                                                 inner, max_size=3)), max_leaves=8)
section_keys = st.sampled_from(["service", "image", "ports", "env", "secrets", "volumes", "health",
                                "metrics", "when", "runbook", "resources", "binds", "files", "junk"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(section_keys, toml_values, max_size=6))
def test_fuzz_structured_documents_never_raise(tmp_path_factory, doc):
    import tomlkit
    root = tmp_path_factory.mktemp("fuzz")
    try:
        text = tomlkit.dumps(doc)
    except Exception:
        return
    make_lab(root, {"aa": text})
    assert isinstance(validate_paths(root), list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=300).map(str.encode)))
def test_fuzz_raw_bytes_never_raise(tmp_path_factory, raw):
    root = tmp_path_factory.mktemp("fuzzraw")
    make_lab(root, {"aa": blueprint("aa")})
    (root / "blueprints/services/aa.toml").write_bytes(raw)
    (root / "blueprints/lab.toml").write_bytes(raw)
    assert isinstance(validate_paths(root), list)


def test_image_track_and_group_load_and_are_checked(tmp_path):
    make_lab(tmp_path, {"db": blueprint("db", host=None, tag="17.2", extra="""\
        track = '^17\\.(\\d+)$'   # a major needs a dump and restore
        group = "data"
        """)})
    image = load_lab(tmp_path).services["db"].image
    assert (image.track, image.group) == (r"^17\.(\d+)$", "data")
    make_lab(tmp_path, {"db": blueprint("db", host=None, tag="18.1", extra=r"track = '^17\.(\d+)$'" + "\n"),
                        "ch": blueprint("ch", host=None, tag="25.3", extra=r"track = '^(\d+)\.(3|8$'" + "\n"),
                        "web": blueprint("web", host=None, extra='group = "Web App"\n')})
    problems = problems_of(tmp_path)
    assert any("db.toml:12: image.track: the pinned tag '18.1' is not on its own track '^17\\.(\\d+)$'" in p
               for p in problems), problems
    assert any("ch.toml:12: image.track: '^(\\d+)\\.(3|8$' is not a regular expression: missing )" in p
               for p in problems), problems
    assert any("web.toml:12: image.group: 'Web App' does not match" in p for p in problems), problems
