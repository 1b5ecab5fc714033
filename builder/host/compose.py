"""Find and run Docker Compose v2 for an install, the way an operator does: ``cd DIR && docker compose ARGS``.

``DIR/compose.yaml`` is labbuild's own small file (never the operator's,
rewritten atomically whenever ``current`` switches)::

    name: <lab>
    include:
      - path: ["releases/<version>/compose.yaml"(, "releases/<version>/compose.gpu.yaml")]
        env_file: ["releases/<version>/lab.env", ".env"]

so plain ``docker compose ps`` / ``logs -f SERVICE`` / ``restart SERVICE`` /
``exec SERVICE sh`` in DIR find the project name (same across upgrades and
rollbacks: containers, networks and volumes are kept), the active release's
compose file, its non-secret defaults and the secrets, with no flags; an
operator's line in ``DIR/.env`` wins over ``lab.env`` (the later file). The
path names the release directory itself, not ``current/``: bind mounts of a
release's config files then change path when the release changes, so compose
recreates exactly the services whose files changed. Compose's ``include``
with several paths needs compose >= 2.24 (``doctor`` checks it). labbuild runs
compose the same way (cwd DIR, no -p/-f/--env-file) with the caller's
``COMPOSE_*`` variables removed, so one way to run compose exists.

``find_compose`` prefers the ``docker compose`` plugin and falls back to a v2
``docker-compose`` on PATH or beside the running Python (a venv's bin/).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import InstallError
from ..format.files import COMPOSE_FILE, COMPOSE_GPU_FILE, LAB_ENV
from ..fsutil import atomic_write
from .dotenv import compose_control_keys, read_env
from .labdir import ENV_FILE, WRAPPER, WRAPPER_HEAD

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
VOLUME_LABEL = "com.docker.compose.volume"


_VERSION_RE = re.compile(r"version v?(\d+)\.(\d+)(?:\.(\d+))?", re.I)


def _probe(cmd: list[str]) -> tuple[int, ...] | None:
    """``cmd version`` of a Compose v2 or later: its version (e.g. (2, 40, 3)); None for anything else."""
    try:
        out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _VERSION_RE.search(out.stdout + out.stderr)
    if out.returncode != 0 or m is None or int(m.group(1)) < 2:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


@functools.cache
def _compose() -> tuple[tuple[str, ...], tuple[int, ...]]:
    docker = shutil.which("docker")
    if docker and (version := _probe([docker, "compose"])):
        return (docker, "compose"), version
    candidates = [shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")]
    for c in candidates:
        if c and os.access(c, os.X_OK) and (version := _probe([c])):
            return (c,), version
    raise InstallError("neither `docker compose` nor a v2 `docker-compose` was found",
                       hint="install the Docker Compose v2 plugin (docker-compose-plugin) "
                            "or a v2 docker-compose binary on PATH")


def find_compose() -> tuple[str, ...]:
    """The compose command: ``("docker", "compose")`` or ``("/path/docker-compose",)``."""
    return _compose()[0]


MIN_VERSION = (2, 24)                 # include with several paths
_GPU_MARK = "# labbuild: gpu=on"
_UNPUBLISHED_MARK = "# labbuild: unpublished until provisioned:"
UNPUBLISHED_FILE = "unpublished.yaml"
_OWN_VARS = ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_ENV_FILES", "COMPOSE_PROFILES",
             "COMPOSE_DISABLE_ENV_FILE", "COMPOSE_PATH_SEPARATOR")


def compose_version() -> tuple[int, ...]:
    """The version of ``find_compose()`` as a tuple, e.g. (2, 40, 3), from the same ``version``
    call that found it (InstallError when there is none)."""
    return _compose()[1]


def render_wrapper(lab: str, release_rel: str, gpu: bool, unpublished: tuple[str, ...] = ()) -> str:
    """The text of ``DIR/compose.yaml`` for ``release_rel`` (``releases/<version>``), every value JSON-quoted;
    with ``unpublished``, ``DIR/unpublished.yaml`` is merged last (builder/install/unpublished.py)."""
    paths = ([f"{release_rel}/{COMPOSE_FILE}"] + ([f"{release_rel}/{COMPOSE_GPU_FILE}"] if gpu else [])
             + ([UNPUBLISHED_FILE] if unpublished else []))
    return (f"{WRAPPER_HEAD} on every install, upgrade and rollback; do not edit (put your\n"
            "# settings into .env, which wins over the release's lab.env). Run: docker compose ps\n"
            + (_GPU_MARK + "\n" if gpu else "")
            + (f"{_UNPUBLISHED_MARK} {' '.join(unpublished)}\n" if unpublished else "")
            + f"name: {json.dumps(lab)}\n"
            "include:\n"
            f"  - path: {json.dumps(paths)}\n"
            f"    env_file: {json.dumps([f'{release_rel}/{LAB_ENV}', ENV_FILE])}\n")


def render_unpublished(services: tuple[str, ...]) -> str:
    """``DIR/unpublished.yaml``: each of ``services`` with its host ports reset (service names are
    the blueprint grammar: plain YAML keys)."""
    return ("# Written by labbuild: these services publish no host port until install has claimed their\n"
            "# admin account (builder/install/unpublished.py); do not edit.\nservices:\n"
            + "".join(f"  {svc}:\n    ports: !reset []\n" for svc in services))


def write_wrapper(install_dir: Path, lab: str, release: Path, gpu: bool, unpublished: tuple[str, ...] = ()) -> None:
    """Point ``DIR/compose.yaml`` at ``release`` (atomically); GPU override included when ``gpu``; the
    ports of ``unpublished`` reset by ``DIR/unpublished.yaml`` (written first; removed when none)."""
    rel = os.path.relpath(release.resolve(), install_dir.resolve())
    if unpublished:
        atomic_write(install_dir / UNPUBLISHED_FILE, render_unpublished(unpublished), mode=0o644)
    atomic_write(install_dir / WRAPPER, render_wrapper(lab, Path(rel).as_posix(), gpu, unpublished), mode=0o644)
    if not unpublished:
        (install_dir / UNPUBLISHED_FILE).unlink(missing_ok=True)


def wrapper_unpublished(install_dir: Path) -> tuple[str, ...]:
    """The services ``DIR/compose.yaml`` keeps unpublished (its mark line)."""
    try:
        lines = (install_dir / WRAPPER).read_text("utf-8").splitlines()
    except OSError:
        return ()
    return next((tuple(line[len(_UNPUBLISHED_MARK):].split()) for line in lines
                 if line.startswith(_UNPUBLISHED_MARK + " ")), ())


def wrapper_gpu(install_dir: Path) -> bool:
    """Whether the install's ``DIR/compose.yaml`` turns the GPU reservations on."""
    try:
        return _GPU_MARK in (install_dir / WRAPPER).read_text("utf-8").splitlines()
    except OSError:
        return False


