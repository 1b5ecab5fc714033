"""``labbuild doctor``: an offline preflight of a host for a bundle (or an install dir).

Each check is data (``Check``: name, state ok|warn|fail, what was seen, the
fix); ``DoctorReport`` renders them as a table or JSON. ``install`` runs the
same checks first (``preflight_bundle``) and stops before it touches anything
when one fails. What is checked:

* ``engine``: the Docker engine answers; its version.
* ``compose``: Docker Compose v2 is found, at least ``compose.MIN_VERSION``.
* ``port <svc>/<name>``: each published host port can be bound on its
  address; when not, the process listening there is named from
  ``/proc/net/{tcp,tcp6,udp,udp6}`` and ``/proc/*/fd`` (other users'
  processes need root to be named). Ports published by the lab's own
  containers (an upgrade) are not "taken".
* ``disk``: the engine's data root has room for the bundle's blobs
  (every file under ``images/``: image layers, and model blobs when a bundle
  carries them) unpacked: ``UNPACK_FACTOR`` x their size.
* ``memory``: each service's ``[resources] memory`` fits into the engine's
  memory (fail), and their sum does too (warn: limits are caps, not
  reservations).
* ``gpu``: with ``--gpu``, the engine has the ``nvidia`` runtime or an NVIDIA
  CDI spec (``/etc/cdi``, ``/var/run/cdi``).
* ``dir``: the install dir (or its nearest existing parent) is writable.

The checks read the bundle's manifest.json only (found in the archive without
unpacking or hashing the rest); ``verify`` stays the integrity check.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..bundle.reader import peek_manifest
from ..errors import BundleError, InstallError
from ..format.files import IMAGES_DIR
from ..format.manifest import Manifest
from ..format.models import model_bytes
from ..host.compose import MIN_VERSION, compose_version, find_compose
from ..host.engine import containers, docker_client
from ..host.labdir import LabDir, read_manifest

UNPACK_FACTOR = 2.0                 # compressed layers take about twice their size once unpacked
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
_SIZE_RE = re.compile(r"^([0-9]+)([kmgKMG]?)$")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_LISTEN = {"tcp": "0A", "udp": "07"}


@dataclass(frozen=True)
class Check:
    name: str
    state: str                      # ok | warn | fail
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "state": self.state, "detail": self.detail, "fix": self.fix}


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.state != "fail" for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.state == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks]}

    def render_table(self) -> str:
        width = max([len(c.name) for c in self.checks] + [5])
        lines = [f"{'check':<{width}}  state  detail"]
        for c in self.checks:
            lines.append(f"{c.name:<{width}}  {c.state.upper() if c.state != 'ok' else 'ok':<5}  {c.detail}")
            if c.fix and c.state != "ok":
                lines.append(f"{'':<{width}}         fix: {c.fix}")
        failed = len(self.failures)
        lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading the manifest

def bundle_manifest(bundle: Path) -> Manifest:
    """manifest.json of a bundle archive or an unpacked bundle directory, without reading the rest."""
    if bundle.is_dir():
        return read_manifest(bundle)
    try:
        return peek_manifest(bundle)
    except BundleError as exc:
        raise InstallError(exc.message, hint=exc.hint) from None


def gpu_services(manifest: Manifest) -> list[str]:
    """Services of the bundle that declare a GPU reservation (``[resources] gpus``)."""
    return sorted(s for s, e in manifest.services.items() if e.gpus is not None)


def parse_size(text: str) -> int:
    """``"16g"`` -> bytes (the blueprint's ``[resources] memory`` grammar)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# --------------------------------------------------------------------------- ports

def _socket_inodes(port: int, protocol: str) -> set[str]:
    """Inodes of the sockets listening (tcp) or bound (udp) on ``port``, from /proc/net."""
    inodes: set[str] = set()
    for family in ("", "6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{protocol}{family}").read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == _LISTEN[protocol]:
                    inodes.add(cols[9])
    return inodes


def port_owner(port: int, protocol: str = "tcp") -> str | None:
    """``"name (pid N)"`` of the process holding ``port``, or None when it cannot be seen."""
    inodes = {f"socket:[{i}]" for i in _socket_inodes(port, protocol) if i != "0"}
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        comm = (proc / "comm").read_text().strip()
                        return f"{comm} (pid {proc.name})"
    return None


def port_free(bind: str, port: int, protocol: str = "tcp") -> tuple[bool, str]:
    """Whether ``bind:port`` can be bound now; (False, why) when not."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # a TIME_WAIT leftover is not "taken"
        try:
            s.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False, "in use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return False, f"address {bind} is not on this host"
            if exc.errno == errno.EACCES:
                return True, "privileged port (docker binds it)"
            return False, exc.strerror or str(exc)
    return True, "free"


def _own_ports(client, lab: str) -> set[tuple[int, str]]:
    """(host port, protocol) published by the lab's own containers (running ones)."""
    own: set[tuple[int, str]] = set()
    if client is None:
        return own
    for c in containers(client, lab).values():
        for spec, binds in (c.ports or {}).items():
            proto = spec.split("/", 1)[1] if "/" in spec else "tcp"
            for b in binds or []:
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    own.add((int(b["HostPort"]), proto))
    return own


def check_ports(manifest: Manifest, own: set[tuple[int, str]]) -> list[Check]:
    checks = []
    for svc, entry in sorted(manifest.services.items()):
        for p in entry.ports:
            if p.host is None:
                continue
            name = f"port {svc}/{p.name}"
            where = f"{p.bind}:{p.host}/{p.protocol}"
            if (p.host, p.protocol) in own:
                checks.append(Check(name, "ok", f"{where} is held by the lab's own {svc} container (upgrade)"))
                continue
            free, why = port_free(p.bind, p.host, p.protocol)
            if free:
                checks.append(Check(name, "ok", f"{where} {why}"))
                continue
            owner = port_owner(p.host, p.protocol) if why == "in use" else None
            who = f"taken by {owner}" if owner else (
                "taken by another process (run as root to name it, or: ss -ltnp)" if why == "in use" else why)
            checks.append(Check(name, "fail", f"{where} {who}",
                                fix=f"stop what listens on {p.host}" + (f" ({owner})" if owner else "")
                                    + f", or change {svc}'s [[ports]] host and release again"))
    return checks


# --------------------------------------------------------------------------- the other checks

def check_engine() -> tuple[Check, Any]:
    try:
        client = docker_client()
    except InstallError as exc:
        return Check("engine", "fail", exc.message, fix=exc.hint or ""), None
    try:
        v = client.version()
    except Exception as exc:  # transport errors of a dying engine
        return Check("engine", "fail", f"the engine stopped answering ({exc})",
                     fix="start it (systemctl start docker)"), None
    return Check("engine", "ok", f"Docker Engine {v.get('Version', '?')} (API {v.get('ApiVersion', '?')}, "
                                 f"{v.get('Os', '?')}/{v.get('Arch', '?')})"), client


def check_compose() -> Check:
    try:
        found, version = find_compose(), compose_version()
    except InstallError as exc:
        return Check("compose", "fail", exc.message, fix=exc.hint or "")
    cmd = " ".join((Path(found[0]).name, *found[1:]))
    shown = ".".join(map(str, version))
    if version < MIN_VERSION:
        return Check("compose", "fail", f"{cmd} {shown} is older than {'.'.join(map(str, MIN_VERSION))}",
                     fix="install a current Docker Compose v2 (docker-compose-plugin)")
    return Check("compose", "ok", f"{cmd} {shown}")


def blob_bytes(manifest: Manifest) -> int:
    """Bytes of every blob the bundle carries under images/ (image layers and configs, model blobs)."""
    return sum(f.size for name, f in manifest.files.items() if name.startswith(IMAGES_DIR + "/blobs/"))


def disk_need(manifest: Manifest) -> tuple[int, int, int]:
    """``(bytes needed, image blob bytes, model blob bytes)``: image layers grow when the
    engine unpacks them (``UNPACK_FACTOR``); model blobs are written into volumes as they are."""
    models = model_bytes(manifest)
    images = blob_bytes(manifest) - models
    return int(images * UNPACK_FACTOR) + models, images, models


def check_disk(manifest: Manifest, client) -> Check:
    need, images, models = disk_need(manifest)
    if not need:
        return Check("disk", "ok", "the bundle carries no images (online: pulled before start, "
                                   "shown per image)")
    root = Path("/var/lib/docker")
    if client is not None:
        with contextlib.suppress(Exception):
            root = Path(client.info().get("DockerRootDir") or root)
    probe = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    detail = (f"{_human(need)} needed for {_human(images)} of image blobs (x{UNPACK_FACTOR:g} unpacked)"
              + (f" and {_human(models)} of models" if models else "") + f", {_human(free)} free on {probe}")
    if free < need:
        return Check("disk", "fail", detail, fix=f"free {_human(need - free)} on {probe} "
                                                 "(docker system prune removes unused images)")
    return Check("disk", "ok", detail)


def _mem_total(client) -> int | None:
    if client is not None:
        with contextlib.suppress(Exception):
            return int(client.info()["MemTotal"])
    with contextlib.suppress(OSError, ValueError, IndexError):
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal:"))
        return int(line.split()[1]) * 1024
    return None


def check_memory(manifest: Manifest, client) -> Check:
    limits = {s: parse_size(e.memory) for s, e in sorted(manifest.services.items()) if e.memory}
    if not limits:
        return Check("memory", "ok", "no service sets a memory limit")
    total = _mem_total(client)
    if total is None:
        return Check("memory", "warn", "the host's memory could not be read")
    too_big = [s for s, n in limits.items() if n > total]
    detail = f"limits {_human(sum(limits.values()))} in {len(limits)} service(s), {_human(total)} in the engine"
    if too_big:
        return Check("memory", "fail", detail + "; larger than the host: "
                     + ", ".join(f"{s} ({_human(limits[s])})" for s in too_big),
                     fix="use a host with more memory, or lower [resources] memory of "
                         + ", ".join(too_big) + " and release again")
    if sum(limits.values()) > total:
        return Check("memory", "warn", detail + "; they cannot all reach their limit at once",
                     fix="fine for a lab that is not fully loaded; add memory for heavy use")
    return Check("memory", "ok", detail)


def nvidia_present(client) -> tuple[bool, str]:
    """Whether the engine can hand out NVIDIA GPUs: its ``nvidia`` runtime or an NVIDIA CDI spec."""
    runtimes: Iterable[str] = ()
    if client is not None:
        with contextlib.suppress(Exception):
            runtimes = (client.info().get("Runtimes") or {}).keys()
    if "nvidia" in runtimes:
        return True, "the engine has the nvidia runtime"
    for d in CDI_DIRS:
        with contextlib.suppress(OSError):
            specs = sorted(p.name for p in d.iterdir() if "nvidia" in p.name.lower())
            if specs:
                return True, f"NVIDIA CDI spec {d / specs[0]}"
    return False, "no nvidia runtime (engine runtimes: " + (", ".join(sorted(runtimes)) or "none") \
        + ") and no NVIDIA CDI spec in " + " or ".join(map(str, CDI_DIRS))


def check_gpu(manifest: Manifest, client, gpu: bool) -> Check | None:
    wanting = gpu_services(manifest)
    if not gpu:
        return Check("gpu", "ok", "GPU reservations off; --gpu turns them on for " + ", ".join(wanting)) \
            if wanting else None
    if not wanting:
        return Check("gpu", "warn", "--gpu given, but no service of this bundle reserves a GPU")
    present, detail = nvidia_present(client)
    if not present:
        return Check("gpu", "fail", f"--gpu asked for {', '.join(wanting)}, but {detail}",
                     fix="install the NVIDIA Container Toolkit (nvidia-ctk runtime configure --runtime=docker; "
                         "systemctl restart docker), or install without --gpu")
    return Check("gpu", "ok", f"{detail}; GPU for {', '.join(wanting)}")


def check_dir(install_dir: Path) -> Check:
    target = next((p for p in (install_dir, *install_dir.parents) if p.exists()), None)
    if target is None or not target.is_dir():
        return Check("dir", "fail", f"{install_dir}: {target} is not a directory",
                     fix="pass a --dir under a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        return Check("dir", "fail", f"{target} is not writable by this user",
                     fix=f"choose another --dir, or run as a user who may write {target}")
    return Check("dir", "ok", f"{install_dir} " + ("exists and is writable" if target == install_dir
                                                   else f"can be created under {target}"))


# --------------------------------------------------------------------------- running them

def doctor(bundle: Path | None = None, install_dir: Path | None = None, *, gpu: bool = False) -> DoctorReport:
    """Every check of the module docstring for ``bundle`` (or the install's current release)."""
    install_dir = install_dir.absolute() if install_dir is not None else None
    if bundle is not None:
        manifest = bundle_manifest(Path(bundle))
    elif install_dir is not None and (current := LabDir(install_dir).installed) is not None:
        manifest = read_manifest(current)
    else:
        raise InstallError("doctor needs a BUNDLE, or a --dir holding an installed lab",
                           hint="labbuild doctor BUNDLE [--dir DIR]")
    report = DoctorReport()
    engine, client = check_engine()
    report.checks += [engine, check_compose()]
    report.checks += check_ports(manifest, _own_ports(client, manifest.lab))
    report.checks += [check_disk(manifest, client), check_memory(manifest, client)]
    if (g := check_gpu(manifest, client, gpu)) is not None:
        report.checks.append(g)
    if install_dir is not None:
        report.checks.append(check_dir(install_dir))
    return report


def preflight_bundle(bundle: Path, install_dir: Path, *, gpu: bool,
                     say: Callable[[str], None]) -> DoctorReport:
    """``doctor`` as install's first step: InstallError naming each failure and its fix."""
    report = doctor(bundle, install_dir, gpu=gpu)
    bad = report.failures
    if bad:
        raise InstallError("the host is not ready (nothing was changed):\n  "
                           + "\n  ".join(f"{c.name}: {c.detail}" + (f"\n    fix: {c.fix}" if c.fix else "")
                                         for c in bad),
                           hint=f"fix the above and run install again; `labbuild doctor {bundle} "
                                f"--dir {install_dir}` checks the host without installing")
    for c in report.checks:
        if c.state == "warn":
            say(f"doctor: {c.name}: {c.detail}")
    return report
