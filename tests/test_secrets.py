"""Secrets after install (issue 24): rotation decisions from blueprint to manifest.json, the
audit log, `labbuild secrets list` and what is due — the parts that need no engine
(tests/e2e/test_secrets_e2e.py rotates on the real one)."""

from __future__ import annotations

import pytest
from test_inputs import LITELLM, PROFILES, TUNNEL
from test_render import SERVICES, make_lab, release_input

from builder.errors import BundleError
from builder.format.manifest import Manifest, ManifestRotation

DECIDED_WEB = SERVICES["web"].replace('''
        [secrets.API_TOKEN]
        generate = "token"
        length = 40
''', '''
        [secrets.API_TOKEN]
        generate = "token"
        length = 40
        rotate = true
        rotate_days = 30
        [secrets.API_TOKEN.holder]
        exec = ["sh", "-c", "printf %s \\"$LAB_SECRET_NEW\\" > /data/token"]
        [secrets.DATA_KEY]
        generate = "hex"
        rotate = false
        rotate_reason = "the data volume is encrypted with it"
''')
assert "rotate_days" in DECIDED_WEB


def _services(tmp_path, **overrides):
    from builder.bundle.pack import manifest_services

    root = make_lab(tmp_path / "lab", services={"tunnel": TUNNEL}, profiles=PROFILES, **overrides)
    return manifest_services(release_input(root))


def _manifest(services) -> Manifest:
    return Manifest(lab="lab", name="lab-full-1.0.0", version="1.0.0", profile="full", inputs="i", labbuild="t",
                    offline=False, platforms=("linux/amd64",), services=services, files={})


# --------------------------------------------------------------------------- the bundle

def test_manifest_carries_decisions_only_for_decided_secrets(tmp_path):
    undecided = _manifest(_services(tmp_path / "a"))
    assert all(s.rotation == {} for s in undecided.services.values())
    assert all("rotation" not in s for s in undecided.to_json()["services"].values())   # old bundles keep their bytes

    decided = _manifest(_services(tmp_path / "b", web=DECIDED_WEB))
    web = decided.to_json()["services"]["web"]
    assert web["rotation"] == {
        "WEB__API_TOKEN": {"rotate": True, "days": 30,
                           "holder": ["sh", "-c", 'printf %s "$LAB_SECRET_NEW" > /data/token']},
        "WEB__DATA_KEY": {"rotate": False, "reason": "the data volume is encrypted with it"}}
    assert Manifest.loads(decided.dumps()) == decided
    assert decided.services["web"].rotation["WEB__DATA_KEY"] == ManifestRotation(
        rotate=False, reason="the data volume is encrypted with it")


@pytest.mark.parametrize("rotation, message", [
    ({"OTHER__KEY": {"rotate": True}}, "'OTHER__KEY' is not a secret of web"),
    ({"WEB__API_TOKEN": {"rotate": False}}, "a reason goes only with rotate false"),
    ({"WEB__API_TOKEN": {"rotate": True, "days": 0}}, "days: 0 is out of range"),
    ({"WEB__API_TOKEN": {"rotate": "yes"}}, "rotate: expected bool"),
    ({"WEB__API_TOKEN": {"rotate": True, "holder": "sh -c x"}}, "holder is not a list"),
])
def test_the_manifest_reader_refuses_what_validate_refuses(tmp_path, rotation, message):
    data = _manifest(_services(tmp_path)).to_json()
    data["services"]["web"]["rotation"] = rotation
    with pytest.raises(BundleError, match=r"services\.web") as exc:
        Manifest.from_json(data)
    assert message in exc.value.message


# --------------------------------------------------------------------------- the audit log

def test_audit_entries_are_appended_one_line_each_with_mode_0600_and_never_rewritten(tmp_path):
    import json
    import os
    import stat

    from builder.host.auditlog import read_entries, record

    first = record(tmp_path, "secrets rotate", ["B__KEY", "A__KEY"], ["b", "a"], detail="rotated 2 key(s)")
    log = tmp_path / "audit.log"
    before = log.read_bytes()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    os.chmod(log, 0o644)                                # a looser mode is tightened at the next append
    record(tmp_path, "install", ["C__KEY"], ["c"])
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert log.read_bytes().startswith(before)          # appended, the first line untouched
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == first.to_json()
    assert first.keys == ("A__KEY", "B__KEY") and first.services == ("a", "b") and first.outcome == "ok"
    assert first.time.endswith("Z") and first.user and first.host
    found = read_entries(tmp_path)
    assert [e.command for e in found.entries] == ["secrets rotate", "install"] and found.problems == []


