"""A real OCI registry (Debian's docker-registry, Distribution 2.8) on a free
loopback port, optionally with htpasswd auth."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    host: str                 # "127.0.0.1:PORT"
    storage: Path
    process: subprocess.Popen
    auth: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(workdir: Path, *, htpasswd: tuple[str, str] | None = None,
                   port: int | None = None) -> Registry:
    """Start ``docker-registry serve`` on 127.0.0.1; wait until /v2/ answers."""
    import shutil
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    port = port or free_port()
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    auth_block = ""
    if htpasswd:
        user, password = htpasswd
        import bcrypt
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (workdir / "htpasswd").write_text(f"{user}:{hashed}\n")
        auth_block = (f"auth:\n  htpasswd:\n    realm: test\n    path: {workdir / 'htpasswd'}\n")
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth_block
    )
    log = open(workdir / "registry.log", "ab")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    reg = Registry(host=f"127.0.0.1:{port}", storage=storage, process=proc, auth=htpasswd)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited: {(workdir / 'registry.log').read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{reg.url}/v2/", timeout=1)
            if r.status_code in (200, 401):
                return reg
        time.sleep(0.1)
    reg.stop()
    raise RuntimeError("registry did not start within 15 s")
