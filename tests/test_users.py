"""`labbuild users` (issue 23) on a real install dir: round trips through the provider's user file
(Authelia 4.39's published schema, argon2id digests checked with the reference implementation),
refusals that change nothing, --json shapes, help texts and the audit trail.

The install dir is the one `test_secrets.fake_install` makes (a rendered release under
DIR/releases/1.0.0, DIR/current, DIR/.env) with the front door's access/lab.json added by hand in
the contract's shape. The provider's reload is tested in ``test_users_reload.py``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

import argon2
import jsonschema
import pytest
import yaml
from test_secrets import fake_install

from builder.cli import main

SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "authelia-4.39"
SCHEMA_FILE = SCHEMAS / "user-database.json"
ACCESS = {"domain": "lab.localhost", "provider": "authelia",
          "roles": {"admin": "Runs the lab", "analyst": "Builds and inspects", "user": "Uses the chat"},
          "projects": {"default": "Everyone's shared workspace", "alpha": "Team alpha"},
          "services": {"node-red": {"description": "Flows", "url": "https://node-red.lab.localhost/",
                                    "roles": ["admin", "analyst"], "sign_in": "oidc",
                                    "runbook": "runbooks/node-red.md"}}}


def door_install(tmp_path: Path, access: dict | None = ACCESS) -> Path:
    """A real install dir whose current release has the front door on (access/lab.json)."""
    inst = fake_install(tmp_path, "A__KEY=1\n")
    if access is not None:
        (inst / "current" / "access").mkdir()
        (inst / "current" / "access" / "lab.json").write_text(json.dumps(access, indent=2, sort_keys=True) + "\n")
    return inst


def run(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        import io
        import sys

        class _Stdin(io.TextIOWrapper):
            def isatty(self) -> bool:
                return False

        monkeypatch.setattr(sys, "stdin", _Stdin(io.BytesIO(stdin.encode())))
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def users_file(inst: Path) -> dict:
    return yaml.safe_load((inst / "access" / "users_database.yml").read_text())


def audit_lines(inst: Path) -> list[dict]:
    path = inst / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def inst(tmp_path, monkeypatch) -> Path:
    """A door install; writes are not spaced for the provider's reload (one test checks the spacing)."""
    import builder.host.userdb as userdb

    monkeypatch.setattr(userdb, "RELOAD_SPACING", 0.0)
    return door_install(tmp_path)


@pytest.fixture
def schema() -> dict:
    if not SCHEMA_FILE.exists():
        pytest.skip(f"{SCHEMA_FILE} is absent (clean clone without ../shared): nothing to validate against")
    return json.loads(SCHEMA_FILE.read_text())


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def check_digest(digest: str, password: str) -> None:
    """``digest`` is Authelia's default argon2id PHC string for ``password``: verified by the
    reference implementation (argon2-cffi's libargon2), and recomputed from its salt by the raw API."""
    m = re.fullmatch(r"\$argon2id\$v=19\$m=65536,t=3,p=4\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)", digest)
    assert m, digest
    salt, key = _b64(m.group(1)), _b64(m.group(2))
    assert (len(salt), len(key)) == (16, 32)
    assert argon2.PasswordHasher().verify(digest, password)
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        argon2.PasswordHasher().verify(digest, password + "x")
    raw = argon2.low_level.hash_secret_raw(password.encode(), salt, time_cost=3, memory_cost=65536, parallelism=4,
                                           hash_len=32, type=argon2.low_level.Type.ID)
    assert raw == key


# --------------------------------------------------------------------------- round trips