def test_a_torn_last_line_is_reported_not_fatal_and_the_next_entry_starts_a_fresh_line(tmp_path):
    from builder.host.auditlog import read_entries, record

    record(tmp_path, "install", ["A__KEY"], ["a"])
    log = tmp_path / "audit.log"
    with open(log, "ab") as fh:                          # a crash in the middle of a write
        fh.write(b'{"command": "secrets rotate", "keys": ["A__K')
    found = read_entries(tmp_path)
    assert len(found.entries) == 1
    assert len(found.problems) == 1 and ":2: torn last line" in found.problems[0]
    record(tmp_path, "secrets set", ["A__KEY"], ["a"])
    found = read_entries(tmp_path)
    assert [e.command for e in found.entries] == ["install", "secrets set"]
    assert len(found.problems) == 1 and ":2: not an audit entry" in found.problems[0]


def test_the_audit_log_is_never_followed_through_a_link(tmp_path):
    from builder.errors import InstallError
    from builder.host.auditlog import read_entries, record

    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "audit.log").symlink_to(target)
    with pytest.raises(InstallError, match="audit.log: cannot open the audit log"):
        record(tmp_path, "install", [], [])
    with pytest.raises(InstallError, match="is not a regular file"):
        read_entries(tmp_path)
    assert target.read_text() == ""


def test_install_records_the_keys_it_generates_never_their_values(tmp_path):
    from builder.host.auditlog import read_entries
    from builder.install.secrets import write_secrets

    example = "# web: generate=token length=24\nWEB__API_TOKEN=\n# db: generate=hex length=32\nDB__PW=\n"
    added = write_secrets(tmp_path, example, ["WEB__API_TOKEN", "DB__PW"], owners={"DB__PW": "db"})
    assert added == ["DB__PW", "WEB__API_TOKEN"]
    [entry] = read_entries(tmp_path).entries
    assert (entry.command, entry.keys, entry.services, entry.outcome) == ("install", ("DB__PW", "WEB__API_TOKEN"),
                                                                           ("db", "web"), "ok")
    log = (tmp_path / "audit.log").read_text()
    for line in (tmp_path / ".env").read_text().splitlines():
        assert line.split("=", 1)[1] not in log
    assert write_secrets(tmp_path, example, ["WEB__API_TOKEN"]) == []       # nothing new: no entry
    assert len(read_entries(tmp_path).entries) == 1


