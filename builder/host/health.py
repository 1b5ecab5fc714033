"""Host-side health probes of an installed lab, awaited concurrently in dependency order.

Each service's ``[health]`` (rendered into the bundle's manifest.json, read as
``builder.format.manifest.ManifestHealth``)
is probed from the host through its published port (on 127.0.0.1, or the port's bind
address) or, when the port is not published (the front door's UIs), at the container's own
address on the lab network (``host.engine.service_endpoint``): HTTP(S) wants one of ``status``
(default any 2xx), ``tcp`` wants a connection. A service with only an in-container healthcheck is
asked through the engine's health status (scheme ``container``).

Timing (issue 11): a service is probed only once every service it depends on
is healthy (or has no probe); from that moment it has its own budget of
``max(timeout, start_period)`` seconds -- ``--timeout`` bounds one service,
never the whole lab, and a service whose blueprint says its first start takes
longer (``[health] start_period``, e.g. a model download) gets that long.
Independent services are awaited at the same time, so the lab takes as long
as its slowest dependency chain, not the sum of its services. A service that
fails makes its dependents ``skipped``; services that do not depend on it are
still awaited. Image pulls happen before (``builder.install.pull``) and count
against no budget. A live rich display shows each one's state; without a
terminal, one line per service goes to ``say``.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Mapping

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..format.manifest import ManifestHealth, ManifestService
from .engine import addresses, container_health, service_endpoint

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
    host_port: int | None                # published on the host; None: not published (or scheme "container")
    scheme: str = "http"
    path: str = "/"
    status: tuple[int, ...] = ()
    start_period: float = 0.0
    request_timeout: float = 5.0
    container_port: int | None = None    # asked at the container's address when host_port is None
    bind: str = ""                       # the published port's bind address ("" and 0.0.0.0: 127.0.0.1)
    # the container's address on the lab network, asked at each probe (the front door's UIs publish no port)
    address: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_health(cls, service: str, health: ManifestHealth | None, healthcheck: bool = False, *,
                    container_port: int | None = None, bind: str = "",
                    address: Callable[[], str | None] | None = None) -> "Probe | None":
        """The probe of a service's manifest ``health`` entry; without a host port, the engine's
        health status when the service has an in-container ``healthcheck`` (scheme ``container``),
        else the health port at the container's own address when ``address`` can tell it (the
        front door's UIs publish no port), else None."""
        if (health is None or health.host_port is None) and healthcheck:
            return cls(service=service, host_port=None, scheme="container",
                       start_period=parse_duration(health.start_period if health else None, 0.0))
        if health is None or (health.host_port is None and (address is None or not container_port)):
            return None
        return cls(service=service, host_port=health.host_port, scheme=health.scheme or "http",
                   path=health.path or "/", status=tuple(health.status),
                   start_period=parse_duration(health.start_period, 0.0),
                   request_timeout=min(parse_duration(health.timeout, 5.0), 30.0),
                   container_port=container_port, bind=bind if health.host_port else "", address=address)

    @classmethod
    def of(cls, service: str, entry: ManifestService,
           address: Callable[[], str | None] | None = None) -> "Probe | None":
        """The probe of an installed service (its manifest entry) -- what install awaits and
        ``status``/``check`` ask once: its health port, published or at the container's address."""
        port = next((p for p in entry.ports if entry.health and p.name == entry.health.port), None)
        return cls.from_health(service, entry.health, entry.healthcheck,
                               container_port=port.container if port else None,
                               bind=port.bind if port is not None and port.host else "", address=address)

    def _url(self, host: str, port: int | None) -> str:
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{port}{self.path if self.scheme != 'tcp' else ''}"

    @property
    def url(self) -> str:
        if self.scheme == "container":
            return "the engine's health status of its healthcheck"
        if self.host_port:
            return self._url(service_endpoint(self.host_port, None, None, self.bind)[0], self.host_port)
        return self._url(f"<{self.service}'s address>", self.container_port)


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


def probe_once(probe: Probe, container_health: Callable[[str], str | None] | None = None) -> tuple[bool, str]:
    """One attempt: (healthy, what was seen). Scheme ``container`` asks ``container_health(service)``
    (the engine's health status of the in-container healthcheck)."""
    if probe.scheme == "container":
        status = container_health(probe.service) if container_health is not None else None
        return status == "healthy", f"the engine says {status or 'nothing yet'}"
    where = service_endpoint(probe.host_port, probe.container_port, probe.address, probe.bind)
    if where is None:
        return False, f"{probe.url}: the container has no address on the lab network yet"
    host, port = where
    url = probe._url(host, port)
    try:
        if probe.scheme == "tcp":
            with socket.create_connection((host, port), timeout=probe.request_timeout):
                return True, f"{url} accepts connections"
        if probe.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # self-signed lab certificates
            conn = http.client.HTTPSConnection(host, port, timeout=probe.request_timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=probe.request_timeout)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "labbuild-health"})
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{url}: {type(exc).__name__}: {exc}" if str(exc) else f"{url}: {type(exc).__name__}"
    ok = status in probe.status if probe.status else 200 <= status < 300
    return ok, f"{url} answered {status}"


def budget(probe: Probe, timeout: float) -> float:
    """Seconds a service may take to become healthy once its dependencies are: ``max(timeout, start_period)``."""
    return max(timeout, probe.start_period)


