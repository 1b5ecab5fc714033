"""builder.host.health: dependency order, durations, real probes, waiting (no engine)."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from builder.format.manifest import ManifestHealth
from builder.host.health import Probe, budget, dependency_order, parse_duration, probe_once, wait_healthy


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


def test_service_endpoint_is_the_published_port_else_the_containers_address():
    from builder.host.engine import service_endpoint

    def never() -> str:
        raise AssertionError("a published port needs no container address")
    assert service_endpoint(8080, 80, never) == ("127.0.0.1", 8080)
    assert service_endpoint(8080, 80, never, "0.0.0.0") == ("127.0.0.1", 8080)
    assert service_endpoint(8080, 80, never, "::") == ("::1", 8080)
    assert service_endpoint(8080, 80, never, "192.0.2.7") == ("192.0.2.7", 8080)
    assert service_endpoint(None, 80, lambda: "172.18.0.5") == ("172.18.0.5", 80)
    assert service_endpoint(None, 80, lambda: None) is None           # no address yet
    assert service_endpoint(None, None, lambda: "172.18.0.5") is None
    assert service_endpoint(None, 80, None) is None


def test_probe_of_an_installed_service_dials_where_its_port_is(http_server):
    from builder.format.manifest import ManifestPort, ManifestService

    def entry(port: ManifestPort, health_port: int | None, healthcheck: bool = False) -> ManifestService:
        return ManifestService(image="r/x:1", digest="sha256:" + "0" * 64, verified=False, config_digests={},
                               ports=(port,), health=ManifestHealth(port=port.name, host_port=health_port, path="/ok",
                                                                    scheme="http"),
                               depends_on=(), volumes=(), secrets=(), runbook="runbooks/x.md", healthcheck=healthcheck)
    published = entry(ManifestPort("http", 80, http_server, "127.0.0.1", "tcp"), http_server)
    assert probe_once(Probe.of("x", published, lambda: "192.0.2.1")) == (True, f"http://127.0.0.1:{http_server}/ok answered 200")
    hidden = entry(ManifestPort("http", http_server, None, "127.0.0.1", "tcp"), None)
    assert Probe.of("x", hidden) is None                  # nothing can tell its address
    probe = Probe.of("x", hidden, lambda: "127.0.0.1")    # the container's address (here: this host's server)
    assert probe.url == f"http://<x's address>:{http_server}/ok"
    assert probe_once(probe) == (True, f"http://127.0.0.1:{http_server}/ok answered 200")
    waiting = Probe.of("x", hidden, lambda: None)
    assert probe_once(waiting) == (False, f"http://<x's address>:{http_server}/ok: the container has no address "
                                          "on the lab network yet")
    engine = Probe.of("x", entry(ManifestPort("http", 80, None, "127.0.0.1", "tcp"), None, healthcheck=True))
    assert engine.scheme == "container"
    assert probe_once(engine, {"x": "healthy"}.get) == (True, "the engine says healthy")
    assert probe_once(engine, {"x": "starting"}.get) == (False, "the engine says starting")
    assert probe_once(engine) == (False, "the engine says nothing yet")


def test_a_port_published_on_ipv6_loopback_is_probed_there():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    class V6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6
    try:
        server = V6Server(("::1", 0), Handler)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert probe_once(Probe("v6", port, bind="::1")) == (True, f"http://[::1]:{port}/ answered 204")
        assert not probe_once(Probe("v6", port))[0]             # 127.0.0.1 is not where it listens
    finally:
        server.shutdown()
        server.server_close()


class SlowServer:
    """A real HTTP server on 127.0.0.1 that answers 503 until ``ready_after`` seconds after
    ``arm()``, then 200; it records when each request arrived."""

    def __init__(self, ready_after: float) -> None:
        self.ready_after, self.armed, self.hits = ready_after, None, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                now = time.monotonic()
                outer.hits.append(now)
                ready = outer.armed is not None and now - outer.armed >= outer.ready_after
                self.send_response(200 if ready else 503)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arm(self) -> None:
        self.armed = time.monotonic()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_servers():
    made: list[SlowServer] = []

    def make(ready_after: float) -> SlowServer:
        made.append(SlowServer(ready_after))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_budget_is_the_larger_of_timeout_and_start_period():
    assert budget(Probe("s", 1, start_period=600), 300) == 600
    assert budget(Probe("s", 1, start_period=60), 300) == 300
    assert budget(Probe("s", 1), 5) == 5


def test_a_slow_service_within_its_start_period_passes(slow_servers):
    """Healthy only after the --timeout deadline, but within its own start_period."""
    slow = slow_servers(1.5)
    slow.arm()
    probes = {"webui": Probe("webui", slow.port, start_period=4)}
    results = wait_healthy(probes, {"webui": []}, timeout=0.5, live=False, interval=0.1)
    assert results["webui"].state == "healthy"
    assert 1.4 <= results["webui"].seconds < 4


def test_the_same_slow_service_without_a_start_period_fails_after_the_timeout(slow_servers):
    slow = slow_servers(3)
    slow.arm()
    results = wait_healthy({"webui": Probe("webui", slow.port)}, {"webui": []}, timeout=0.5, live=False,
                           interval=0.1)
    assert results["webui"].state == "unhealthy"
    assert "(--timeout 0s)" in results["webui"].detail
    assert "503" in results["webui"].detail and results["webui"].seconds < 2


def test_independent_slow_services_take_the_max_not_the_sum(slow_servers):
    a, b = slow_servers(1.5), slow_servers(1.5)
    a.arm()
    b.arm()
    began = time.monotonic()
    results = wait_healthy({"a": Probe("a", a.port), "b": Probe("b", b.port)}, {"a": [], "b": []},
                           timeout=2.5, live=False, interval=0.1)
    took = time.monotonic() - began
    assert {r.state for r in results.values()} == {"healthy"}
    assert took < 2.5, f"{took:.1f}s: awaited one after the other"


def test_timeout_bounds_each_service_not_the_lab(slow_servers):
    """A chain db <- api, api ready 1 s after db turned healthy (as a dependent container starts
    after its dependency), each within --timeout 1.6 s: the lab takes more than the timeout and
    both are healthy."""
    db, api = slow_servers(1.0), slow_servers(1.0)
    handler = db.server.RequestHandlerClass
    original = handler.do_GET

    def do_get(request):
        original(request)
        if api.armed is None and time.monotonic() - db.armed >= db.ready_after:
            api.arm()
    handler.do_GET = do_get
    db.arm()
    lines: list[str] = []
    results = wait_healthy({"db": Probe("db", db.port), "api": Probe("api", api.port)}, {"db": [], "api": ["db"]},
                           timeout=1.6, container_state=lambda svc: "running", say=lines.append, live=False,
                           interval=0.1)
    assert results["db"].state == "healthy" and results["api"].state == "healthy", results
    assert results["db"].seconds + results["api"].seconds > 1.6
    assert any(line.startswith("  db: healthy") for line in lines)


def test_a_dependent_is_probed_only_once_its_dependency_is_healthy(slow_servers):
    db, api = slow_servers(1.0), slow_servers(0)
    db.arm()
    api.arm()
    results = wait_healthy({"db": Probe("db", db.port), "api": Probe("api", api.port)},
                           {"db": [], "api": ["db"]}, timeout=5, live=False, interval=0.1)
    assert results["api"].state == "healthy"
    db_healthy_at = db.hits[-1]
    assert api.hits and min(api.hits) >= db_healthy_at


def test_a_failed_service_skips_its_dependents_but_not_independent_services(slow_servers, http_server):
    slow = slow_servers(0.8)
    slow.arm()
    probes = {"db": Probe("db", http_server, path="/missing"), "api": Probe("api", http_server, path="/ok"),
              "other": Probe("other", slow.port)}
    results = wait_healthy(probes, {"db": [], "api": ["db"], "other": []}, timeout=1.5, live=False, interval=0.1)
    assert {s: r.state for s, r in results.items()} == {"db": "unhealthy", "api": "skipped", "other": "healthy"}
    assert "db is not healthy" in results["api"].detail


def test_on_healthy_runs_the_moment_a_service_is_healthy_not_after_the_slowest(slow_servers):
    """Install claims an app's owner account in on_healthy: a fast service's call must not wait for a
    slow, unrelated one (the window in which a visitor could claim it first stays short)."""
    fast, slow = slow_servers(0), slow_servers(1.5)
    fast.arm()
    slow.arm()
    called: list[tuple[str, float]] = []
    start = time.monotonic()
    results = wait_healthy({"fast": Probe("fast", fast.port), "slow": Probe("slow", slow.port), "none": None},
                           {"fast": [], "slow": [], "none": []}, timeout=5, live=False, interval=0.1,
                           on_healthy=lambda svc: called.append((svc, time.monotonic() - start)))
    assert results["slow"].state == results["fast"].state == "healthy"
    assert [svc for svc, _ in called] == ["fast", "slow"]       # never for a service without a probe
    assert called[0][1] < 1.0 <= called[1][1]
