"""The contributor template, `labbuild new-service` and `labbuild check` without a live service.

The template is rendered with the real cookiecutter API (and once with the
plain `cookiecutter` command) and its output validated by labbuild; the
real-engine tests live in tests/e2e/test_template_testinfra.py.
"""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from builder.blueprint import blueprint_schema, validate_paths
from builder.cli import main
from builder.scaffold import answer_problems, find_template, placeholders

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "cookiecutter-service"
CATEGORIES = blueprint_schema()["properties"]["service"]["properties"]["category"]["enum"]
BIN = Path(sys.executable).parent


@pytest.fixture
def render(tmp_path):
    """Render the template with the real cookiecutter API (plain, no labbuild) into tmp_path/out."""
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(f"replay_dir: {tmp_path / 'replay'}\ncookiecutters_dir: {tmp_path / 'cc'}\n")
    out = tmp_path / "out"
    out.mkdir()

    def run(**answers) -> Path:
        return Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=answers,
                                 output_dir=str(out), config_file=str(config)))
    run.out = out
    return run


def _place(lab: Path, project: Path, name: str) -> Path:
    dst = lab / "blueprints" / "services" / f"{name}.toml"
    shutil.copy(project / f"{name}.toml", dst)
    return dst


# --------------------------------------------------------------------------- the template renders

@pytest.mark.parametrize("category", CATEGORIES)
def test_template_renders_a_valid_blueprint_for_every_category(render, lab_copy, category):
    name = f"svc-{category}-x"
    project = render(service_name=name, category=category, phase="2", host_port="",
                     health_path="", description=f'A "{category}" service')
    assert project.name == name
    assert sorted(p.name for p in project.iterdir()) == ["README.md", f"{name}.toml",
                                                         f"test_svc_{category}_x.py"]
    blueprint = _place(lab_copy, project, name)
    assert validate_paths(lab_copy, [blueprint]) == []
    data = tomllib.loads(blueprint.read_text())
    assert data["service"] == {"name": name, "description": f'A "{category}" service', "phase": 2,
                               "category": category, "depends_on": []}
    assert "host" not in data["ports"][0] and "health" not in data


def test_hyphenated_name_gives_python_module_and_full_blueprint(render, lab_copy):
    project = render(service_name="flow-red", image_name="docker.io/nodered/node-red", image_tag="4.0.5",
                     container_port="1880", host_port="18801", health_path="/", metrics_path="/metrics",
                     volume_target="/data", docs="https://nodered.org/docs/", category="app", phase="3")
    test_file = project / "test_flow_red.py"
    py_compile.compile(str(test_file), doraise=True)
    assert test_file.stem.isidentifier()
    text = test_file.read_text()
    assert 'SERVICE = "flow-red"' in text and "LAB_FLOW_RED_CONTAINER" in text and "LAB_FLOW_RED_PORT" in text

    blueprint_text = (project / "flow-red.toml").read_text()
    assert blueprint_text.startswith("#:schema ../../builder/schemas/blueprint.schema.json\n")
    for example in ("# [env]", "# [secrets.", ):
        assert example in blueprint_text
    blueprint = _place(lab_copy, project, "flow-red")
    assert validate_paths(lab_copy, [blueprint]) == []
    data = tomllib.loads(blueprint_text)
    assert data["ports"] == [{"name": "http", "container": 1880, "host": 18801}]
    assert data["volumes"] == [{"name": "data", "target": "/data"}]
    assert data["health"]["path"] == "/" and data["metrics"] == {"port": "http", "path": "/metrics"}
    assert data["service"]["docs"] == "https://nodered.org/docs/"
    assert len(data["runbook"]) == 3
    assert "flow-red" in (project / "README.md").read_text()


def test_defaults_render_commented_examples_of_every_optional_section(render, lab_copy):
    project = render(service_name="plain-svc", host_port="18802")
    text = (project / "plain-svc.toml").read_text()
    for example in ("# [env]", "# [secrets.API_KEY]", "# [[volumes]]", "# [metrics]"):
        assert example in text, example
    data = tomllib.loads(text)
    assert "volumes" not in data and "metrics" not in data and "env" not in data
    assert data["health"] == {"port": "http", "path": "/healthz", "start_period": "30s"}
    assert validate_paths(lab_copy, [_place(lab_copy, project, "plain-svc")]) == []
    # what is left for the contributor: the zero digest and the TODO runbook text
    todo = placeholders(project / "plain-svc.toml")
    assert len(todo) == 13 and todo[0].path == "digest"