def _await_one(probe: Probe, timeout: float, container_state: Callable[[str], str | None] | None,
               interval: float, container_health: Callable[[str], str | None] | None = None) -> HealthResult:
    """Probe one service until healthy, its budget is spent, or its container stays exited."""
    svc, started = probe.service, time.monotonic()
    limit = budget(probe, timeout)
    deadline, exited_seen = started + limit, 0
    while True:
        ok, detail = probe_once(probe, container_health)
        if ok:
            return HealthResult(svc, "healthy", detail, time.monotonic() - started)
        state = container_state(svc) if container_state else None
        exited_seen = exited_seen + 1 if state in ("exited", "dead", "missing", "created") else 0
        if exited_seen >= 3:
            return HealthResult(svc, "unhealthy", f"container is {state}; last probe: {detail}",
                                time.monotonic() - started)
        if time.monotonic() >= deadline:
            why = (f"its start_period {probe.start_period:.0f}s" if probe.start_period > timeout
                   else f"--timeout {timeout:.0f}s")
            return HealthResult(svc, "unhealthy", f"not healthy after {limit:.0f}s ({why}); last probe: {detail}",
                                time.monotonic() - started)
        time.sleep(interval)


def wait_healthy(probes: Mapping[str, Probe | None], depends_on: Mapping[str, Iterable[str]], timeout: float, *,
                 container_state: Callable[[str], str | None] | None = None,
                 say: Callable[[str], None] | None = None, live: bool | None = None,
                 interval: float = 0.5,
                 container_health: Callable[[str], str | None] | None = None,
                 on_healthy: Callable[[str], None] | None = None) -> dict[str, HealthResult]:
    """Await every service (see the module docstring for the timing); a result per service.

    ``on_healthy(service)`` (optional) runs the moment a probed service is healthy, in this thread,
    before its dependents are probed (install claims an app's owner account there: no later).

    ``container_state(service)`` (optional) returns the container's state
    (running, exited, ...) so a container that exited fails fast instead of
    waiting out its budget. A service whose dependency failed is ``skipped``.
    """
    console = Console(stderr=True)
    show = console.is_terminal if live is None else (live and console.is_terminal)
    order = dependency_order(depends_on)
    deps = {s: [d for d in depends_on.get(s, ()) if d in depends_on and d != s] for s in order}
    results: dict[str, HealthResult] = {}
    lock = threading.Lock()

    def tell(svc: str, text: str, task_text: str) -> None:
        bars.update(tasks[svc], description=f"{svc}: {task_text}", completed=1)
        if say and not show:
            with lock:
                say(f"  {svc}: {text}")

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, disable=not show, transient=False) as bars, \
            ThreadPoolExecutor(max_workers=max(1, min(32, len(order))), thread_name_prefix="health") as pool:
        tasks = {s: bars.add_task(f"{s}: waiting for {', '.join(deps[s])}" if deps[s] else f"{s}: waiting",
                                  total=1) for s in order}
        pending = list(order)
        running: dict[Future, str] = {}

        def start(svc: str) -> None:
            pending.remove(svc)
            probe = probes.get(svc)
            if probe is not None and probe.scheme == "container" and container_health is None:
                probe = None        # the caller cannot ask the engine: started is all it can tell
            if probe is None:
                results[svc] = HealthResult(svc, "no-probe", "no [health] probe; started")
                tell(svc, "started (no health probe)", "started (no health probe)")
                return
            long = f" (start_period {probe.start_period:.0f}s)" if probe.start_period > timeout else ""
            bars.update(tasks[svc], description=f"{svc}: probing {probe.url}{long}")
            running[pool.submit(_await_one, probe, timeout, container_state, interval, container_health)] = svc

        while pending or running:
            changed = True
            while changed:          # start (or skip) every service whose dependencies are settled
                changed = False
                for svc in list(pending):
                    failed = [d for d in deps[svc] if d in results and not results[d].ok]
                    if failed:
                        pending.remove(svc)
                        results[svc] = HealthResult(svc, "skipped",
                                                    f"not checked: {', '.join(failed)} is not healthy")
                        tell(svc, results[svc].detail, "not checked")
                        changed = True
                    elif all(d in results for d in deps[svc]):
                        start(svc)
                        changed = True
            if pending and not running:   # a cycle (validate forbids them): keep going rather than hang
                start(pending[0])
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                svc = running.pop(future)
                r = results[svc] = future.result()
                if r.ok:
                    tell(svc, f"healthy ({r.detail}, {r.seconds:.1f}s)", "healthy")
                    if on_healthy is not None and r.state == "healthy":
                        on_healthy(svc)
                else:
                    tell(svc, f"UNHEALTHY ({r.detail})", "UNHEALTHY")
    return {s: results[s] for s in order}


def await_installed(client, lab: str, entries: Mapping[str, ManifestService],
                    depends_on: Mapping[str, Iterable[str]], timeout: float, *,
                    say: Callable[[str], None] | None = None,
                    container_state: Callable[[str], str | None] | None = None) -> dict[str, HealthResult]:
    """``wait_healthy`` for services of an installed lab, probed as install probes them (``Probe.of``):
    a port the front door leaves unpublished at the container's address, a service with only an
    in-container healthcheck on the engine's health status. What backup, restore and rotate await
    after they start services again."""
    address = addresses(client, lab)
    probes = {s: Probe.of(s, e, partial(address, s)) for s, e in entries.items()}
    return wait_healthy(probes, depends_on, timeout, container_state=container_state, say=say, live=False,
                        container_health=partial(container_health, client, lab))
