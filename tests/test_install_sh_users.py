"""install.sh and the front door's first admin (issue 23): with access/lab.json in the bundle it
writes DIR/access/users_database.yml as `labbuild install` does — byte for byte the file
builder.host.userdb writes for the same digest, the digest made by Debian's argon2 CLI in
Authelia's PHC format and verified by the reference implementation (argon2-cffi), valid against
Authelia 4.39's published schema — prints the password once on stdout, keeps an existing file, and
refuses up front (nothing touched) when the argon2 command is missing.

The block that writes the file runs on its own under dash and busybox sh (its marked lines, with
install.sh's own helpers); the whole script runs on a real unpacked bundle with the engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_install_sh import SCRIPT, SHELLS, bundle_dir  # noqa: F401 (bundle_dir: a fixture)
from test_users import ACCESS, SCHEMA_FILE, check_digest

from builder.host.userdb import dump_database

ARGON2 = shutil.which("argon2")
needs_argon2 = pytest.mark.skipif(ARGON2 is None and not os.environ.get("LABBUILD_REQUIRE_DOCKER"),
                                  reason="Debian's argon2 command is not installed (scripts/bootstrap.sh installs it)")


def _helpers() -> str:
    """install.sh's own die, say, valid and random_chars (and its shell options)."""
    parts = ["set -eu\nLC_ALL=C\nexport LC_ALL\n"]
    for name in ("die", "say"):
        parts.append(re.search(rf"^{name}\(\) \{{.*\}}$", SCRIPT, re.M).group(0))
    for name in ("valid", "random_chars"):
        parts.append(re.search(rf"^{name}\(\) \{{.*?\n\}}$", SCRIPT, re.M | re.S).group(0))
    return "\n".join(parts) + "\n"


def _block(begin: str, end: str) -> str:
    m = re.search(rf"^{re.escape(begin)}.*?^{re.escape(end)}$", SCRIPT, re.M | re.S)
    assert m, begin
    return m.group(0)


USERS_BLOCK = _block("# users: begin", "# users: end")
CHECK_BLOCK = _block("DOOR_USERS=\"\"", "fi\n\n# ---------------------------------------------------------------- compose"
                     ).rsplit("\n\n", 1)[0]