def compose_env() -> dict[str, str]:
    """The caller's environment without the ``COMPOSE_*`` variables that would redirect compose."""
    return {k: v for k, v in os.environ.items() if k not in _OWN_VARS}


@dataclass(frozen=True)
class Project:
    """One lab's compose project, run from the install dir (``name`` is for messages and labels)."""

    name: str
    install_dir: Path
    profiles: tuple[str, ...] = ()      # compose profiles to enable: the optional services to start

    def argv(self, *args: str) -> list[str]:
        profiles = [flag for p in self.profiles for flag in ("--profile", p)]
        return [*find_compose(), *profiles, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run compose with ``args``; InstallError with compose's own message when it fails, and
        before it runs when ``DIR/.env`` steers compose itself (``dotenv.compose_control_keys``)."""
        if steering := compose_control_keys(read_env(self.install_dir)):
            raise InstallError(f"{self.install_dir / ENV_FILE} sets {', '.join(steering)}: compose would obey "
                               "them instead of the lab's own compose.yaml and project",
                               hint="remove those lines from DIR/.env (labbuild and `docker compose` in DIR "
                                    "need no COMPOSE_* or DOCKER_* setting there)")
        try:
            proc = subprocess.run(self.argv(*args), cwd=self.install_dir, capture_output=True, text=True,
                                  timeout=timeout, env=compose_env())
        except subprocess.TimeoutExpired:
            raise InstallError(f"docker compose {' '.join(args)} did not finish within {timeout:.0f}s",
                               hint="check the engine (docker info) and try again") from None
        if check and proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-12:]
            raise InstallError(f"docker compose {args[0]} failed:\n  " + "\n  ".join(detail),
                               hint=hint_for(proc.stderr))
        return proc

    def up(self, timeout: float = 600) -> subprocess.CompletedProcess:
        """``up -d``. Compose may exit 0 although a pull failed: callers check the containers."""
        return self.run("up", "-d", "--remove-orphans", timeout=timeout)

    def down(self, volumes: bool = False) -> None:
        self.run("down", "--remove-orphans", *(["-v"] if volumes else []))

    def logs(self, service: str, tail: int = 20) -> str:
        proc = self.run("logs", "--no-color", "--tail", str(tail), service, check=False, timeout=60)
        return (proc.stdout + proc.stderr).strip()

    def container_ids(self) -> dict[str, list[str]]:
        """service -> ids of its containers (running or not)."""
        proc = self.run("ps", "-a", "--format", "{{.Service}} {{.ID}}", check=False, timeout=60)
        out: dict[str, list[str]] = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.setdefault(parts[0], []).append(parts[1])
        return out


_INTERPOLATED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [t for k, v in node.items() for t in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [t for v in node for t in _strings(v)]
    return []


def key_consumers(release: Path) -> dict[str, set[str]]:
    """Variable -> the services of ``release``'s compose.yaml that compose gives it to: every
    ``${VAR...}`` compose interpolates anywhere in a service (``$$`` is compose's escape, not a
    variable), and the compose secrets a service mounts whose source is an ``environment:`` key.
    What must be recreated when a key of DIR/.env changes."""
    path = release / COMPOSE_FILE
    try:
        doc = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InstallError(f"{path}: cannot be read ({str(exc)[:200]})", hint="install the bundle again") from None
    secret_env = {name: d.get("environment") for name, d in (doc.get("secrets") or {}).items() if isinstance(d, dict)}
    out: dict[str, set[str]] = {}
    for svc, body in (doc.get("services") or {}).items():
        for text in _strings(body):
            for var in _INTERPOLATED.findall(text.replace("$$", "")):
                out.setdefault(var, set()).add(svc)
        for ref in (body or {}).get("secrets") or ():
            source = ref.get("source") if isinstance(ref, dict) else ref
            if isinstance(secret_env.get(source), str):
                out.setdefault(secret_env[source], set()).add(svc)
    return out


def hint_for(stderr: str) -> str:
    """What to do about a compose failure, judged from its output."""
    text = stderr.lower()
    if "port is already allocated" in text or "address already in use" in text:
        return "another program uses a host port of this lab: stop it, or change the port and release again"
    if any(w in text for w in ("no such image", "pull access denied", "not found", "pulling", "/v2/")):
        return "an image is missing from the engine: install a bundle built with --with-images, or go online"
    return "read compose's message above; fix the cause and run install again"
