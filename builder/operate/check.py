"""`labbuild check`: testinfra health checks of every service of an install.

An install (made by ``labbuild install --dir DIR``) is ``DIR/current`` ->
``DIR/releases/<version>/``, holding the extracted bundle and its
``manifest.json``, located and read by ``builder.host.labdir``. For every service this runs the checks of the contributor template's test
(cookiecutter-service/.../test_NAME.py), generated from the manifest:

* ``container``: a container labelled ``com.docker.compose.project=<project>``
  and ``com.docker.compose.service=<name>`` is running (testinfra ``host.docker``);
* ``listening``: each published port listens on its bind address (testinfra
  ``host.socket(...).is_listening``);
* ``health``: the health probe answers from the host (HTTP status in the
  accepted set, default 2xx; or a TCP connect) — the probe ``install`` waits
  for (``Probe.of``, ``builder.host.health.probe_once``), asked once: at the
  published port, or, for a port the front door does not publish, at the
  container's address on the lab network; a service with only an in-container
  healthcheck by the engine's health status.

The checks call testinfra's host API directly rather than generating a
pytest module and running pytest: the result stays data (one ``Check`` per
probe, no parsing of pytest output), it costs no interpreter start-up, and
text and ``--json`` are two views of the same ``CheckReport``. The template
test cannot import labbuild (plain cookiecutter users have no labbuild), so
the three checks exist twice, in the same words.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Callable

import testinfra

from ..errors import InstallError
from ..format.manifest import Manifest, ManifestPort
from ..host.compose import PROJECT_LABEL, SERVICE_LABEL
from ..host.dotenv import read_env
from ..host.engine import container_address, container_health, docker_client
from ..host.compose import wrapper_unpublished
from ..host.health import Probe, probe_once
from ..host.labdir import LabDir, read_manifest
from ..install.inputs import not_started_detail, waiting_optional
from ..install.unpublished import unpublished_view
from .secrets import due_warnings

# --------------------------------------------------------------------------- the install

@dataclass(frozen=True)
class InstalledService:
    name: str
    image: str
    ports: tuple[ManifestPort, ...] = ()     # published on the host only
    health: Probe | None = None


@dataclass(frozen=True)
class Installation:
    """What ``check`` needs to know about an install, read from its manifest."""
    dir: Path
    release: Path
    lab: str
    version: str
    project: str
    services: dict[str, InstalledService]
    waiting: dict[str, list[str]] = field(default_factory=dict)   # optional service -> missing supplied keys


Address = Callable[[str, str], "str | None"]     # (project, service) -> the container's address


def installation(manifest: Manifest, release: Path, install_dir: Path, project: str | None = None,
                 env_text: str = "", address: Address | None = None) -> Installation:
    """An ``Installation`` from a release's manifest and the install's .env text (pure; no I/O:
    ``address`` is asked only when a probe runs)."""
    project = project or manifest.lab
    services = {name: InstalledService(name=name, image=s.image,
                                       ports=tuple(p for p in s.ports if p.host is not None),
                                       health=Probe.of(name, s, partial(address, project, name) if address else None))
                for name, s in sorted(manifest.services.items())}
    return Installation(dir=install_dir, release=release, lab=manifest.lab, version=manifest.version,
                        project=project, services=services, waiting=waiting_optional(manifest, env_text))


def read_install(install_dir: str | Path, project: str | None = None, address: Address | None = None) -> Installation:
    """Read the install at ``install_dir`` (its ``current`` release); InstallError when it is not one."""
    lab_dir = LabDir(Path(install_dir).expanduser())
    release = lab_dir.current
    # a service install has not yet claimed publishes no host port (DIR/unpublished.yaml): probed at its address
    manifest = unpublished_view(read_manifest(release), wrapper_unpublished(lab_dir.path))
    return installation(manifest, release, lab_dir.path, project, read_env(lab_dir.path), address)


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Check:
    """One probe of one service: ``status`` is pass, fail or skip."""
    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class ServiceReport:
    name: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass(frozen=True)
class CheckReport:
    install: Installation
    services: dict[str, ServiceReport] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()      # secrets due for rotation: reported, never a failure

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.services.values())

    def to_json(self) -> dict:
        return {"ok": self.ok, "dir": str(self.install.dir), "lab": self.install.lab,
                "version": self.install.version, "project": self.install.project,
                "services": {n: {"ok": s.ok, "checks": [c.to_json() for c in s.checks]}
                             for n, s in sorted(self.services.items())}, "warnings": list(self.warnings)}

    def render_table(self) -> str:
        """A text table: one row per check, then a summary line."""
        rows = [("SERVICE", "CHECK", "RESULT", "DETAIL")]
        for name, svc in sorted(self.services.items()):
            for c in svc.checks:
                rows.append((name, c.name, c.status.upper(), c.detail))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        passed = sum(1 for s in self.services.values() if s.ok)
        lines.append(f"{passed}/{len(self.services)} service(s) pass "
                     f"({self.install.lab} {self.install.version}, project {self.install.project})")
        return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------- the checks (testinfra)

def _container_check(host, project: str, service: str) -> Check:
    labels = [f"{PROJECT_LABEL}={project}", f"{SERVICE_LABEL}={service}"]
    try:
        containers = host.docker.get_containers(label=labels)
        states = {c.name: c.is_running for c in containers}
    except Exception as exc:  # testinfra raises AssertionError/RuntimeError on a failed docker command
        lines = str(exc).strip().splitlines()
        return Check("container", "fail", f"cannot query Docker: {lines[-1] if lines else type(exc).__name__}")
    if not states:
        return Check("container", "fail", f"no container of project {project!r} for service {service!r}")
    running = sorted(n for n, up in states.items() if up)
    if not running:
        return Check("container", "fail", "not running: " + ", ".join(sorted(states)))
    return Check("container", "pass", "running: " + ", ".join(running))


def _listening_check(host, port: ManifestPort) -> Check:
    spec = f"{port.protocol}://{port.bind}:{port.host}"
    name = f"listening {port.name} {port.bind}:{port.host}/{port.protocol}"
    try:
        listening = host.socket(spec).is_listening
    except Exception as exc:
        return Check(name, "fail", f"cannot inspect sockets: {exc}")
    return Check(name, "pass" if listening else "fail",
                 "listening" if listening else f"nothing listens on {port.bind}:{port.host}")


def _health_check(probe: Probe, engine_health: Callable[[str], str | None] | None) -> Check:
    ok, detail = probe_once(probe, engine_health)
    if not ok and probe.status:
        detail += f" (accepted: {', '.join(map(str, probe.status))})"
    return Check("health", "pass" if ok else "fail", detail)


def check_service(host, install: Installation, service: InstalledService,
                  engine_health: Callable[[str], str | None] | None = None) -> ServiceReport:
    """Run the template's checks for one installed service (``engine_health(service)``: the engine's
    health status, for a service probed only by its in-container healthcheck)."""
    checks = [_container_check(host, install.project, service.name)]
    if service.name in install.waiting and checks[0].status == "fail":
        # optional and waiting for its supplied secrets: reported, not a failure
        return ServiceReport(service.name, (Check("container", "skip",
                                                  "not started: " + not_started_detail(install.waiting[service.name])),))
    checks += [_listening_check(host, p) for p in service.ports]
    checks.append(_health_check(service.health, engine_health) if service.health
                  else Check("health", "skip", "no health probe in the blueprint"))
    return ServiceReport(service.name, tuple(checks))


def local_host():
    """testinfra's host for this machine (docker CLI and ss/netstat run here)."""
    return testinfra.get_host("local://")