def test_add_set_disable_enable_passwd_remove_round_trip(inst, schema, capsys, monkeypatch):
    rc, out, err = run(capsys, "--json", "users", "add", "root", "--role", "admin", "--dir", str(inst))
    assert rc == 0, err
    data = json.loads(out)
    assert data["ok"] and data["action"] == "add" and data["password_generated"] and data["changed"]
    assert data["user"] == {"name": "root", "displayname": "root", "email": "", "role": "admin", "projects": [],
                            "groups": ["admin"], "disabled": False}
    root_pw = data["password"]
    assert len(root_pw) >= 20 and data["reload"] == "watch"
    path = inst / "access" / "users_database.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    check_digest(users_file(inst)["users"]["root"]["password"], root_pw)

    rc, out, err = run(capsys, "users", "add", "alice", "--role", "analyst", "--project", "default", "--project",
                       "alpha", "--email", "alice@example.org", "--display-name", "Alice A.", "--password-stdin",
                       "--dir", str(inst), stdin="correct horse battery\n", monkeypatch=monkeypatch)
    assert rc == 0, err
    assert out == "" and "added alice: role analyst, projects default, alpha" in err   # no password shown
    db = users_file(inst)
    jsonschema.validate(db, schema)
    alice = db["users"]["alice"]
    assert (alice["displayname"], alice["email"], alice["groups"], alice["disabled"]) == (
        "Alice A.", "alice@example.org", ["analyst", "default", "alpha"], False)
    check_digest(alice["password"], "correct horse battery")

    assert run(capsys, "users", "set", "alice", "--role", "user", "--project", "default", "--dir", str(inst))[0] == 0
    assert users_file(inst)["users"]["alice"]["groups"] == ["user", "default"]
    rc, out, err = run(capsys, "--json", "users", "set", "alice", "--role", "user", "--dir", str(inst))
    assert rc == 0 and json.loads(out)["changed"] is False and "nothing changed" in err     # no write, no entry
    assert run(capsys, "users", "set", "alice", "--no-projects", "--dir", str(inst))[0] == 0
    assert users_file(inst)["users"]["alice"]["groups"] == ["user"]
    assert run(capsys, "users", "disable", "alice", "--dir", str(inst))[0] == 0
    assert users_file(inst)["users"]["alice"]["disabled"] is True
    rc, out, _ = run(capsys, "--json", "users", "enable", "alice", "--dir", str(inst))
    assert rc == 0 and json.loads(out)["user"]["disabled"] is False

    rc, out, err = run(capsys, "users", "passwd", "alice", "--dir", str(inst))     # generated: stdout, once
    assert rc == 0 and "shown once" in err
    new_pw = out.strip()
    check_digest(users_file(inst)["users"]["alice"]["password"], new_pw)
    assert new_pw not in err

    rc, out, _ = run(capsys, "--json", "users", "list", "--dir", str(inst))
    listed = json.loads(out)
    assert [u["name"] for u in listed["users"]] == ["root", "alice"]
    assert "argon2" not in out and "password" not in out          # never a hash
    rc, text, _ = run(capsys, "users", "list", "--dir", str(inst))
    assert rc == 0 and "alice" in text and "argon2" not in text

    rc, out, _ = run(capsys, "--json", "users", "remove", "alice", "--dir", str(inst))
    assert rc == 0 and json.loads(out)["user"]["name"] == "alice"
    assert list(users_file(inst)["users"]) == ["root"]
    jsonschema.validate(users_file(inst), schema)
    assert [p.name for p in path.parent.iterdir()] == ["users_database.yml"]     # no temp file left

    entries = audit_lines(inst)
    assert [e["command"] for e in entries] == ["users add", "users add", "users set", "users set", "users disable",
                                               "users enable", "users passwd", "users remove"]
    assert all(e["outcome"] == "ok" and e["services"] == ["authelia"] for e in entries)
    log = (inst / "audit.log").read_text()
    assert "argon2" not in log and root_pw not in log and new_pw not in log and "correct horse" not in log
    assert "user alice: role analyst; projects default, alpha" in log