def test_plain_cookiecutter_command_renders_without_labbuild(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run([str(BIN / "cookiecutter"), "--no-input", "-o", str(tmp_path), str(TEMPLATE),
                           "service_name=foo", "host_port=18803"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "foo").iterdir()) == ["README.md", "foo.toml", "test_foo.py"]


# --------------------------------------------------------------------------- the hook

BAD_ANSWERS = [
    ({"service_name": "Node_Red"}, "service_name"),
    ({"service_name": "x"}, "service_name"),
    ({"service_name": "1abc"}, "service_name"),
    ({"service_name": "a" * 42}, "service_name"),
    ({"image_digest": "sha256:abc"}, "image_digest"),
    ({"image_digest": "md5:" + "0" * 64}, "image_digest"),
    ({"image_digest": "sha256:" + "A" * 64}, "image_digest"),
    ({"container_port": "0"}, "container_port"),
    ({"container_port": "70000"}, "container_port"),
    ({"container_port": "http"}, "container_port"),
    ({"host_port": "65536"}, "host_port"),
    ({"image_tag": "latest"}, "image_tag"),
    ({"image_tag": "has space"}, "image_tag"),
    ({"image_name": "nginx"}, "image_name"),
    ({"image_name": "library/nginx"}, "image_name"),
    ({"health_path": "healthz"}, "health_path"),
    ({"volume_target": "data"}, "volume_target"),
    ({"docs": "nodered.org"}, "docs"),
    ({"host_port": "", "health_path": "/healthz"}, "health_path"),
    ({"description": "   "}, "description"),
]


@pytest.mark.parametrize("answers,key", BAD_ANSWERS, ids=[k + "-" + str(i) for i, (_, k) in enumerate(BAD_ANSWERS)])
def test_hook_rejects_bad_answer_before_writing_anything(render, capfd, answers, key):
    with pytest.raises(FailedHookException):
        render(**{"service_name": "fine-name", **answers})
    assert list(render.out.iterdir()) == []
    err = capfd.readouterr().err
    assert "nothing was written" in err and f"  - {key}:" in err


def test_hook_rules_match_the_schema_and_the_template_choices():
    variables = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    hook = TEMPLATE / "hooks" / "pre_gen_project.py"
    ns: dict = {}
    exec(compile(hook.read_text(), str(hook), "exec"), ns)  # __name__ != "__main__": only definitions
    schema_phase = blueprint_schema()["properties"]["service"]["properties"]["phase"]
    assert sorted(ns["CATEGORIES"]) == sorted(CATEGORIES) == sorted(variables["category"])
    assert sorted(ns["PHASES"]) == sorted(variables["phase"]) == [
        str(p) for p in range(schema_phase["minimum"], schema_phase["maximum"] + 1)]
    assert variables["category"][0] == "app" and variables["phase"][0] == "1"
    defaults = {k: v for k, v in variables.items() if not k.startswith("_") and "{{" not in str(v)}
    defaults = {k: v[0] if isinstance(v, list) else v for k, v in defaults.items()}
    assert answer_problems(TEMPLATE, {**defaults, "service_name": "ok-name", "description": "d",
                                      "image_name": "docker.io/x/ok-name", "host_port": "1"}) == []


# --------------------------------------------------------------------------- labbuild new-service

def _labbuild(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_new_service_end_to_end_in_a_lab_copy(lab_copy, capsys):
    rc, out, err = _labbuild(capsys, "--root", str(lab_copy), "--json", "new-service",
                             "service_name=flow-red", "container_port=1880", "host_port=18811",
                             "category=app", "phase=2", "metrics_path=/metrics")
    assert rc == 0, err
    result = json.loads(out)
    assert result["ok"] is True and result["service"] == "flow-red"
    assert result["created"] == ["blueprints/services/flow-red.toml", "tests/services/test_flow_red.py"]
    assert len(result["todo"]) == 13
    blueprint = lab_copy / "blueprints/services/flow-red.toml"
    assert validate_paths(lab_copy, [blueprint]) == []
    py_compile.compile(str(lab_copy / "tests/services/test_flow_red.py"), doraise=True)
    assert "labbuild lock --update flow-red" in err and "LAB_LIVE=1 pytest tests/services/test_flow_red.py" in err
    # no leftovers from the temporary rendering
    assert not list(lab_copy.rglob(".labbuild-scaffold-*"))
    assert not list((lab_copy / "blueprints/services").glob(".*.tmp"))

    # a second run refuses to overwrite and leaves the files as they are
    before = blueprint.read_bytes()
    rc, out, err = _labbuild(capsys, "--root", str(lab_copy), "new-service", "--no-input",
                             "service_name=flow-red", "host_port=18812")
    assert rc == 1 and "exists already" in err and "Traceback" not in err
    assert blueprint.read_bytes() == before


def test_new_service_removes_an_invalid_result_and_reports_why(lab_copy, capsys):
    rc, _, err = _labbuild(capsys, "--root", str(lab_copy), "new-service", "--no-input",
                           "service_name=first-svc", "host_port=18821")
    assert rc == 0, err
    rc, _, err = _labbuild(capsys, "--root", str(lab_copy), "new-service", "--no-input",
                           "service_name=second-svc", "host_port=18821")
    assert rc == 1
    assert "host port 18821/tcp is also used by 'first-svc'" in err and "nothing was kept" in err
    assert not (lab_copy / "blueprints/services/second-svc.toml").exists()
    assert not (lab_copy / "tests/services/test_second_svc.py").exists()


@pytest.mark.parametrize("args,message", [
    (["service_name=Bad_Name"], "service_name: 'Bad_Name' must match"),
    (["service_name=ok-name", "image_tag=latest"], "image_tag: 'latest' is not allowed"),
    (["service_name=ok-name", "image_digest=sha256:12"], "is not a digest"),
    (["service_name=ok-name", "container_port=99999"], "is not a port number"),
    (["service_name=ok-name", "category=nope"], "category: 'nope' is not one of: app, base"),
    (["service_name=ok-name", "phase=9"], "phase: '9' is not one of"),
    (["service_name=ok-name", "colour=blue"], "unknown template variable 'colour'"),
    (["service_name=ok-name", "host-port=1"], "did you mean 'host_port'?"),
    (["just-a-word"], "'just-a-word' is not KEY=VALUE"),
])
def test_new_service_rejects_bad_answers_cleanly(lab_copy, capsys, args, message):
    before = sorted(p.relative_to(lab_copy) for p in lab_copy.rglob("*"))
    rc, out, err = _labbuild(capsys, "--root", str(lab_copy), "new-service", "--no-input", *args)
    assert rc == 1 and message in err and "Traceback" not in err
    assert sorted(p.relative_to(lab_copy) for p in lab_copy.rglob("*")) == before


def test_new_service_json_error_is_one_object(lab_copy, capsys):
    rc, out, _ = _labbuild(capsys, "--root", str(lab_copy), "--json", "new-service", "service_name=A")
    assert rc == 1
    data = json.loads(out)
    assert data["ok"] is False and data["errors"][0]["path"] == "service_name"


def test_template_is_found_next_to_labbuild_when_the_root_has_none(lab_copy):
    assert not (lab_copy / "cookiecutter-service").exists()
    assert find_template(lab_copy) == TEMPLATE


def test_generated_service_tests_are_skipped_without_a_live_lab(lab_copy, tmp_path, capsys):
    assert _labbuild(capsys, "--root", str(lab_copy), "new-service", "--no-input",
                     "service_name=skip-me", "host_port=18831")[0] == 0
    services = tmp_path / "suite" / "tests" / "services"
    services.mkdir(parents=True)
    shutil.copy(REPO / "tests/services/conftest.py", services / "conftest.py")
    shutil.copy(lab_copy / "tests/services/test_skip_me.py", services)
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_LIVE", "LAB_INSTALL_DIR")}
    proc = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           "--rootdir", str(tmp_path / "suite"), str(services)],
                          capture_output=True, text=True, env=env, cwd=tmp_path / "suite")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 skipped" in proc.stdout


def test_shipped_blueprints_hold_no_template_placeholders(repo_root):
    """The PR checklist's 'no TODO, no zero digest' rule, enforced by CI through this test."""
    leftovers = [p.render() for f in sorted((repo_root / "blueprints/services").glob("*.toml"))
                 for p in placeholders(f, str(f.relative_to(repo_root)))]
    assert leftovers == []


def test_new_service_with_only_a_name_is_valid_in_the_shipped_lab(lab_copy, capsys):
    """The template's defaults (host port 8080, ...) must not clash with the lab's services."""
    rc, _, err = _labbuild(capsys, "--root", str(lab_copy), "new-service", "--no-input", "service_name=defaults-only")
    assert rc == 0, err
