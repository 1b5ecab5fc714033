"""Suite-wide fixtures: the Docker policy, a real registry, the repository root."""

from __future__ import annotations

import shutil
from pathlib import Path

import sys
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.dockerenv import require_docker, require_tool
from support.registry import start_registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def docker_engine():
    """A reachable Docker engine (skip without one; fail under LABBUILD_REQUIRE_DOCKER=1)."""
    require_docker()
    import docker
    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture
def registry(tmp_path_factory):
    """A real Distribution registry on a free 127.0.0.1 port, stopped afterwards."""
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture
def lab_copy(tmp_path) -> Path:
    """A scratch copy of the shipped lab (blueprints/ and lockfiles/) to change freely."""
    dst = tmp_path / "lab"
    dst.mkdir()
    for part in ("blueprints", "lockfiles"):
        if (REPO / part).exists():
            shutil.copytree(REPO / part, dst / part)
    return dst


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests run first, so the suite's last minutes are short tests that
    `make test`'s workers (`--dist worksteal`) share out, not one long test while the other
    worker idles; nightly fuzz rounds run only when asked for (`-m nightly`)."""
    items.sort(key=lambda item: "slow" not in item.keywords)     # stable: each module keeps its order
    if "nightly" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="nightly fuzz round: run with `pytest -m nightly`")
    for item in items:
        if "nightly" in item.keywords:
            item.add_marker(skip)