def test_hand_edits_and_free_text_survive_the_round_trip(inst, schema, capsys):
    hand = {"users": {"hand": {"displayname": "By Hand", "password": argon2.PasswordHasher().hash("p4ssword!"),
                               "email": "hand@example.org", "groups": ["user", "ops"], "disabled": False,
                               "given_name": "Hand", "extra": {"team": "ops"}}}}
    (inst / "access").mkdir()
    (inst / "access" / "users_database.yml").write_text("# an operator's comment\n" + yaml.safe_dump(hand))
    hostile = ['Zoë "quoted" \'single\' & <b>', "yes", "null", "#not a comment", ": colon", "- dash", "1e3",
               "  leading", "{flow}", "*alias", "!tag", "%percent", "@at", "`tick`"]
    for i, name in enumerate(hostile):
        rc, _, err = run(capsys, "users", "add", f"u{i}", "--role", "user", "--display-name", name,
                         "--dir", str(inst))
        assert rc == 0, err
    rc, _, err = run(capsys, "users", "set", "hand", "--role", "analyst", "--project", "alpha", "--dir", str(inst))
    assert rc == 0, err
    db = users_file(inst)
    jsonschema.validate(db, schema)
    assert [db["users"][f"u{i}"]["displayname"] for i in range(len(hostile))] == hostile
    kept = db["users"]["hand"]
    assert kept["groups"] == ["analyst", "alpha", "ops"]          # the hand-made group "ops" is kept
    assert (kept["given_name"], kept["extra"], kept["password"]) == ("Hand", {"team": "ops"},
                                                                     hand["users"]["hand"]["password"])
    assert list(db["users"])[0] == "hand"                         # file order kept, new users appended


def test_two_quick_changes_are_spaced_for_the_providers_reload_cooldown(tmp_path, capsys):
    from builder.host.userdb import RELOAD_SPACING

    inst = door_install(tmp_path)
    path = inst / "access" / "users_database.yml"
    assert run(capsys, "users", "add", "root", "--role", "admin", "--dir", str(inst))[0] == 0
    first = path.stat().st_mtime
    assert run(capsys, "users", "add", "bob", "--role", "user", "--dir", str(inst))[0] == 0
    assert path.stat().st_mtime - first >= RELOAD_SPACING - 0.01


# --------------------------------------------------------------------------- refusals

def _refused(capsys, inst: Path, *args: str, expect: str) -> str:
    path = inst / "access" / "users_database.yml"
    before = path.read_bytes() if path.exists() else None
    log_before = audit_lines(inst)
    rc, out, err = run(capsys, *args, "--dir", str(inst))
    assert rc == 1, (out, err)
    assert expect in err, err
    assert "Traceback" not in err + out
    assert (path.read_bytes() if path.exists() else None) == before          # nothing written
    assert audit_lines(inst) == log_before                                 # nothing to record
    return err


@pytest.mark.parametrize("name", ["Bob", "1abc", "a b", "a@b.org", "ä", "x" * 33, ".x", "a/b", "a:b"])
def test_bad_user_names_are_refused(inst, capsys, name):
    err = _refused(capsys, inst, "users", "add", name, "--role", "user", expect="is not a user name")
    assert "lowercase" in err


def test_unknown_roles_and_projects_are_named_with_the_known_ones(inst, capsys):
    err = _refused(capsys, inst, "users", "add", "bob", "--role", "boss", expect="unknown role 'boss'")
    assert "admin, analyst, user" in err
    err = _refused(capsys, inst, "users", "add", "bob", "--role", "user", "--project", "nope", "--project", "zz",
                   "--project", "alpha", expect="unknown projects 'nope', 'zz'")
    assert "the projects are alpha, default" in err
    assert run(capsys, "users", "add", "bob", "--role", "user", "--dir", str(inst))[0] == 0
    _refused(capsys, inst, "users", "set", "bob", "--project", "nope", expect="unknown project 'nope'")


