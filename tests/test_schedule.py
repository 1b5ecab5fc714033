"""The cron line and systemd units of automatic rotation (builder.schedule), checked against their
consumers: sh (after cron's own % handling), systemd-analyze, and a CommonMark renderer."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from builder.schedule import rotation_schedule

NASTY = ["/srv/lab", "/srv/my lab/it's \"quoted\" $HOME `id` %d %% \\n ; rm -rf x #c", "/srv/```fence````/ü"]


def _stub(tmp_path: Path) -> Path:
    """A labbuild that prints its argv, one per line (what cron's sh or systemd would start)."""
    stub = tmp_path / "bin dir %x" / "labbuild"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    return stub


def _cron_to_sh(line: str) -> str:
    """What cron (crontab(5)) hands /bin/sh -c: the command after the 5 time fields and the user,
    cut at the first unescaped %, with \\% turned into %."""
    command = line.rstrip("\n").split(" ", 6)[6]
    out, i = "", 0
    while i < len(command):
        if command.startswith("\\%", i):
            out, i = out + "%", i + 2
        elif command[i] == "%":
            break
        else:
            out, i = out + command[i], i + 1
    return out


@pytest.mark.parametrize("install_dir", NASTY)
def test_the_cron_line_gives_labbuild_exactly_its_arguments(tmp_path, install_dir):
    stub = _stub(tmp_path)
    plan = rotation_schedule(install_dir, "local-ai-lab", str(stub))
    assert plan.cron.startswith("17 3 * * * root ") and plan.cron.count("\n") == 1
    command = _cron_to_sh(plan.cron).replace(" >>/var/log/local-ai-lab-secrets.log 2>&1", "")
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True)
    assert proc.stdout.split("\n")[:-1] == ["secrets", "rotate", "--due", "--dir", install_dir]


@pytest.mark.parametrize("install_dir", NASTY)
def test_the_systemd_units_verify_and_execstart_unquotes_to_the_arguments(tmp_path, install_dir):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)")
    stub = _stub(tmp_path)
    plan = rotation_schedule(install_dir, "local-ai-lab", str(stub))
    units = tmp_path / "units"
    units.mkdir()
    (units / f"{plan.unit}.service").write_text(plan.service)
    (units / f"{plan.unit}.timer").write_text(plan.timer)
    proc = subprocess.run([analyze, "verify", "--man=no", str(units / f"{plan.unit}.service"),
                           str(units / f"{plan.unit}.timer")], capture_output=True, text=True,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in proc.stderr.splitlines() if plan.unit in line or "ExecStart" in line]
    assert not problems, proc.stderr
    # systemd.service(5) "Command lines": double-quoted words, C escapes; systemd.unit(5): %% is %;
    # $$ is $. Undo exactly that and compare with what was asked for.
    (exec_line,) = [line for line in plan.service.splitlines() if line.startswith("ExecStart=")]
    words = _systemd_words(exec_line.removeprefix("ExecStart="))
    assert words == [str(stub), "secrets", "rotate", "--due", "--dir", install_dir]


def _systemd_words(text: str) -> list[str]:
    words, i = [], 0
    while i < len(text):
        assert text[i] == '"', text[i:]
        i, word = i + 1, ""
        while text[i] != '"':
            if text[i] == "\\":
                word, i = word + text[i + 1], i + 2
            elif text[i] in "%$":
                assert text[i + 1] == text[i], "a lone % or $ would be a specifier or a variable"
                word, i = word + text[i], i + 2
            else:
                word, i = word + text[i], i + 1
        words.append(word)
        i += 1
        if i < len(text):
            assert text[i] == " "
            i += 1
    return words


@pytest.mark.parametrize("install_dir", NASTY)
def test_the_markdown_renders_each_file_verbatim(install_dir):
    plan = rotation_schedule(install_dir, "local-ai-lab")
    tokens = MarkdownIt("commonmark").parse(plan.markdown())
    blocks = [t.content for t in tokens if t.type == "fence"]
    assert blocks == [plan.cron, plan.service, plan.timer]


def test_control_characters_and_relative_paths_are_refused():
    for bad in ("/srv/a\nb", "relative/dir"):
        with pytest.raises(ValueError, match="control character|not absolute"):
            rotation_schedule(bad, "lab")


def test_the_bundle_runbook_shows_both_and_the_command_prints_them_for_a_real_dir(tmp_path, capsys):
    import json

    from builder.blueprint import load_lab
    from builder.cli import main
    from builder.render.runbooks import render_runbooks
    from test_catalog import REPO, _ri
    from test_secrets import DECIDED_WEB, fake_install

    readme = render_runbooks(_ri(load_lab(REPO), "phase4"))["runbooks/README.md"]
    assert "## Rotating secrets on a schedule" in readme
    assert "17 3 * * * root /usr/local/bin/labbuild secrets rotate --due --dir /srv/local-ai-lab" in readme
    assert 'ExecStart="/usr/local/bin/labbuild" "secrets" "rotate" "--due" "--dir" "/srv/local-ai-lab"' in readme
    assert "OnCalendar=daily" in readme and "labbuild secrets schedule --dir DIR" in readme

    inst = fake_install(tmp_path / "my lab's %dir", "", web=DECIDED_WEB)
    assert main(["--json", "secrets", "schedule", "--dir", str(inst), "--labbuild", "/opt/lb/bin/labbuild"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cron"] == rotation_schedule(str(inst.resolve()), "testlab", "/opt/lb/bin/labbuild").cron
    assert data["service"]["name"] == "testlab-secrets-rotate.service" and "\\%" in data["cron"]
    assert main(["secrets", "schedule", "--dir", str(inst), "--labbuild", "bin/labbuild"]) == 1
    assert "not absolute" in capsys.readouterr().err
