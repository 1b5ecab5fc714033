"""Find and run Docker Compose v2 for an installed release.

Every call has the same shape, from the release directory:

    docker compose -p <lab> -f compose.yaml --env-file lab.env --env-file <DIR>/.env ARGS...

so the project name (and therefore containers, networks and volumes) stays the
same across upgrades and rollbacks. ``find_compose`` prefers the ``docker
compose`` plugin and falls back to a v2 ``docker-compose`` on PATH or beside
the running Python (a venv's bin/).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..bundle.layout import COMPOSE_FILE, LAB_ENV
from ..errors import InstallError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def _is_v2(cmd: list[str]) -> bool:
    try:
        out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = out.stdout + out.stderr
    return out.returncode == 0 and ("v2." in text or "version 2." in text)


@functools.cache
def find_compose() -> tuple[str, ...]:
    """The compose command: ``("docker", "compose")`` or ``("/path/docker-compose",)``."""
    docker = shutil.which("docker")
    if docker and _is_v2([docker, "compose"]):
        return (docker, "compose")
    candidates = [shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")]
    for c in candidates:
        if c and os.access(c, os.X_OK) and _is_v2([c]):
            return (c,)
    raise InstallError("neither `docker compose` nor a v2 `docker-compose` was found",
                       hint="install the Docker Compose v2 plugin (docker-compose-plugin) "
                            "or a v2 docker-compose binary on PATH")


@dataclass(frozen=True)
class Project:
    """One lab's compose project: its name, the active release dir and the install's .env."""

    name: str
    release: Path
    env_file: Path
    profiles: tuple[str, ...] = ()      # compose profiles to enable: the optional services to start

    def argv(self, *args: str) -> list[str]:
        cmd = [*find_compose(), "-p", self.name, "-f", COMPOSE_FILE, "--env-file", LAB_ENV]
        for profile in self.profiles:
            cmd += ["--profile", profile]
        if self.env_file.exists():
            cmd += ["--env-file", str(self.env_file)]
        return cmd + list(args)

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run compose with ``args``; InstallError with compose's own message when it fails."""
        try:
            proc = subprocess.run(self.argv(*args), cwd=self.release, capture_output=True, text=True,
                                  timeout=timeout)
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


def hint_for(stderr: str) -> str:
    """What to do about a compose failure, judged from its output."""
    text = stderr.lower()
    if "port is already allocated" in text or "address already in use" in text:
        return "another program uses a host port of this lab: stop it, or change the port and release again"
    if any(w in text for w in ("no such image", "pull access denied", "not found", "pulling", "/v2/")):
        return "an image is missing from the engine: install a bundle built with --with-images, or go online"
    return "read compose's message above; fix the cause and run install again"