def test_duplicates_unknown_users_and_bad_text_are_refused(inst, capsys, monkeypatch):
    assert run(capsys, "users", "add", "bob", "--role", "user", "--email", "bob@example.org",
               "--dir", str(inst))[0] == 0
    _refused(capsys, inst, "users", "add", "bob", "--role", "user", expect="user 'bob' already exists")
    _refused(capsys, inst, "users", "add", "rob", "--role", "user", "--email", "BOB@example.org",
             expect="already 'bob''s")
    _refused(capsys, inst, "users", "remove", "carol", expect="no user 'carol'")
    _refused(capsys, inst, "users", "add", "carol", "--role", "user", "--display-name", "two\nlines",
             expect="control character")
    _refused(capsys, inst, "users", "add", "carol", "--role", "user", "--email", "not-an-email",
             expect="not an email address")
    _refused(capsys, inst, "users", "set", "bob", expect="nothing to change")
    path = inst / "access" / "users_database.yml"
    before = path.read_bytes()
    rc, _, err = run(capsys, "users", "passwd", "bob", "--password-stdin", "--dir", str(inst), stdin="short\n",
                     monkeypatch=monkeypatch)
    assert rc == 1 and "shorter than 8" in err and path.read_bytes() == before


def test_the_last_enabled_admin_cannot_be_removed_disabled_or_demoted(inst, capsys):
    assert run(capsys, "users", "add", "root", "--role", "admin", "--dir", str(inst))[0] == 0
    for args in (("remove", "root"), ("disable", "root"), ("set", "root", "--role", "user")):
        _refused(capsys, inst, "users", *args, expect="'root' is the last enabled admin")
    assert run(capsys, "users", "add", "ada", "--role", "admin", "--dir", str(inst))[0] == 0
    assert run(capsys, "users", "disable", "ada", "--dir", str(inst))[0] == 0     # root is still enabled
    _refused(capsys, inst, "users", "remove", "root", expect="last enabled admin")
    assert run(capsys, "users", "enable", "ada", "--dir", str(inst))[0] == 0
    assert run(capsys, "users", "remove", "root", "--dir", str(inst))[0] == 0


def test_a_release_without_front_door_and_a_broken_user_file_are_refused(tmp_path, capsys):
    plain = door_install(tmp_path / "plain", access=None)
    err = _refused(capsys, plain, "users", "add", "bob", "--role", "user", expect="has no front door")
    assert "identity provider" in err
    rc, _, err = run(capsys, "users", "add", "bob", "--role", "user", "--dir", str(tmp_path / "nowhere"))
    assert rc == 1 and "holds no installed lab" in err

    inst = door_install(tmp_path / "door")
    (inst / "access").mkdir()
    (inst / "access" / "users_database.yml").write_text("users:\n  bob: [unclosed\n")
    _refused(capsys, inst, "users", "add", "carol", "--role", "user", expect="users_database.yml:")
    (inst / "access" / "users_database.yml").write_text("users:\n  bob:\n    displayname: Bob\n")
    _refused(capsys, inst, "users", "add", "carol", "--role", "user", expect="users.bob.password: missing")
    rc, _, err = run(capsys, "users", "list", "--dir", str(inst))
    assert rc == 1 and "users.bob.password" in err and "Traceback" not in err


def test_a_command_holding_the_dir_lock_blocks_users(inst, capsys):
    from builder.host.labdir import dir_lock

    with dir_lock(inst):
        _refused(capsys, inst, "users", "add", "bob", "--role", "user", expect="another labbuild command")


