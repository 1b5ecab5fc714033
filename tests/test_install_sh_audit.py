"""install.sh's entry in DIR/audit.log when it generates secrets: the same JSON line format as
labbuild's builder/host/auditlog.py (both parse identically; for ASCII fields the bytes are equal),
appended, 0600, after a torn last line, never a value — under dash and busybox sh."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from builder.host.auditlog import AuditEntry, new_entry, read_entries
from test_install_sh import SCRIPT, SHELLS, bundle_dir  # noqa: F401 (fixture)

# install.sh's audit functions, from `AUDIT=` up to the secrets loop
FUNCS = re.search(r'\nAUDIT="\$DIR/audit\.log"\n(.*?)\nif \[ -f secrets\.env\.example \]', SCRIPT, re.S).group(1)


def run_append(shell, tmp_path, command: str, keys: str, services: str, detail: str, env=None):
    prog = ('set -eu\ndie() { printf "error: %s\\nhint: %s\\n" "$1" "$2" >&2; exit 1; }\n'
            f'DIR="$1"\nAUDIT="$DIR/audit.log"\n{FUNCS}\naudit_append "$2" "$3" "$4" "$5"\n')
    return subprocess.run([*shell, "-c", prog, "sh", str(tmp_path), command, keys, services, detail],
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_the_shell_entry_parses_like_and_equals_labbuilds(shell, tmp_path):
    detail = 'generated 2 secret(s) into .env "quoted" \\ back'
    p = run_append(shell, tmp_path, "install", "WEB__B WEB__A WEB__A", "web api web", detail)
    assert p.returncode == 0, p.stderr
    raw = (tmp_path / "audit.log").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert oct((tmp_path / "audit.log").stat().st_mode & 0o777) == "0o600"
    ours = AuditEntry.from_json(json.loads(raw))
    theirs = new_entry("install", ["WEB__B", "WEB__A"], ["web", "api"], detail=detail)
    assert ours.moment.tzinfo is not None and abs((ours.moment - theirs.moment).total_seconds()) < 60
    theirs = AuditEntry(**{**theirs.__dict__, "time": ours.time})
    assert ours == theirs
    assert raw == json.dumps(theirs.to_json(), sort_keys=True).encode() + b"\n"     # byte for byte
    (entry,) = read_entries(tmp_path).entries
    assert entry == theirs


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_a_torn_last_line_is_closed_off_and_a_symlink_refused(shell, tmp_path):
    (tmp_path / "audit.log").write_text('{"command": "install", "ti')       # a crash cut it short
    p = run_append(shell, tmp_path, "install", "A__K", "a", "generated 1 secret(s) into .env")
    assert p.returncode == 0, p.stderr
    found = read_entries(tmp_path)
    assert [e.keys for e in found.entries] == [("A__K",)] and len(found.problems) == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "elsewhere").write_text("")
    (other / "audit.log").symlink_to(other / "elsewhere")
    p = run_append(shell, other, "install", "A__K", "a", "x")
    assert p.returncode == 1 and "is not a regular file" in p.stderr
    assert (other / "elsewhere").read_text() == ""


def test_a_real_install_sh_run_records_its_secrets_and_no_value(bundle_dir, tmp_path, docker_engine):  # noqa: F811
    from builder.format.manifest import Manifest
    from e2e.labkit import path_with_venv

    env = {**os.environ, "PATH": path_with_venv()}
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(bundle_dir / "install.sh"), "--dir", str(target), "--no-start"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    values = dict(line.split("=", 1) for line in (target / ".env").read_text().splitlines() if "=" in line)
    (entry,) = read_entries(target).entries
    manifest = Manifest.loads((bundle_dir / "manifest.json").read_bytes())
    assert entry.command == "install" and entry.outcome == "ok" and entry.keys == tuple(sorted(values))
    assert entry.services == tuple(sorted({manifest.secret_owners[k] for k in values}))
    assert entry.detail == f"generated {len(values)} secret(s) into .env"
    log = (target / "audit.log").read_text()
    assert values and not [v for v in values.values() if v in log]
    p = subprocess.run(["dash", str(bundle_dir / "install.sh"), "--dir", str(target), "--no-start"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert len(read_entries(target).entries) == 1               # nothing generated again: no entry