def test_cli_audit_filters_by_time_and_reports_torn_lines(tmp_path, capsys):
    import datetime as dt
    import json

    from builder.cli import main
    from builder.host.auditlog import append_entry, new_entry

    old = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    append_entry(tmp_path, new_entry("install", ["A__KEY"], ["a"], now=old))
    append_entry(tmp_path, new_entry("secrets rotate", ["A__KEY"], ["a"], "rolled-back", detail="holder failed"))
    with open(tmp_path / "audit.log", "ab") as fh:
        fh.write(b"{\"torn")
    assert main(["--json", "audit", "--dir", str(tmp_path), "--since", "2026-06-01"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert [(e["command"], e["outcome"]) for e in data["entries"]] == [("secrets rotate", "rolled-back")]
    assert "torn last line" in data["problems"][0] and "warning:" in captured.err
    assert main(["audit", "--dir", str(tmp_path), "--since", "7d"]) == 0
    assert "secrets rotate: rolled-back  keys: A__KEY  services: a  (holder failed)" in capsys.readouterr().out
    assert main(["audit", "--dir", str(tmp_path), "--since", "soon"]) == 2


# --------------------------------------------------------------------------- secrets list

def fake_install(tmp_path, env: str, **overrides):
    """An install dir holding one rendered release (manifest, compose.yaml, secrets.env.example)
    of test_render's lab with ``overrides`` and DIR/.env = ``env`` — no engine needed."""
    from builder.bundle.pack import manifest_services
    from builder.render import render_text_files

    root = make_lab(tmp_path / "lab", services={"tunnel": TUNNEL}, profiles=PROFILES, **overrides)
    ri = release_input(root)
    inst = tmp_path / "inst"
    release = inst / "releases" / "1.0.0"
    release.mkdir(parents=True)
    for name, text in render_text_files(ri).items():
        (release / name).parent.mkdir(parents=True, exist_ok=True)
        (release / name).write_text(text)
    m = Manifest(lab="testlab", name="testlab-full-1.0.0", version="1.0.0", profile="full", inputs="i",
                 labbuild="t", offline=False, platforms=("linux/amd64",), services=manifest_services(ri), files={})
    (release / "manifest.json").write_bytes(m.dumps())
    (inst / "current").symlink_to("releases/1.0.0")
    (inst / ".env").write_text(env)
    return inst


def test_secrets_list_shows_services_kind_age_policy_and_due_never_a_value(tmp_path, capsys):
    import datetime as dt
    import json
    import os

    from builder.cli import main
    from builder.host.auditlog import append_entry, new_entry
    from builder.operate.secrets import list_secrets

    env = "WEB__API_TOKEN=tok-value-1\nWEB__DATA_KEY=datakey-value-2\nLITELLM__MASTER_KEY=sk-master-3\n"
    inst = fake_install(tmp_path, env, web=DECIDED_WEB, litellm=LITELLM)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    append_entry(inst, new_entry("install", ["WEB__API_TOKEN", "WEB__DATA_KEY"], ["web"],
                                 now=now - dt.timedelta(days=40)))
    append_entry(inst, new_entry("secrets rotate", ["WEB__DATA_KEY"], ["web"], "rolled-back",
                                 now=now - dt.timedelta(days=1)))            # rolled back: the value did not change
    mtime = (now - dt.timedelta(days=3)).timestamp()
    os.utime(inst / ".env", (mtime, mtime))

    report = list_secrets(inst, now=now)
    by_key = {s.key: s for s in report.secrets}
    token = by_key["WEB__API_TOKEN"]
    assert (token.owner, token.kind, token.set_by, token.age_source, round(token.age_days)) == (
        "web", "token", "install", "audit", 40)
    assert token.due and token.policy.days == 30 and report.due == [token]
    assert round(by_key["WEB__DATA_KEY"].age_days) == 40 and not by_key["WEB__DATA_KEY"].due
    assert by_key["WEB__DATA_KEY"].policy_text == "never: the data volume is encrypted with it"
    master = by_key["LITELLM__MASTER_KEY"]          # not in the log: at least as old as DIR/.env
    assert (master.age_source, round(master.age_days), master.policy) == ("env-mtime", 3, None)
    assert master.services == ("litellm", "prometheus")          # prometheus: its scrape credential
    tunnel = by_key["TUNNEL__TUNNEL_TOKEN"]
    assert (tunnel.kind, tunnel.present, tunnel.age_days) == ("supplied", False, None)

    assert main(["--json", "secrets", "list", "--dir", str(inst)]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["due"] == ["WEB__API_TOKEN"] and not data["interrupted_rotation"]
    assert main(["secrets", "list", "--dir", str(inst)]) == 0
    table = capsys.readouterr().out
    assert "rotate every 30 days, holder first" in table and "DUE" in table and ">=" in table
    for value in ("tok-value-1", "datakey-value-2", "sk-master-3"):
        assert value not in out and value not in table


def test_status_and_check_warn_about_what_is_due_and_an_interrupted_rotation(tmp_path):
    import datetime as dt

    from builder.host.auditlog import append_entry, new_entry
    from builder.operate.secrets import due_warnings

    inst = fake_install(tmp_path, "WEB__API_TOKEN=abc\nWEB__DATA_KEY=def\n", web=DECIDED_WEB)
    append_entry(inst, new_entry("install", ["WEB__API_TOKEN", "WEB__DATA_KEY"], ["web"]))
    assert due_warnings(inst) == []
    append_entry(inst, new_entry("restore --secrets", ["WEB__API_TOKEN"], ["web"],
                                 now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=-31)))
    assert due_warnings(inst) == []                     # the install after it set the value last
    (inst / "audit.log").unlink()
    append_entry(inst, new_entry("install", ["WEB__API_TOKEN"], ["web"],
                                 now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=31)))
    [warning] = due_warnings(inst)
    assert warning.startswith("WEB__API_TOKEN (web) is due for rotation: set 31 days ago, policy 30 days")
    assert f"labbuild secrets rotate --dir {inst} WEB__API_TOKEN" in warning
    (inst / ".secrets-journal.json").write_text("{}")
    assert "a rotation was interrupted" in due_warnings(inst)[1]


def test_install_and_rollback_refuse_while_a_rotation_is_unfinished(tmp_path):
    from builder.errors import InstallError
    from builder.install.apply import install_bundle, rollback

    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / ".secrets-journal.json").write_text("{}")
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(b"x")
    for run in (lambda: install_bundle(bundle, inst), lambda: rollback(inst)):
        with pytest.raises(InstallError, match="was interrupted") as exc:
            run()
        assert exc.value.hint == f"finish it first: labbuild secrets rotate --dir {inst}"
    assert sorted(p.name for p in inst.iterdir()) == [".secrets-journal.json"]