def test_json_errors_and_help_texts(inst, capsys):
    rc, out, _ = run(capsys, "--json", "users", "add", "bob", "--role", "boss", "--dir", str(inst))
    assert rc == 1 and json.loads(out)["ok"] is False and "unknown role" in json.loads(out)["error"]
    rc, out, _ = run(capsys, "--json", "users", "add", "bob", "--dir", str(inst))           # usage: no --role
    assert rc == 2 and json.loads(out)["usage"] is True
    assert main(["users", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("add", "list", "set", "disable", "enable", "remove", "passwd", "users_database.yml", "audit.log"):
        assert word in text
    assert main(["users", "add", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--password-stdin" in text and "generated" in text and "--project" in text
    assert main(["--help"]) == 0 and "users" in capsys.readouterr().out


def test_the_user_file_is_written_through_a_temp_file_and_rename(inst, capsys, monkeypatch):
    """A failure between writing and renaming leaves the old file whole and an audit entry 'failed'."""
    import builder.fsutil as fsutil

    assert run(capsys, "users", "add", "root", "--role", "admin", "--dir", str(inst))[0] == 0
    path = inst / "access" / "users_database.yml"
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(fsutil.os, "replace", broken_replace)      # a fault the disk cannot make on demand
    rc, _, err = run(capsys, "users", "add", "bob", "--role", "user", "--dir", str(inst))
    monkeypatch.undo()
    assert rc == 1 and "No space left" in err and "Traceback" not in err
    assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == ["users_database.yml"]
    assert audit_lines(inst)[-1]["outcome"] == "failed" and audit_lines(inst)[-1]["command"] == "users add"


def test_the_last_user_stays_and_install_gets_a_first_admin(inst, schema, capsys):
    from builder.operate.users import ensure_first_admin

    assert run(capsys, "users", "add", "bob", "--role", "user", "--dir", str(inst))[0] == 0
    _refused(capsys, inst, "users", "remove", "bob", expect="the provider refuses a user file without users")
    assert ensure_first_admin(inst) is None                      # users exist: nothing to do

    fresh = door_install(inst.parent / "fresh")
    first = ensure_first_admin(fresh)
    assert first is not None and first.password and first.users[0].role == "admin"
    db = users_file(fresh)
    jsonschema.validate(db, schema)
    assert list(db["users"]) == ["admin"] and db["users"]["admin"]["groups"] == ["admin"]
    check_digest(db["users"]["admin"]["password"], first.password)
    assert audit_lines(fresh)[-1]["command"] == "users add"


def _go_reader(tmp_path: Path) -> Path:
    """tests/support/goyaml built against Debian's gopkg.in/yaml.v3 (skips or fails per the suite's policy)."""
    import subprocess

    from support.dockerenv import require_tool

    go = require_tool("go")
    gopath = Path("/usr/share/gocode")
    if not (gopath / "src" / "gopkg.in" / "yaml.v3").is_dir():
        require_tool("golang-gopkg-yaml.v3-dev (gopkg.in/yaml.v3 in /usr/share/gocode)")
    out = tmp_path / "goyaml"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(gopath), "GOCACHE": str(tmp_path / "gocache"),
           "GOFLAGS": ""}
    proc = subprocess.run([go, "build", "-o", str(out), "."], cwd=Path(__file__).parent / "support" / "goyaml",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_authelias_go_yaml_reader_reads_what_labbuild_wrote(inst, tmp_path, capsys):
    """The consumer of the user file is Go: every value labbuild wrote reads back the same there."""
    import subprocess

    reader = _go_reader(tmp_path)
    hostile = ['Zoë "q" \'s\' & <b>', "yes", "no", "on", "null", "~", "true", "1e3", "0o17", "0x1F", "#x", ": c",
               "- d", "  lead", "trail  ", "{f}", "[s]", "*a", "&a", "!t", "%p", "@a", "`t`", "a\\b", "é\u2028x"[:2]]
    for i, name in enumerate(hostile):
        rc, _, err = run(capsys, "users", "add", f"u{i}", "--role", "user", "--project", "alpha", "--display-name",
                         name, "--email", f"u{i}@example.org", "--dir", str(inst))
        assert rc == 0, err
    assert run(capsys, "users", "disable", "u1", "--dir", str(inst))[0] == 0
    proc = subprocess.run([str(reader), str(inst / "access" / "users_database.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    go_users = json.loads(proc.stdout)["users"]
    py_users = users_file(inst)["users"]
    assert sorted(go_users) == sorted(py_users)
    for name, details in py_users.items():
        for key in ("password", "displayname", "email", "groups", "disabled"):
            assert go_users[name][key] == details[key], (name, key)
    assert [go_users[f"u{i}"]["displayname"] for i in range(len(hostile))] == hostile
    assert go_users["u1"]["disabled"] is True and go_users["u0"]["groups"] == ["user", "alpha"]
