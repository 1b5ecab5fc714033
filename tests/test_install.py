"""The pure cores of install: secrets, the install dir's release links, health ordering and probes.

The engine-backed chain (load, compose, health, upgrade, rollback) is in tests/e2e/.
"""

from __future__ import annotations

import http.server
import os
import socket
import stat
import threading

import pytest

from builder.errors import InstallError
from builder.health import Probe, dependency_order, parse_duration, probe_once, wait_healthy
from builder.install import (ALPHABETS, activate, current_release, generate_secret, merge_secrets, secret_specs,
                             write_secrets)

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
    release = tmp_path / "releases" / "1"
    release.mkdir(parents=True)
    (release / "secrets.env.example").write_text(EXAMPLE)
    (release / "manifest.json").write_text('{"services": {"late": {"secrets": ["LATE__TOKEN"]}}}')
    added = write_secrets(tmp_path, release)
    assert added == ["DB__ENCRYPTION_KEY", "DB__POSTGRES_PASSWORD", "LATE__TOKEN", "QDRANT__API_KEY"]
    env = tmp_path / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    first = env.read_text()
    assert write_secrets(tmp_path, release) == [] and env.read_text() == first


def test_activate_switches_current_and_remembers_previous(tmp_path):
    r1, r2 = tmp_path / "releases" / "1.0.0", tmp_path / "releases" / "1.1.0"
    r1.mkdir(parents=True)
    r2.mkdir()
    with pytest.raises(InstallError):
        current_release(tmp_path)
    assert activate(tmp_path, r1) is None
    assert current_release(tmp_path) == r1.resolve()
    assert activate(tmp_path, r2) == r1.resolve()
    assert os.readlink(tmp_path / "current") == "releases/1.1.0"        # relative: DIR can move
    assert (tmp_path / "previous").resolve() == r1.resolve()
    activate(tmp_path, r1)                                             # rollback = swap
    assert current_release(tmp_path) == r1.resolve() and (tmp_path / "previous").resolve() == r2.resolve()


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
    p = Probe.from_manifest("q", {"port": "http", "host_port": 6333, "path": "/healthz", "scheme": "http",
                                  "status": [200, 401], "start_period": "1m", "timeout": "3s"})
    assert (p.host_port, p.path, p.status, p.start_period, p.request_timeout) == (6333, "/healthz", (200, 401), 60, 3)
    assert Probe.from_manifest("w", None) is None
