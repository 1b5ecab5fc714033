"""Projects behind the front door (issue 23): every shipped ``[front_door]`` says what a lab project
is in that service and what it isolates; the bundle's runbooks/README.md carries that as a table
when the door is on, every cell escaped and parsed back by a real CommonMark parser (markdown-it-py
with its GFM table rule); bundles without the door do not change."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from builder.blueprint import FrontDoorProjects, validate_paths
from builder.render import render_text_files
from builder.render.runbooks import PROJECTS_HEADING
from test_door import _ri, lab  # noqa: F401  (the shipped lab, module-scoped, and its release input)

REPO = Path(__file__).resolve().parents[1]
HEADER = ["service", "sign-in", "roles", "what a project is there", "isolation"]
HOSTILE = ("a | b \\| c\nd\r\n# not a heading <script>x</script> `code|pipe` **bold** [l](http://x) &amp; "
           "1. list - item ---|--- \t end\\")


def _projects_table(readme: str) -> list[list[str]]:
    """The rows of the table under the projects heading, as a reader sees each cell (text only)."""
    section = readme.split(PROJECTS_HEADING, 1)[1].split("\n## ", 1)[0]
    tokens = MarkdownIt("commonmark").enable("table").parse(section)
    rows: list[list[str]] = []
    for i, tok in enumerate(tokens):
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            text = "".join(c.content for c in (tok.children or []) if c.type in ("text", "code_inline"))
            rows[-1].append(text)
    assert sum(t.type == "table_open" for t in tokens) == 1
    return rows


def _seen(value: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", value).strip()


def test_every_shipped_front_door_says_what_a_project_is_there(lab) -> None:
    doors = {n: bp.front_door for n, bp in lab.services.items() if bp.front_door is not None}
    assert len(doors) >= 14
    missing = sorted(n for n, fd in doors.items() if fd.projects is None)
    assert not missing, f"[front_door.projects] missing in: {', '.join(missing)}"
    for name, fd in doors.items():
        text = (REPO / "blueprints" / "services" / f"{name}.toml").read_text("utf-8")
        head = text.index("[front_door.projects]")
        above = text[:head].rstrip("\n").split("\n")[-3:]
        assert above[-1].startswith("#") and any(line.startswith("# What a lab project") for line in above), \
            f"{name}: cite the page in a comment right above [front_door.projects]"


def test_the_readme_has_one_row_per_ui_with_five_cells(lab) -> None:
    files = render_text_files(_ri(lab, "phase4"))
    rows = _projects_table(files["runbooks/README.md"])
    assert rows[0] == HEADER
    uis = {n: bp.front_door for n, bp in lab.services.items()
           if bp.front_door is not None and n in lab.profile_closure("phase4")}
    body = {r[0]: r for r in rows[1:]}
    assert sorted(body) == sorted(uis) and all(len(r) == 5 for r in rows)
    for name, fd in uis.items():
        assert body[name][1] == ("OpenID Connect" if fd.sign_in == "oidc" else "forward-auth")
        assert body[name][2] == ", ".join(fd.roles)
        assert body[name][3:] == [fd.projects.what, fd.projects.isolation]
    provider = files[f"runbooks/{lab.access.provider}.md"]
    assert "README.md#projects-what-each-service-isolates" in provider


def test_a_hostile_value_stays_in_its_cell(lab) -> None:
    name = "grafana"
    bp = lab.services[name]
    hostile = replace(bp, front_door=replace(bp.front_door, projects=FrontDoorProjects(what=HOSTILE,
                                                                                      isolation="| x |\n|---|")))
    rows = _projects_table(render_text_files(_ri(replace(lab, services={**lab.services, name: hostile}),
                                                 "phase4"))["runbooks/README.md"])
    assert all(len(r) == 5 for r in rows), [r for r in rows if len(r) != 5]
    row = next(r for r in rows if r[0] == name)
    assert row[3:] == [_seen(HOSTILE), "| x | |---|"]
    assert len(rows) == 1 + sum(1 for n, bp in lab.services.items()
                                if bp.front_door is not None and n in lab.profile_closure("phase4"))


def test_bundles_without_the_door_do_not_change(lab) -> None:
    bare = replace(lab, services={n: replace(bp, front_door=replace(bp.front_door, projects=None))
                                  if bp.front_door is not None else bp for n, bp in lab.services.items()})
    for profile in ("base", "phase1", "phase2", "phase3"):
        files = render_text_files(_ri(lab, profile))
        assert PROJECTS_HEADING not in files["runbooks/README.md"], profile
        assert files == render_text_files(_ri(bare, profile)), profile


@pytest.mark.parametrize("value, expected", [
    ('what = "one\\ntwo"', "front_door.projects.what"),
    ('what = ""', "front_door.projects.what"),
    ('wat = "x"', "front_door.projects"),
])
def test_a_bad_projects_table_is_refused_with_file_and_key(lab_copy, value, expected) -> None:
    path = lab_copy / "blueprints" / "services" / "n8n.toml"
    text = path.read_text("utf-8")
    old = next(line for line in text.splitlines() if line.startswith("what = "))
    path.write_text(text.replace(old, value, 1))
    problems = [f"{p.file}: {p.path}" for p in validate_paths(lab_copy)]
    assert any(p.startswith("blueprints/services/n8n.toml: " + expected) for p in problems), problems
