"""DIR/.env: one reader (capped, byte-order mark dropped, UTF-8 or a named refusal), and no
key of it may steer compose itself (issue: hardening round two, classes 2, 6 and 7)."""

from __future__ import annotations

import os

import pytest

from builder.backups.restore import _restore_env
from builder.errors import InstallError
from builder.format.manifest import Manifest
from builder.host.compose import Project
from builder.host.dotenv import compose_control_keys, filled_keys, read_env
from builder.install.secrets import write_secrets
from builder.limits import MAX_ENV_BYTES

EXAMPLE = "# web: generate=hex length=8\nFIRST=\n# web: generate=hex length=8\nSECOND=\n"


def test_a_byte_order_mark_does_not_hide_the_first_key(tmp_path):
    (tmp_path / ".env").write_bytes("\ufeffFIRST=keepme\nSECOND=mine\n".encode())
    assert filled_keys(read_env(tmp_path)) == {"FIRST", "SECOND"}
    assert write_secrets(tmp_path, EXAMPLE) == []            # nothing generated again
    assert "FIRST=keepme" in read_env(tmp_path)


def test_an_env_that_is_not_utf8_is_refused_naming_the_file(tmp_path):
    (tmp_path / ".env").write_bytes(b"KEY=caf\xe9\n")
    with pytest.raises(InstallError, match=r"\.env: not UTF-8 text") as err:
        read_env(tmp_path)
    assert str(tmp_path / ".env") in err.value.message


def test_an_env_over_the_cap_is_refused_without_reading_it_whole(tmp_path):
    with open(tmp_path / ".env", "wb") as fh:
        fh.truncate(200 * 1024 * 1024)          # sparse: 200 MB that cost no disk
    with pytest.raises(InstallError, match=f"larger than an install's .env may be \\({MAX_ENV_BYTES}"):
        read_env(tmp_path)


@pytest.mark.parametrize("line", ["COMPOSE_FILE=/tmp/evil.yaml", "export COMPOSE_PROJECT_NAME=other",
                                  "COMPOSE_ENV_FILES=x", "DOCKER_HOST=tcp://127.0.0.1:1"])
def test_compose_is_not_run_while_the_env_steers_it(tmp_path, line):
    (tmp_path / ".env").write_text(f"A=1\n{line}\n")
    key = line.removeprefix("export ").split("=")[0]
    assert compose_control_keys(read_env(tmp_path)) == [key]
    with pytest.raises(InstallError, match=key):
        Project("lab", tmp_path).run("ps")


def test_restore_of_secrets_carries_only_the_installs_own_keys(tmp_path):
    manifest = Manifest.from_json(_manifest())
    (tmp_path / ".env").write_text("DB_PASSWORD=now\n")
    changed = _restore_env(tmp_path, b"DB_PASSWORD=then\nCOMPOSE_FILE=/evil.yaml\nOTHER=x\n", manifest)
    assert changed == ["DB_PASSWORD"]
    text = read_env(tmp_path)
    assert text == "DB_PASSWORD=then\n" and "COMPOSE" not in text and "OTHER" not in text
    assert os.stat(tmp_path / ".env").st_mode & 0o777 == 0o600


def _manifest() -> dict:
    return {"format": 1, "lab": "lab", "name": "lab-p-1.0.0", "version": "1.0.0", "profile": "p", "inputs": "x",
            "labbuild": "0", "offline": True, "platforms": ["linux/amd64"], "files": {},
            "services": {"db": {"image": "db:1", "digest": "sha256:" + "a" * 64, "verified": True,
                                "config_digests": {}, "ports": [], "health": None, "depends_on": [],
                                "volumes": [], "secrets": ["DB_PASSWORD"], "runbook": "runbooks/db.md"}}}
