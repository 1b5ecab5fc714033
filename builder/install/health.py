"""Host-side health probes of an installed lab, in dependency order.

Each service's ``[health]`` (rendered into the bundle's manifest.json, read as
``builder.bundle.layout.ManifestHealth``)
is probed from the host through its published 127.0.0.1 port: HTTP(S) wants
one of ``status`` (default any 2xx), ``tcp`` wants a connection. Services are
probed one after another in dependency order (they all start together, so
waiting in order costs no extra time), a service only once everything it
depends on is healthy. A live rich display shows each one's state; without a
terminal, one line per service goes to ``say``.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import http.client
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..bundle.layout import ManifestHealth

_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str | None, default: float) -> float:
    """``"1m30s"`` -> 90.0; ``default`` for None/empty."""
    if not text:
        return default
    return sum(int(n) * _UNITS[u] for n, u in _DURATION_RE.findall(text)) or default


@dataclass(frozen=True)
class Probe:
    """How to ask one service whether it is healthy."""

    service: str
    host_port: int
    scheme: str = "http"
    path: str = "/"
    status: tuple[int, ...] = ()
    start_period: float = 0.0
    request_timeout: float = 5.0

    @classmethod
    def from_health(cls, service: str, health: ManifestHealth | None) -> "Probe | None":
        """The probe of a service's manifest ``health`` entry; None when it has no host-side probe."""
        if health is None or health.host_port is None:
            return None
        return cls(service=service, host_port=int(health.host_port), scheme=health.scheme or "http",
                   path=health.path or "/", status=tuple(health.status),
                   start_period=parse_duration(health.start_period, 0.0),
                   request_timeout=min(parse_duration(health.timeout, 5.0), 30.0))

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.host_port}{self.path if self.scheme != 'tcp' else ''}"


@dataclass
class HealthResult:
    service: str
    state: str                   # healthy | unhealthy | no-probe | skipped
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state in ("healthy", "no-probe")


def dependency_order(depends_on: Mapping[str, Iterable[str]]) -> list[str]:
    """Services sorted so each comes after the ones it depends on (ties by name)."""
    deps = {s: sorted(d for d in ds if d in depends_on) for s, ds in depends_on.items()}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = sorted(s for s in deps if s not in done and all(d in done for d in deps[s]))
        if not ready:  # a cycle (validate forbids them): keep going rather than hang
            ready = sorted(s for s in deps if s not in done)[:1]
        for s in ready:
            order.append(s)
            done.add(s)
    return order


def probe_once(probe: Probe) -> tuple[bool, str]:
    """One attempt: (healthy, what was seen)."""
    try:
        if probe.scheme == "tcp":
            with socket.create_connection(("127.0.0.1", probe.host_port), timeout=probe.request_timeout):
                return True, "accepts connections"
        if probe.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # self-signed lab certificates
            conn = http.client.HTTPSConnection("127.0.0.1", probe.host_port, timeout=probe.request_timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", probe.host_port, timeout=probe.request_timeout)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "labbuild-health"})
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{probe.url}: {type(exc).__name__}: {exc}" if str(exc) else f"{probe.url}: {type(exc).__name__}"
    ok = status in probe.status if probe.status else 200 <= status < 300
    return ok, f"{probe.url} answered {status}"


def wait_healthy(probes: Mapping[str, Probe | None], depends_on: Mapping[str, Iterable[str]], timeout: float, *,
                 container_state: Callable[[str], str | None] | None = None,
                 say: Callable[[str], None] | None = None, live: bool | None = None,
                 interval: float = 0.5) -> dict[str, HealthResult]:
    """Probe every service in dependency order until healthy or ``timeout`` seconds pass.

    ``container_state(service)`` (optional) returns the container's state
    (running, exited, ...) so a container that exited fails fast instead of
    waiting out the timeout. Returns a result per service; stops probing at
    the first unhealthy one (its dependents and the rest are ``skipped``).
    """
    console = Console(stderr=True)
    show = console.is_terminal if live is None else (live and console.is_terminal)
    order = dependency_order(depends_on)
    results: dict[str, HealthResult] = {}
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, disable=not show, transient=False) as bars:
        tasks = {s: bars.add_task(f"{s}: waiting", total=1) for s in order}
        failed = False
        for svc in order:
            probe = probes.get(svc)
            if failed:
                results[svc] = HealthResult(svc, "skipped", "not checked: an earlier service failed")
                bars.update(tasks[svc], description=f"{svc}: not checked", completed=1)
                continue
            if probe is None:
                results[svc] = HealthResult(svc, "no-probe", "no [health] probe; started")
                bars.update(tasks[svc], description=f"{svc}: started (no health probe)", completed=1)
                if say and not show:
                    say(f"  {svc}: started (no health probe)")
                continue
            started = time.monotonic()
            bars.update(tasks[svc], description=f"{svc}: probing {probe.url}")
            detail, exited_seen = "", 0
            while True:
                ok, detail = probe_once(probe)
                if ok:
                    results[svc] = HealthResult(svc, "healthy", detail, time.monotonic() - started)
                    bars.update(tasks[svc], description=f"{svc}: healthy", completed=1)
                    if say and not show:
                        say(f"  {svc}: healthy ({detail})")
                    break
                state = container_state(svc) if container_state else None
                exited_seen = exited_seen + 1 if state in ("exited", "dead", "missing", "created") else 0
                if exited_seen >= 3:
                    detail = f"container is {state}; last probe: {detail}"
                if exited_seen >= 3 or time.monotonic() >= deadline:
                    if exited_seen < 3:
                        detail = f"not healthy after {timeout:.0f}s; last probe: {detail}"
                    results[svc] = HealthResult(svc, "unhealthy", detail, time.monotonic() - started)
                    bars.update(tasks[svc], description=f"{svc}: UNHEALTHY", completed=1)
                    if say and not show:
                        say(f"  {svc}: UNHEALTHY ({detail})")
                    failed = True
                    break
                time.sleep(interval)
    return results
