"""builder.install.secrets: the kinds, lengths and merging of generated secrets (pure)."""

from __future__ import annotations

import stat

import pytest

from builder.install.secrets import ALPHABETS, generate_secret, merge_secrets, secret_specs, write_secrets

EXAMPLE = """# Secrets of lab-all-1.0.0. `labbuild install` (or install.sh) generates each
# one into DIR/.env (mode 0600) and keeps it across upgrades. No values here.

# qdrant: generate=token length=32: API key of the REST API
QDRANT__API_KEY=

# db: generate=password length=20
DB__POSTGRES_PASSWORD=

# db: generate=hex length=64
DB__ENCRYPTION_KEY=
"""


def test_secret_specs_read_kind_and_length_from_the_comment():
    assert secret_specs(EXAMPLE) == {"QDRANT__API_KEY": ("token", 32), "DB__POSTGRES_PASSWORD": ("password", 20),
                                     "DB__ENCRYPTION_KEY": ("hex", 64)}


@pytest.mark.parametrize("kind", ["token", "password", "hex"])
def test_generated_secrets_have_the_kind_and_length(kind):
    values = {generate_secret(kind, 40) for _ in range(20)}
    assert len(values) == 20
    for v in values:
        assert len(v) == 40 and set(v) <= set(ALPHABETS[kind])


def test_merge_keeps_existing_values_and_lines_and_adds_only_missing():
    existing = "# my note\nDB__POSTGRES_PASSWORD=kept-value\nEXTRA=1"
    text, added = merge_secrets(existing, secret_specs(EXAMPLE), generate=lambda k, n: f"<{k}:{n}>")
    assert added == ["DB__ENCRYPTION_KEY", "QDRANT__API_KEY"]
    assert text == existing + "\nDB__ENCRYPTION_KEY=<hex:64>\nQDRANT__API_KEY=<token:32>\n"
    again, added2 = merge_secrets(text, secret_specs(EXAMPLE))
    assert again == text and added2 == []


def test_write_secrets_makes_a_0600_env_and_keeps_it(tmp_path):
    added = write_secrets(tmp_path, EXAMPLE, ["LATE__TOKEN"])
    assert added == ["DB__ENCRYPTION_KEY", "DB__POSTGRES_PASSWORD", "LATE__TOKEN", "QDRANT__API_KEY"]
    env = tmp_path / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    first = env.read_text()
    assert write_secrets(tmp_path, EXAMPLE, ["LATE__TOKEN"]) == [] and env.read_text() == first
