"""Derived secrets (issue 23: n8n's owner from env): ``[secrets.NAME] derive = "bcrypt", from = "KEY"``.

From the blueprint (schema, rules) through secrets.env.example (both readers: Python and install.sh's
awk) to the value made on the target: by ``labbuild install`` (pyca/bcrypt) and by install.sh's own
secrets block (mkpasswd) under dash and busybox sh. Each hash is checked with bcrypt itself, and read
back through the real ``docker compose config`` as the container gets it (a hash holds ``$``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import bcrypt
import pytest
from test_blueprint import blueprint, make_lab, problems_of
from test_install_sh import SCRIPT, SHELLS, awk_program

from builder.format.secrets_example import read_secrets_example
from builder.host.dotenv import env_values, plain_value
from builder.install.secrets import derived_specs, secret_specs, write_secrets

EXAMPLE = ("# Secrets of x.\n\n"
           "# app: generate=password length=24 prefix=Lab1-: the owner's password\n"
           "APP__PW=\n\n"
           "# app: derive=bcrypt from=APP__PW: its bcrypt hash\n"
           "APP__PW_HASH=\n\n"
           "# app: derive=scrypt from=APP__PW: a derivation no reader knows\n"
           "APP__PW_SCRYPT=\n")

SECRETS = """
    [secrets.PW]
    generate = "password"
    rotate = false
    rotate_reason = "set once, see the runbook"
    [secrets.PW_HASH]
    derive = "bcrypt"
    from = "PW"
    rotate = false
    rotate_reason = "made from PW at install"
