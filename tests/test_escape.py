"""builder.escape against the real consumers: arbitrary strings are read back exactly by
compose's --env-file parser, by dash and busybox sourcing lab.env, by a CommonMark
renderer, by YAML and JSON parsers — or they are refused."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from builder.escape import (env_value, env_value_problem, markdown_block, markdown_text, markdown_text_plain,
                            parse_env_file)
from builder.fsutil import canonical_json
from builder.render.text import dump_yaml
from test_render import compose_bin

# Every character class that ever broke a quoting scheme, plus arbitrary unicode.
TRICKY = st.sampled_from(list("'\"`$\\#=;&|<>(){}[]*?!~ \t\n\r\x00\x1b\x7f\u2028\x1e") + ["${X}", "$(id)", "\\n"])
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=3)), max_size=12).map("".join)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _shells() -> list[list[str]]:
    shells = [["dash"]] if shutil.which("dash") else []
    busybox = shutil.which("busybox") or ("/bin/busybox" if shutil.which("/bin/busybox") else None)
    if busybox:
        shells.append([busybox, "sh"])
    if not shells:
        pytest.fail("neither dash nor busybox is installed (scripts/bootstrap.sh installs them)")
    return shells


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=8))
@example(["\\", "a\\", "\\'", "it's", "$HOME", "`id`"])      # compose reads '\' as an unterminated value
def test_env_values_read_back_exactly_by_compose_and_sh_or_are_refused(tmp_path_factory, values):
    tmp = tmp_path_factory.mktemp("env")
    kept = [v for v in values if env_value_problem(v) is None]
    for v in values:
        if env_value_problem(v) is not None:
            with pytest.raises(ValueError):
                env_value(v)
    if not kept:
        return
    text = "".join(f"V{i}={env_value(v)}\n" for i, v in enumerate(kept))
    (tmp / "lab.env").write_text(text)
    assert parse_env_file(text) == {f"V{i}": v for i, v in enumerate(kept)}
    env = "".join(f"      V{i}: ${{V{i}}}\n" for i in range(len(kept)))
    (tmp / "compose.yaml").write_text(f"services:\n  a:\n    image: busybox\n    environment:\n{env}")
    proc = subprocess.run([compose_bin(), "--env-file", "lab.env", "-f", "compose.yaml", "config", "--format", "json"],
                          cwd=tmp, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["services"]["a"]["environment"]
    assert [got[f"V{i}"].replace("$$", "$") for i in range(len(kept))] == kept
    script = ". ./lab.env; " + " ".join(f'printf "%s\\0" "$V{i}";' for i in range(len(kept)))
    for shell in _shells():
        out = subprocess.run([*shell, "-c", script], cwd=tmp, capture_output=True, check=True).stdout
        assert out.decode("utf-8").split("\0")[:-1] == kept, shell


def test_refused_env_values_name_the_reason():
    assert "control character" in env_value_problem("a\nb")
    assert "together with `" in env_value_problem("it's `id`") and "together with `" in env_value_problem("a\\b`c`")
    assert env_value_problem("it's $HOME") is None and env_value_problem("`id`") is None


_MD = MarkdownIt("commonmark").enable("table")


def _rendered_text(source: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", _MD.render(source))).strip()


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_markdown_text_renders_as_the_text(value):
    expected = re.sub(r"[\x00-\x1f\x7f]", " ", value).strip()
    source = markdown_text(value)
    assert "\n" not in source
    # CommonMark replaces NUL by U+FFFD and a paragraph keeps inner spaces: compare what a reader sees
    assert _rendered_text(source).replace("\ufffd", " ") == expected


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_markdown_text_plain_gives_the_text_back(value):
    assert markdown_text_plain(markdown_text(value)) == re.sub(r"[\x00-\x1f\x7f]", " ", value).strip()


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=4))
def test_markdown_blocks_keep_their_lines(lines):
    expected = [re.sub(r"[\x00-\x1f\x7f]", " ", line).strip() for line in "\n".join(lines).split("\n")]
    got = _rendered_text(markdown_block("\n".join(lines))).replace("\ufffd", " ").split("\n")
    assert [g.strip() for g in got if g.strip()] == [e for e in expected if e]


def test_markdown_table_cells_stay_in_their_cell():
    row = f"| {markdown_text('a | b')} | {markdown_text('c')} |"
    html_out = _MD.render(f"| x | y |\n|---|---|\n{row}\n")
    assert html_out.count("<td>") == 2 and "a | b" in html.unescape(html_out)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TEXT, TEXT, max_size=5))
def test_yaml_and_json_writers_round_trip(data):
    assert yaml.safe_load(dump_yaml(data)) == (data or {}) or (data == {} and yaml.safe_load(dump_yaml(data)) is None)
    assert json.loads(canonical_json(data)) == data
