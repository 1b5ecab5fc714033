"""Fixtures of the air-gap tests: a fresh ``AirgapLab`` per test (see labkit.py)."""

from __future__ import annotations

import uuid

import pytest

from labkit import AirgapLab, path_with_venv


@pytest.fixture
def airgap(tmp_path, registry, docker_engine, monkeypatch):
    """A fresh AirgapLab (unique names), cleaned up afterwards."""
    monkeypatch.setenv("PATH", path_with_venv())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = AirgapLab(root=tmp_path / "lab", registry=registry, name=f"e2e-{uuid.uuid4().hex[:10]}")
    yield lab
    lab.cleanup(docker_engine)
