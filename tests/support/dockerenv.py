"""Is a Docker engine reachable? The skip-or-fail policy of the suite.

Tests that need Docker use the ``docker_engine`` fixture (or the ``docker``
marker). Without an engine they skip with a reason, unless
LABBUILD_REQUIRE_DOCKER=1 (CI): then they fail.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest


@functools.cache
def docker_problem() -> str | None:
    """None when an engine answers, else why not."""
    try:
        import docker
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:  # any failure means: no usable engine
        return f"no Docker engine reachable ({type(exc).__name__}: {exc})"
    return None


def require_docker() -> None:
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("LABBUILD_REQUIRE_DOCKER") == "1":
        pytest.fail(f"LABBUILD_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def require_tool(name: str) -> str:
    """Path of an external tool, skipping (or failing under CI policy) when absent."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} is not installed (see .ci/run)"
    if os.environ.get("LABBUILD_REQUIRE_DOCKER") == "1":
        pytest.fail(f"LABBUILD_REQUIRE_DOCKER=1 but {msg}", pytrace=False)
    pytest.skip(msg)


def require_compose() -> tuple[str, ...]:
    """The compose v2 command labbuild would run, skipping (or failing under CI policy) when absent."""
    from builder.errors import InstallError
    from builder.host.compose import find_compose
    try:
        return find_compose()
    except InstallError as exc:
        if os.environ.get("LABBUILD_REQUIRE_DOCKER") == "1":
            pytest.fail(f"LABBUILD_REQUIRE_DOCKER=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))