def test_the_journal_reader_names_the_file_when_it_is_damaged(tmp_path):
    from builder.errors import InstallError
    from builder.operate.rotate import Change, read_journal, write_journal

    path = tmp_path / ".secrets-journal.json"
    changes = [Change("WEB__API_TOKEN", "web", "old-raw", "new value", ("sh", "-c", "x"))]
    write_journal(path, "secrets rotate", "apply", changes)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_journal(path) == ("secrets rotate", "apply", changes)
    path.write_text('{"format": 1, "phase": "sideways"}')
    with pytest.raises(InstallError, match=r"\.secrets-journal\.json: cannot read the journal"):
        read_journal(path)


def test_holder_output_is_shown_with_every_value_masked():
    from builder.operate.rotate import MASK, Change, mask

    c = Change("K", "web", "'old value'", "new-value-123")
    assert mask("set old value -> new-value-123 ('old value')", [c]) == f"set {MASK} -> {MASK} ({MASK})"


def test_due_is_exactly_the_keys_whose_rotate_days_have_passed(tmp_path):
    """What `secrets rotate --due` rotates (builder.operate.rotate takes list_secrets().due, minus supplied
    keys): a key with rotate_days past, not one still inside its period, never one without rotate_days
    or with rotate = false, whatever their age."""
    import datetime as dt

    from builder.host.auditlog import append_entry, new_entry
    from builder.operate.secrets import list_secrets

    web = DECIDED_WEB.replace('''        [secrets.DATA_KEY]''', '''        [secrets.SOON]
        generate = "hex"
        rotate = true
        rotate_days = 90
        [secrets.FREE]
        generate = "hex"
        rotate = true
        [secrets.DATA_KEY]''')
    keys = ["WEB__API_TOKEN", "WEB__DATA_KEY", "WEB__FREE", "WEB__SOON"]
    inst = fake_install(tmp_path, "".join(f"{k}=value-{i}-abcdef\n" for i, k in enumerate(keys)), web=web)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    append_entry(inst, new_entry("install", keys, ["web"], now=now - dt.timedelta(days=40)))
    assert [s.key for s in list_secrets(inst, now=now).due] == ["WEB__API_TOKEN"]
    later = now + dt.timedelta(days=60)                                 # 100 days after install
    assert [s.key for s in list_secrets(inst, now=later).due] == ["WEB__API_TOKEN", "WEB__SOON"]
    append_entry(inst, new_entry("secrets rotate", ["WEB__API_TOKEN"], ["web"], now=later - dt.timedelta(days=1)))
    assert [s.key for s in list_secrets(inst, now=later).due] == ["WEB__SOON"]
    append_entry(inst, new_entry("secrets rotate", ["WEB__SOON"], ["web"], "rolled-back", now=later))
    assert [s.key for s in list_secrets(inst, now=later).due] == ["WEB__SOON"]     # a rollback set nothing