def _run(shell: list[str], tmp_path: Path, body: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "part.sh"
    script.write_text(_helpers() + body)
    return subprocess.run([shutil.which(shell[0]), *shell[1:], str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, **(env or {})}, timeout=120)


@needs_argon2
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_the_block_writes_labbuilds_file_with_an_argon2id_digest_authelia_reads(shell, tmp_path):
    target = tmp_path / "inst"
    target.mkdir()
    seen = set()
    for n in range(2):
        (target / "access" / "users_database.yml").unlink(missing_ok=True)
        p = _run(shell, tmp_path, f'DIR="{target}"\nDOOR_USERS=make\n' + USERS_BLOCK)
        assert p.returncode == 0, p.stderr
        m = re.fullmatch(r"front door: first admin admin, password ([A-Za-z0-9_-]{24}) \(shown once; change it: "
                         r"labbuild users passwd admin --dir (.*)\)\n", p.stdout)
        assert m and m.group(2) == str(target), p.stdout
        password = m.group(1)
        assert password not in p.stderr
        raw = (target / "access" / "users_database.yml").read_bytes()
        digest = yaml.safe_load(raw)["users"]["admin"]["password"]
        check_digest(digest, password)                  # argon2id, t=3 m=65536 p=4, 16-byte salt, 32-byte key
        assert raw == dump_database({"admin": {"displayname": "admin", "password": digest, "email": "",
                                               "groups": ["admin"], "disabled": False}})
        if SCHEMA_FILE.exists():    # ../shared beside the checkout (CI has it; a bare clone may not)
            jsonschema.validate(yaml.safe_load(raw), json.loads(SCHEMA_FILE.read_text()))
        assert stat.S_IMODE((target / "access").stat().st_mode) == 0o700
        assert stat.S_IMODE((target / "access" / "users_database.yml").stat().st_mode) == 0o600
        assert not [f for f in (target / "access").iterdir() if f.name.startswith(".")]
        seen.add((password, digest.split("$")[4]))
    assert len({p for p, _ in seen}) == 2 and len({s for _, s in seen}) == 2   # new password and salt each time


@needs_argon2
def test_argon2_cli_output_is_authelias_phc_string_byte_for_byte(tmp_path):
    """The CLI's encoding of a known password and salt equals argon2-cffi's (the same library,
    the same PHC string Authelia's go-crypt parses), and the trailing newline is not hashed."""
    import argon2

    salt = "abcdefghijklmnop"
    out = subprocess.run([ARGON2, salt, "-id", "-t", "3", "-k", "65536", "-p", "4", "-l", "32", "-e"],
                         input=b"pass word$x", capture_output=True, check=True).stdout.decode().strip()
    raw = argon2.low_level.hash_secret(b"pass word$x", salt.encode(), time_cost=3, memory_cost=65536,
                                       parallelism=4, hash_len=32, type=argon2.low_level.Type.ID).decode()
    assert out == raw and out.startswith("$argon2id$v=19$m=65536,t=3,p=4$YWJjZGVmZ2hpamtsbW5vcA$")
    assert argon2.PasswordHasher().verify(out, "pass word$x")


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_without_the_argon2_command_the_check_refuses_naming_the_way_out(shell, tmp_path):
    (tmp_path / "access").mkdir()
    (tmp_path / "access" / "lab.json").write_text(json.dumps(ACCESS))
    empty = tmp_path / "bin"
    empty.mkdir()
    target = tmp_path / "inst"
    p = _run(shell, tmp_path, f'DIR="{target}"\n' + CHECK_BLOCK, env={"PATH": str(empty)})
    assert p.returncode == 1
    assert "argon2 command, which is not installed: nothing was installed" in p.stderr
    assert "apt-get install argon2" in p.stderr and "labbuild install" in p.stderr
    assert not target.exists()
    # an existing user file needs no argon2: it is kept
    (target / "access").mkdir(parents=True)
    (target / "access" / "users_database.yml").write_text("users:\n  ada: {}\n")
    p = _run(shell, tmp_path, f'DIR="{target}"\n' + CHECK_BLOCK + '\nprintf "%s" "$DOOR_USERS"\n',
             env={"PATH": str(empty)})
    assert p.returncode == 0 and p.stdout == "keep", p.stderr
    # links and odd files are refused
    (target / "access" / "users_database.yml").unlink()
    (target / "access" / "users_database.yml").symlink_to(tmp_path / "elsewhere")
    p = _run(shell, tmp_path, f'DIR="{target}"\n' + CHECK_BLOCK, env={"PATH": str(empty)})
    assert p.returncode == 1 and "is not a regular file" in p.stderr


def _door_bundle(bundle_dir: Path) -> None:
    (bundle_dir / "access").mkdir()
    (bundle_dir / "access" / "lab.json").write_text(json.dumps(ACCESS, indent=2, sort_keys=True) + "\n")


@needs_argon2
def test_install_sh_makes_the_admin_once_and_keeps_it_on_the_next_install(bundle_dir, tmp_path,  # noqa: F811
                                                                          docker_engine):
    _door_bundle(bundle_dir)
    target = tmp_path / "target"
    p = subprocess.run(["dash", str(bundle_dir / "install.sh"), "--dir", str(target), "--no-start"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (password,) = re.findall(r"first admin admin, password (\S+) ", p.stdout)
    users = yaml.safe_load((target / "access" / "users_database.yml").read_text())["users"]
    check_digest(users["admin"]["password"], password)
    before = (target / "access" / "users_database.yml").read_bytes()
    os.chmod(target / "access" / "users_database.yml", 0o644)
    p = subprocess.run(["dash", str(bundle_dir / "install.sh"), "--dir", str(target), "--no-start"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "password" not in p.stdout and (target / "access" / "users_database.yml").read_bytes() == before
    assert stat.S_IMODE((target / "access" / "users_database.yml").stat().st_mode) == 0o600
