"""builder.host.compose: the compose v2 runner, against the real `docker compose config`
(which needs no engine)."""

from __future__ import annotations

import pytest

from builder.errors import InstallError
from builder.host.compose import Project, find_compose, hint_for, render_wrapper, wrapper_gpu, write_wrapper


@pytest.fixture
def release(tmp_path):
    try:
        find_compose()
    except InstallError as exc:
        pytest.skip(exc.message)
    rel = tmp_path / "releases" / "1.0.0"
    rel.mkdir(parents=True)
    (rel / "compose.yaml").write_text("services:\n  web:\n    image: busybox:${WEB__TAG:?set in lab.env}\n"
                                      "    environment:\n      TOKEN: ${WEB__TOKEN:?secret}\n")
    (rel / "lab.env").write_text("WEB__TAG='1.36'\n")
    return rel


def test_plain_compose_in_dir_reads_the_wrapper_both_env_files_and_the_project_name(release, tmp_path,
                                                                                    monkeypatch):
    env = tmp_path / ".env"
    env.write_text("WEB__TOKEN=abc\n")
    write_wrapper(tmp_path, "lab-x", release, gpu=False)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "someone-else")   # the caller's COMPOSE_* do not leak in
    project = Project(name="lab-x", install_dir=tmp_path)
    assert project.argv("config")[-1:] == ["config"] and "-p" not in project.argv("config")
    out = project.run("config").stdout
    assert "busybox:1.36" in out and "TOKEN: abc" in out and "name: lab-x" in out


def test_an_operator_line_in_dot_env_wins_over_lab_env(release, tmp_path):
    (tmp_path / ".env").write_text("WEB__TOKEN=abc\nWEB__TAG=9.9\n")
    write_wrapper(tmp_path, "lab-x", release, gpu=False)
    assert "busybox:9.9" in Project(name="lab-x", install_dir=tmp_path).run("config").stdout


def test_the_wrapper_quotes_its_values_and_marks_the_gpu_override(tmp_path):
    text = render_wrapper("lab-x", "releases/1.0.0+build.1", gpu=True)
    assert 'path: ["releases/1.0.0+build.1/compose.yaml", "releases/1.0.0+build.1/compose.gpu.yaml"]' in text
    assert 'env_file: ["releases/1.0.0+build.1/lab.env", ".env"]' in text and 'name: "lab-x"' in text
    (tmp_path / "compose.yaml").write_text(text)
    assert wrapper_gpu(tmp_path)
    (tmp_path / "compose.yaml").write_text(render_wrapper("lab-x", "releases/1.0.0", gpu=False))
    assert not wrapper_gpu(tmp_path) and not wrapper_gpu(tmp_path / "nowhere")


def test_the_gpu_override_merges_over_the_release(release, tmp_path):
    (tmp_path / ".env").write_text("WEB__TOKEN=abc\n")
    (release / "compose.gpu.yaml").write_text(
        "services:\n  web:\n    deploy:\n      resources:\n        reservations:\n          devices:\n"
        "            - {driver: nvidia, count: all, capabilities: [gpu]}\n")
    write_wrapper(tmp_path, "lab-x", release, gpu=True)
    out = Project(name="lab-x", install_dir=tmp_path).run("config").stdout
    assert "driver: nvidia" in out and "busybox:1.36" in out


def test_a_failing_compose_reaches_the_caller_in_compose_s_words(release, tmp_path):
    (tmp_path / ".env").write_text("")
    write_wrapper(tmp_path, "lab-x", release, gpu=False)
    project = Project(name="lab-x", install_dir=tmp_path)
    try:
        proc = project.run("config")
    except InstallError as err:          # a compose that exits non-zero on failure
        assert "secret" in err.message and err.hint
    else:                                # the PyPI wrapper exits 0 even then (DESIGN.md): its words are kept
        assert "secret" in proc.stderr and "TOKEN" not in proc.stdout


def test_hints_follow_compose_s_message():
    assert "host port" in hint_for("Bind for 0.0.0.0:80 failed: port is already allocated")
    assert "--with-images" in hint_for("pull access denied for x")
    assert "compose's message" in hint_for("something else")


def test_an_operator_s_own_compose_yaml_in_dir_is_refused_not_overwritten(tmp_path):
    from builder.host.labdir import preflight
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    with pytest.raises(InstallError) as exc:
        preflight(tmp_path)
    assert "not written by labbuild" in exc.value.message
    (tmp_path / "compose.yaml").write_text(render_wrapper("lab-x", "releases/1.0.0", gpu=False))
    preflight(tmp_path)
