"""Testinfra checks of the running {{ cookiecutter.service_name }} service.

Generated from cookiecutter-service. It tests a LIVE service, so start the
lab first (`labbuild install ... --dir DIR`), then:

    LAB_LIVE=1 pytest tests/services/test_{{ cookiecutter.__module_name }}.py -v

The container is found by the labels the lab puts on it
(org.local-ai-lab.service or com.docker.compose.service = {{ cookiecutter.service_name }}).
To test another install, override:
    LAB_{{ cookiecutter.__env_id }}_CONTAINER: container name or id
    LAB_{{ cookiecutter.__env_id }}_PORT: published host port (default {{ cookiecutter.host_port or "none" }})
    LAB_COMPOSE_PROJECT: only containers of this compose project
    LAB_CHECK_TIMEOUT: seconds to wait for an HTTP answer (default 10)
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

import pytest

SERVICE = "{{ cookiecutter.service_name }}"
LABELS = ("org.local-ai-lab.service", "com.docker.compose.service")
CONTAINER = os.environ.get("LAB_{{ cookiecutter.__env_id }}_CONTAINER", "")
HOST_PORT = os.environ.get("LAB_{{ cookiecutter.__env_id }}_PORT", "{{ cookiecutter.host_port }}")
HEALTH_PATH = "{{ cookiecutter.health_path }}"
METRICS_PATH = "{{ cookiecutter.metrics_path }}"
PROJECT = os.environ.get("LAB_COMPOSE_PROJECT", "")
TIMEOUT = float(os.environ.get("LAB_CHECK_TIMEOUT", "10"))


def service_containers(host):
    """The service's containers (running or not), by override or by label."""
    if CONTAINER:
        return [host.docker(CONTAINER)]
    extra = [f"com.docker.compose.project={PROJECT}"] if PROJECT else []
    found = {}
    for label in LABELS:
        for container in host.docker.get_containers(label=[f"{label}={SERVICE}", *extra]):
            found[container.name] = container
    return [found[name] for name in sorted(found)]


def http_status(url: str) -> tuple[int | None, str]:
    """GET ``url`` from this host (never through a proxy); (status, detail)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


def wait_for_2xx(url: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, detail = http_status(url)
        if status is not None and 200 <= status < 300:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"{url} did not answer 2xx within {TIMEOUT:g}s (last: {detail})")
        time.sleep(0.5)


def test_container_is_running(host):
    containers = service_containers(host)
    assert containers, (f"no container labelled {' or '.join(LABELS)}={SERVICE}"
                        f"{' in project ' + PROJECT if PROJECT else ''}; is the lab up? "
                        "(or set LAB_{{ cookiecutter.__env_id }}_CONTAINER)")
    running = [c.name for c in containers if c.is_running]
    assert running, f"container(s) {', '.join(c.name for c in containers)} exist but none is running"


def test_port_listens_on_loopback(host):
    if not HOST_PORT:
        pytest.skip(f"{SERVICE} publishes no host port")
    socket = host.socket(f"tcp://127.0.0.1:{HOST_PORT}")
    assert socket.is_listening, f"nothing listens on 127.0.0.1:{HOST_PORT}"


def test_health_answers(host):
    if not (HOST_PORT and HEALTH_PATH):
        pytest.skip(f"{SERVICE} has no health probe")
    wait_for_2xx(f"http://127.0.0.1:{HOST_PORT}{HEALTH_PATH}")


def test_metrics_answer(host):
    if not (HOST_PORT and METRICS_PATH):
        pytest.skip(f"{SERVICE} exposes no metrics")
    wait_for_2xx(f"http://127.0.0.1:{HOST_PORT}{METRICS_PATH}")
