"""builder.install.health: dependency order, durations, real probes, waiting (no engine)."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from builder.bundle.layout import ManifestHealth
from builder.install.health import Probe, dependency_order, parse_duration, probe_once, wait_healthy


def test_dependency_order_puts_dependencies_first():
    assert dependency_order({"ui": ["api"], "api": ["db", "cache"], "db": [], "cache": [], "solo": []}) == [
        "cache", "db", "solo", "api", "ui"]
    assert dependency_order({"a": ["gone"]}) == ["a"]


def test_parse_duration():
    assert parse_duration("1m30s", 0) == 90 and parse_duration("250ms", 0) == 0.25 and parse_duration(None, 7) == 7


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 200 if self.path == "/ok" else 404
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_probes_against_a_real_server(http_server):
    assert probe_once(Probe("s", http_server, path="/ok"))[0]
    ok, detail = probe_once(Probe("s", http_server, path="/missing"))
    assert not ok and "404" in detail
    assert probe_once(Probe("s", http_server, path="/missing", status=(404,)))[0]
    assert probe_once(Probe("s", http_server, scheme="tcp"))[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    ok, detail = probe_once(Probe("s", closed, path="/"))
    assert not ok and "refused" in detail.lower()


def test_wait_healthy_stops_at_the_first_unhealthy_service(http_server):
    probes = {"db": Probe("db", http_server, path="/ok"), "api": Probe("api", http_server, path="/missing"),
              "ui": Probe("ui", http_server, path="/ok"), "worker": None}
    depends = {"db": [], "api": ["db"], "ui": ["api"], "worker": []}
    lines = []
    results = wait_healthy(probes, depends, timeout=1, say=lines.append, live=False, interval=0.1)
    assert {s: r.state for s, r in results.items()} == {"db": "healthy", "api": "unhealthy",
                                                        "ui": "skipped", "worker": "no-probe"}
    assert "404" in results["api"].detail


def test_a_container_that_exited_fails_fast(http_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    results = wait_healthy({"svc": Probe("svc", closed)}, {"svc": []}, timeout=60,
                           container_state=lambda svc: "exited", live=False, interval=0.01)
    assert results["svc"].state == "unhealthy" and "container is exited" in results["svc"].detail
    assert results["svc"].seconds < 5


def test_probe_from_manifest():
    p = Probe.from_health("q", ManifestHealth(port="http", host_port=6333, path="/healthz", scheme="http",
                                              status=(200, 401), start_period="1m", timeout="3s"))
    assert (p.host_port, p.path, p.status, p.start_period, p.request_timeout) == (6333, "/healthz", (200, 401), 60, 3)
    assert Probe.from_health("w", None) is None