def _require_docker_cli(host) -> None:
    result = host.run("docker version --format '{{.Server.Version}}'")
    if result.rc != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise InstallError("cannot reach the Docker engine with the docker CLI"
                           + (f": {detail[-1]}" if detail else ""),
                           hint="start the engine (systemctl start docker) and check `docker ps` works")


def check_install(install_dir: str | Path, *, project: str | None = None, services: list[str] | None = None,
                  wait: float = 0.0) -> CheckReport:
    """Check every (or the named) service of the install at ``install_dir``.

    With ``wait`` > 0, failing services are re-checked until they pass or
    ``wait`` seconds have passed (for use right after install or upgrade).
    """
    engine = cache(docker_client)        # the SDK client, made when a probe first needs the engine
    install = read_install(install_dir, project, lambda p, s: container_address(engine(), p, s))
    wanted = services or sorted(install.services)
    unknown = [s for s in wanted if s not in install.services]
    if unknown:
        raise InstallError(f"not installed in {install.dir}: {', '.join(unknown)}",
                           hint="installed: " + (", ".join(sorted(install.services)) or "none"))
    host = local_host()
    _require_docker_cli(host)
    deadline = time.monotonic() + wait
    reports: dict[str, ServiceReport] = {}
    pending = list(wanted)
    while True:
        for name in pending:
            reports[name] = check_service(host, install, install.services[name],
                                          lambda s: container_health(engine(), install.project, s))
        pending = [n for n in pending if not reports[n].ok]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return CheckReport(install=install, services=dict(sorted(reports.items())),
                       warnings=tuple(due_warnings(install.dir)))