"""


def problems(tmp_path, secrets: str) -> list[str]:
    make_lab(tmp_path, {"app": blueprint("app", extra=secrets)})
    return problems_of(tmp_path)


def test_the_shipped_blueprint_form_is_valid_and_its_refusals_name_the_key(tmp_path):
    assert problems(tmp_path, SECRETS) == []
    for change, words in [
        (('from = "PW"', 'from = "NOPE"'), "'NOPE' is no generated [secrets.NAME] of this service"),
        (("rotate = false\n    rotate_reason = \"set once, see the runbook\"", "rotate = true"),
         "'PW' may be rotated, and PW_HASH would keep the old hash"),
        (('derive = "bcrypt"', 'derive = "bcrypt"\n    generate = "token"'), "secrets.PW_HASH"),
        (('    from = "PW"\n', ""), "secrets.PW_HASH"),
        (('derive = "bcrypt"', 'derive = "md5"'), "secrets.PW_HASH.derive"),
    ]:
        found = problems(tmp_path, SECRETS.replace(*change))
        assert any(words in p for p in found), (change, found)


def test_both_readers_of_secrets_env_example_agree_and_never_make_a_random_hash():
    (pw, hashed) = read_secrets_example(EXAMPLE)       # the unknown derivation is left out
    assert (pw.key, pw.generate, pw.prefix, pw.derive_from) == ("APP__PW", "password", "Lab1-", "")
    assert (hashed.key, hashed.generate, hashed.derive_from, hashed.service) == ("APP__PW_HASH", "bcrypt",
                                                                                "APP__PW", "app")
    assert secret_specs(EXAMPLE) == {"APP__PW": ("password", 24)}
    assert derived_specs(EXAMPLE) == {"APP__PW_HASH": ("bcrypt", "APP__PW")}
    p = subprocess.run(["awk", awk_program("secrets.env.example")], input=EXAMPLE, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert [line.split() for line in p.stdout.splitlines()] == [["APP__PW", "password", "24", "Lab1-"],
                                                                 ["APP__PW_HASH", "bcrypt", "0", "APP__PW"]]


def compose_reads(tmp_path, env_file) -> str:
    """What the real docker compose puts into a container's environment from ``${APP__PW_HASH}``."""
    from builder.host.compose import find_compose
    (tmp_path / "compose.yaml").write_text("services:\n  app:\n    image: busybox\n"
                                           "    environment:\n      HASH: ${APP__PW_HASH}\n")
    p = subprocess.run([*find_compose(), "--env-file", str(env_file), "config", "--format", "json"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # config prints the value escaped for compose again ($ as $$); the container gets it unescaped
    return json.loads(p.stdout)["services"]["app"]["environment"]["HASH"].replace("$$", "$")


def test_labbuild_install_derives_the_hash_after_the_password_and_keeps_it(tmp_path):
    added = write_secrets(tmp_path, EXAMPLE, ["APP__PW", "APP__PW_HASH"])
    assert added == ["APP__PW", "APP__PW_HASH"]
    text = (tmp_path / ".env").read_text()
    values = env_values(text)
    assert "APP__PW_SCRYPT" not in values
    pw, hashed = plain_value(values["APP__PW"]), plain_value(values["APP__PW_HASH"])
    assert re.fullmatch(r"\$2b\$10\$[./A-Za-z0-9]{53}", hashed) and bcrypt.checkpw(pw.encode(), hashed.encode())
    assert values["APP__PW_HASH"] == f"'{hashed}'"          # quoted: compose would read $2b as a variable
    assert compose_reads(tmp_path, tmp_path / ".env") == hashed
    assert write_secrets(tmp_path, EXAMPLE, ["APP__PW", "APP__PW_HASH"]) == []     # kept
    assert (tmp_path / ".env").read_text() == text
    # the operator changes the password and deletes the hash line: the next install hashes the new one
    (tmp_path / ".env").write_text("APP__PW='Lab1-new password'\n")
    assert write_secrets(tmp_path, EXAMPLE, ["APP__PW", "APP__PW_HASH"]) == ["APP__PW_HASH"]
    new = plain_value(env_values((tmp_path / ".env").read_text())["APP__PW_HASH"])
    assert bcrypt.checkpw(b"Lab1-new password", new.encode())


def test_no_hash_of_a_missing_password_and_none_of_more_than_bcrypt_reads(tmp_path):
    only_hash = "# app: derive=bcrypt from=APP__OTHER\nAPP__PW_HASH=\n"
    assert write_secrets(tmp_path, only_hash, ["APP__PW_HASH"]) == []
    (tmp_path / ".env").write_text("APP__OTHER=" + "x" * 73 + "\n")
    with pytest.raises(ValueError, match="72 bytes"):
        write_secrets(tmp_path, only_hash, ["APP__PW_HASH"])


# install.sh's secrets block (step 4) run on its own, with the helpers it calls
SECRETS_BLOCK = re.search(r"\n(if \[ -f secrets\.env\.example \]; then\n.*?\nfi)\numask 022\n", SCRIPT, re.S).group(1)
HELPERS = "\n".join(re.search(rf"\n({name}\(\) \{{.*?\n}})\n", SCRIPT, re.S).group(1)
                    for name in ("valid", "env_value", "random_chars"))
AUDIT = re.search(r'\n(AUDIT="\$DIR/audit\.log"\n.*?)\nif \[ -f secrets\.env\.example \]', SCRIPT, re.S).group(1)


def run_block(shell, tmp_path, env_text: str, path: str | None = None):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "manifest.flat").write_text("services.app.secrets.0=APP__PW\nservices.app.secrets.1=APP__PW_HASH\n")
    (tmp_path / "secrets.env.example").write_text(EXAMPLE)
    target = tmp_path / "target"
    target.mkdir(exist_ok=True)
    (target / ".env").write_text(env_text)
    prog = ('set -eu\ndie() { printf "error: %s\\nhint: %s\\n" "$1" "$2" >&2; exit 1; }\n'
            'say() { printf "%s\\n" "$*" >&2; }\n'
            f'DIR="$1"\nWORK="$2"\n{HELPERS}\n{AUDIT}\n{SECRETS_BLOCK}\n')
    env = {"PATH": path or "/usr/bin:/bin:/usr/sbin:/sbin"}
    p = subprocess.run([shutil.which(shell[0]), *shell[1:], "-c", prog, "sh", str(target), str(work)], cwd=tmp_path,
                       capture_output=True, text=True, env=env)
    return p, target


@pytest.mark.skipif(not shutil.which("mkpasswd"), reason="mkpasswd missing (Debian package whois)")
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_install_sh_derives_the_same_kind_of_hash_with_mkpasswd(shell, tmp_path):
    p, target = run_block(shell, tmp_path, "")
    assert p.returncode == 0, p.stderr
    text = (target / ".env").read_text()
    values = env_values(text)
    assert set(values) == {"APP__PW", "APP__PW_HASH"}         # the unknown derivation: left out
    pw, hashed = plain_value(values["APP__PW"]), plain_value(values["APP__PW_HASH"])
    assert pw.startswith("Lab1-") and len(pw) == 29
    assert re.fullmatch(r"\$2b\$10\$[./A-Za-z0-9]{53}", hashed) and bcrypt.checkpw(pw.encode(), hashed.encode())
    assert pw not in p.stderr and hashed not in p.stderr and hashed not in (target / "audit.log").read_text()
    assert json.loads((target / "audit.log").read_text())["keys"] == ["APP__PW", "APP__PW_HASH"]
    assert compose_reads(tmp_path, target / ".env") == hashed
    p, _ = run_block(shell, tmp_path, text)                    # a second run keeps both
    assert p.returncode == 0 and (target / ".env").read_text() == text
    # an operator's quoted password with a space: hashed as compose reads it
    p, target = run_block(shell, tmp_path, "APP__PW='Lab1-my own pass'\n")
    assert p.returncode == 0, p.stderr
    hashed = plain_value(env_values((target / ".env").read_text())["APP__PW_HASH"])
    assert bcrypt.checkpw(b"Lab1-my own pass", hashed.encode())


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_install_sh_without_mkpasswd_stops_naming_the_package(shell, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("awk", "tr", "head", "grep", "cat", "chmod", "date", "printf", "wc", "sed", "sort", "tail", "od",
                 "sync"):
        if found := shutil.which(tool):
            (bare / tool).symlink_to(found)
    p, target = run_block(shell, tmp_path, "", path=str(bare))
    assert p.returncode == 1
    assert "APP__PW_HASH is the bcrypt hash of APP__PW" in p.stderr and "apt-get install whois" in p.stderr
    assert "APP__PW_HASH" not in (target / ".env").read_text()
