"""Kit for the air-gap chain with real parts: a registry, hand-built busybox images, the engine, compose.

``AirgapLab`` writes a throwaway lab (unique lab name, image repositories and
host ports, so tests run in parallel under xdist), pushes its images to the
test registry, locks it and releases image bundles. ``offline`` stops the
registry and removes every local copy of the images, so an install can only
succeed from the bundle. ``cleanup`` takes down whatever a test started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from support.oci import BUSYBOX, make_image, make_index, push_image, push_index
from support.registry import Registry, free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def httpd_image(version: str, platform: str = "linux/amd64", health: bytes = b"ok\n", name: str = "svc",
                start_delay: int = 0, salt: str = "", prelude: str = ""):
    """busybox httpd on 8080 serving /healthz and /version, under a shell that exits on
    SIGTERM (a bare httpd as PID 1 ignores it, and every stop would wait 10 s).
    ``salt`` (e.g. the lab's name) makes the image ID unique to one test;
    ``prelude``: shell commands run first (e.g. a "migration" rewriting /data)."""
    base = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755), "bin/sh": "->busybox", "tmp/.keep": b""}
    app = {"www/healthz": health, "www/version": version.encode() + b"\n", "www/name": name.encode() + b"\n",
           "data/.keep": b""}
    if salt:
        app["www/salt"] = salt.encode()
    if not health:
        del app["www/healthz"]
    delay = f"/bin/busybox sleep {start_delay} & wait; " if start_delay else ""
    script = (prelude + "; " if prelude else "") + f"trap 'exit 0' TERM INT; {delay}/bin/busybox httpd -f -p 8080 -h /www & wait"
    return make_image([base, app], platform=platform, exposed=[8080], cmd=["/bin/sh", "-c", script],
                      label=f"version={version}")


def path_with_venv() -> str:
    return f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@dataclass
class Service:
    name: str
    port: int                       # host port of the httpd
    version: str = "1"
    depends_on: tuple[str, ...] = ()
    secret: bool = False
    volume: bool = False
    health_path: str = "/healthz"
    multiarch: bool = False
    broken: bool = False            # serves no /healthz: never healthy
    start_delay: int = 0            # seconds before httpd starts (a slow first start)
    start_period: str = ""          # [health] start_period
    digest: str = ""
    image_id: str = ""
    extra: str = ""                 # more blueprint TOML, appended as is
    models: list = field(default_factory=list)   # [{name, tag, digest, path?, role?}] into the volume "data"
    prelude: str = ""               # shell run before httpd starts (see httpd_image)
    health: bool = True             # False: no [health] section (e.g. only an in-container [healthcheck])


@dataclass
class AirgapLab:
    root: Path
    registry: Registry
    name: str
    services: dict[str, Service] = field(default_factory=dict)
    refs: set[str] = field(default_factory=set)
    install_dirs: list[Path] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)   # the profile's optional services
    salt: str = ""                  # set (e.g. to the lab's name): image IDs no other test shares

    def repo(self, svc: str) -> str:
        return f"{self.name}/{svc}"

    def image_name(self, svc: str) -> str:
        return f"{self.registry.host}/{self.repo(svc)}"

    def push(self, svc: Service) -> None:
        """Build and push ``svc``'s image at its version; remember digest and image ID."""
        img = httpd_image(svc.version, health=b"" if svc.broken else b"ok\n", name=svc.name,
                          start_delay=svc.start_delay, salt=self.salt, prelude=svc.prelude)
        with self.registry.client() as client:
            if svc.multiarch:
                arm = httpd_image(svc.version, platform="linux/arm64", name=svc.name, salt=self.salt)
                svc.digest = push_index(client, self.repo(svc.name), svc.version, make_index([img, arm]))
            else:
                svc.digest = push_image(client, self.repo(svc.name), svc.version, img)
        svc.image_id = img.image_id
        self.refs.add(f"{self.image_name(svc.name)}:{svc.version}")

    def update(self, *names: str) -> None:
        """Push the images of ``names`` (default: every service), rewrite the blueprints, lock."""
        for name in names or sorted(self.services):
            self.push(self.services[name])
        self.write()
        self.lock()

    def write(self) -> None:
        (self.root / "blueprints" / "services").mkdir(parents=True, exist_ok=True)
        (self.root / "blueprints" / "lab.toml").write_text(
            f'[lab]\nname = "{self.name}"\ndefault_profile = "all"\n'
            f'platforms = ["linux/amd64", "linux/arm64"]\n\n'
            f'[profiles.all]\nservices = {sorted(set(self.services) - set(self.optional))!r}\n'
            .replace("'", '"') + (f'optional = {sorted(self.optional)!r}\n'.replace("'", '"') if self.optional else ""))
        for svc in self.services.values():
            text = (f'[service]\nname = "{svc.name}"\ndescription = "test service {svc.name}"\n'
                    f'phase = 0\ncategory = "app"\ndepends_on = {list(svc.depends_on)!r}\n\n'.replace("'", '"')
                    + f'[image]\nname = "{self.image_name(svc.name)}"\ntag = "{svc.version}"\n'
                      f'digest = "{svc.digest}"\n\n'
                    + f'[[ports]]\nname = "http"\ncontainer = 8080\nhost = {svc.port}\n\n'
                    + (f'[health]\nport = "http"\npath = "{svc.health_path}"\n'
                       + (f'start_period = "{svc.start_period}"\n' if svc.start_period else "") if svc.health else ""))
            if svc.secret:
                text += '\n[secrets.API_TOKEN]\ngenerate = "token"\nlength = 24\n'
                text += '\n[secrets.DB_PASSWORD]\ngenerate = "password"\nlength = 20\n'
            if svc.volume:
                text += '\n[[volumes]]\nname = "data"\ntarget = "/data"\n'
            text += svc.extra
            for m in svc.models:
                text += (f'\n[[models]]\nname = "{m["name"]}"\ntag = "{m["tag"]}"\ndigest = "{m["digest"]}"\n'
                         f'format = "ollama"\nvolume = "data"\npath = "{m.get("path", "models")}"\n'
                         + (f'role = "{m["role"]}"\n' if m.get("role") else ""))
            (self.root / "blueprints" / "services" / f"{svc.name}.toml").write_text(text)

    def lock(self) -> None:
        from builder.lock import make_lock
        make_lock(self.root)

    def push_model(self, model: str, tag: str, weights: bytes) -> dict:
        """Push a tiny Ollama-format model as ``<registry>/<lab>/<model>:<tag>``; its [[models]] entry."""
        from support.oci import ollama_model
        m = ollama_model(weights)
        with self.registry.client() as client:
            digest = push_image(client, f"{self.name}/{model}", tag, m)
        return {"name": f"{self.registry.host}/{self.name}/{model}", "tag": tag, "digest": digest, "image": m}

    def release(self, version: str, **kw) -> Path:
        from builder.bundle.release import build_release
        result = build_release(self.root, version, with_images=True, out_dir=self.root / "dist",
                               progress=False, **kw)
        return Path(result.bundle)

    def offline(self, engine) -> None:
        """Stop the registry and remove every local copy of the lab's images."""
        self.registry.stop()
        for ref in sorted(self.refs):
            with contextlib.suppress(Exception):
                engine.images.remove(ref, force=True)

    def compose(self, install_dir: Path, *args: str) -> subprocess.CompletedProcess:
        """``cd DIR && docker-compose ARGS`` as an operator types it: no flags, no COMPOSE_* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        return subprocess.run(["docker-compose", *args], cwd=install_dir, capture_output=True, text=True,
                              env={**env, "PATH": path_with_venv()})

    def cleanup(self, engine) -> None:
        for c in engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.name}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        for v in engine.volumes.list(filters={"label": f"com.docker.compose.project={self.name}"}):
            with contextlib.suppress(Exception):
                v.remove(force=True)
        for n in engine.networks.list(filters={"label": f"com.docker.compose.project={self.name}"}):
            with contextlib.suppress(Exception):
                n.remove()
        for ref in sorted(self.refs):
            with contextlib.suppress(Exception):
                engine.images.remove(ref, force=True)


def http_get(port: int, path: str) -> tuple[int, str]:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def one_service_lab(lab: AirgapLab) -> AirgapLab:
    """web alone (single platform), pushed and locked."""
    lab.services = {"web": Service("web", free_port())}
    lab.push(lab.services["web"])
    lab.write()
    lab.lock()
    return lab


def images_lab(lab: AirgapLab) -> AirgapLab:
    """web (amd64+arm64 index) <- api (amd64), sharing the busybox base layer; pushed and locked."""
    lab.services = {"web": Service("web", free_port(), multiarch=True),
                    "api": Service("api", free_port(), depends_on=("web",))}
    for svc in lab.services.values():
        lab.push(svc)
    lab.write()
    lab.lock()
    return lab


def two_service_lab(lab: AirgapLab, *, multiarch_web: bool = True) -> AirgapLab:
    """web (multi-arch index, secret, volume) <- api (single platform, depends on web)."""
    lab.services = {
        "web": Service("web", free_port(), secret=True, volume=True, multiarch=multiarch_web),
        "api": Service("api", free_port(), depends_on=("web",)),
    }
    for svc in lab.services.values():
        lab.push(svc)
    lab.write()
    lab.lock()
    return lab
