"""OCI images built by hand (no Docker, no internet) and pushed through the
registry API: single-platform Docker schema2 or OCI manifests, multi-arch
OCI indexes, and a runnable busybox httpd image for the real engine.

Every function is deterministic: the same arguments give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

BUSYBOX = Path("/bin/busybox")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass
class Image:
    """One platform's image: its manifest, config and layer blobs."""
    manifest: Blob
    config: Blob
    layers: list[Blob]
    platform: str
    diff_ids: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def image_id(self) -> str:
        """What Docker calls the image ID after loading: the config digest."""
        return self.config.digest

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


@dataclass
class Index:
    manifest: Blob
    images: list[Image]

    @property
    def digest(self) -> str:
        return self.manifest.digest


def make_layer(files: dict[str, bytes | tuple[bytes, int] | str], media_type: str = OCI_LAYER) -> tuple[Blob, str]:
    """A gzip tar layer from ``{path: bytes | (bytes, mode) | "->target" symlink}``.

    Returns the blob and its diff_id (sha256 of the uncompressed tar).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            value = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.mtime = 0
            if isinstance(value, str) and value.startswith("->"):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value[2:], 0o777
                tar.addfile(info)
                continue
            data, mode = (value if isinstance(value, tuple) else (value, 0o644))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", filename="", mtime=0, compresslevel=1) as g:
        g.write(tar_bytes)
    return Blob(gz.getvalue(), media_type), sha(tar_bytes)


def make_image(layers: list[dict], *, platform: str = "linux/amd64", cmd: list[str] | None = None,
               entrypoint: list[str] | None = None, env: list[str] | None = None,
               exposed: list[int] = (), docker: bool = False, label: str = "",
               healthcheck: list[str] | None = None) -> Image:
    """A single-platform image from layer file maps (see ``make_layer``).

    ``docker=True`` gives Docker schema2 media types, else OCI. ``label``
    changes the config (and so the image ID) without changing layers.
    """
    layer_type = DOCKER_LAYER if docker else OCI_LAYER
    built = [make_layer(files, layer_type) for files in layers]
    os_, arch, *variant = platform.split("/")
    cfg: dict = {"Env": env or ["PATH=/bin"], "Labels": {"test.label": label} if label else None}
    if cmd:
        cfg["Cmd"] = cmd
    if entrypoint:
        cfg["Entrypoint"] = entrypoint
    if exposed:
        cfg["ExposedPorts"] = {f"{p}/tcp": {} for p in exposed}
    if healthcheck:
        cfg["Healthcheck"] = {"Test": healthcheck}
    config = {
        "architecture": arch, "os": os_, "config": cfg,
        "created": "1970-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in built]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "labbuild tests"} for _ in built],
    }
    if variant:
        config["variant"] = variant[0]
    config_blob = Blob(canonical(config), DOCKER_CONFIG if docker else OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b, _ in built],
    }
    return Image(manifest=Blob(canonical(manifest), manifest["mediaType"]), config=config_blob,
                 layers=[b for b, _ in built], platform=platform, diff_ids=[d for _, d in built])


def make_index(images: list[Image], docker: bool = False) -> Index:
    """A multi-arch index (OCI) or manifest list (Docker) over ``images``."""
    entries = []
    for img in images:
        os_, arch, *variant = img.platform.split("/")
        plat = {"architecture": arch, "os": os_}
        if variant:
            plat["variant"] = variant[0]
        entries.append(img.manifest.descriptor(platform=plat))
    media = DOCKER_LIST if docker else OCI_INDEX
    body = {"schemaVersion": 2, "mediaType": media, "manifests": entries}
    return Index(manifest=Blob(canonical(body), media), images=images)


def busybox_files(pages: dict[str, bytes] | None = None) -> dict:
    """Files of a runnable image: static busybox, /bin/sh, and /www pages for httpd."""
    pages = pages if pages is not None else {"healthz": b"ok\n", "metrics": b"# TYPE up gauge\nup 1\n"}
    files: dict = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755), "bin/sh": "->busybox",
                   "tmp/.keep": b""}
    for name, body in pages.items():
        files[f"www/{name}"] = body
    return files


def busybox_httpd_image(port: int = 8080, *, version: str = "1", docker: bool = False,
                        platform: str = "linux/amd64", extra_files: dict | None = None) -> Image:
    """A runnable image: busybox httpd serving /www on ``port`` (healthz, metrics, version).

    Two layers: busybox itself (shared across versions) and the pages
    (which carry ``version``), like a real app image over a base.
    """
    pages = {"healthz": b"ok\n", "metrics": b"# TYPE up gauge\nup 1\n", "version": version.encode() + b"\n"}
    base = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755), "bin/sh": "->busybox", "tmp/.keep": b""}
    app = {f"www/{k}": v for k, v in pages.items()}
    app["data/.keep"] = b""
    if extra_files:
        app.update(extra_files)
    return make_image([base, app], platform=platform, docker=docker, exposed=[port],
                      cmd=["/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www"],
                      label=f"version={version}")


def upload_blob(client: httpx.Client, repo: str, digest: str, content) -> None:
    """Monolithic upload of ``content`` (bytes or an iterator of chunks) unless present."""
    if client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
        return
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    r.raise_for_status()
    location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    r = client.put(f"{location}{sep}digest={digest}", content=content,
                   headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()


def push_blob(client: httpx.Client, repo: str, blob: Blob) -> None:
    upload_blob(client, repo, blob.digest, blob.data)


def push_manifest(client: httpx.Client, repo: str, ref: str, blob: Blob) -> None:
    r = client.put(f"/v2/{repo}/manifests/{ref}", content=blob.data,
                   headers={"Content-Type": blob.media_type})
    r.raise_for_status()


def push_image(client: httpx.Client, repo: str, tag: str | None, image: Image) -> str:
    """Push blobs and manifest; tag it when ``tag``; return the manifest digest."""
    for blob in image.blobs():
        push_blob(client, repo, blob)
    push_manifest(client, repo, tag or image.digest, image.manifest)
    return image.digest


def push_index(client: httpx.Client, repo: str, tag: str | None, index: Index) -> str:
    for img in index.images:
        push_image(client, repo, None, img)
    push_manifest(client, repo, tag or index.digest, index.manifest)
    return index.digest


# --------------------------------------------------------------------------- Ollama models

OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_TEMPLATE = "application/vnd.ollama.image.template"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"


def ollama_model(weights: bytes = b"tiny", *, template: bytes = b"{{ .Prompt }}",
                 params: bytes = b'{"stop":["<|end|>"]}', family: str = "test") -> Image:
    """A tiny Ollama-format model, as registry.ollama.ai serves one: a Docker schema2 manifest
    whose config is a small JSON (application/vnd.docker.container.image.v1+json) and whose
    layers are the GGUF weights (``b"GGUF"`` + ``weights``), the template and the params."""
    layers = [Blob(b"GGUF" + weights, OLLAMA_MODEL), Blob(template, OLLAMA_TEMPLATE), Blob(params, OLLAMA_PARAMS)]
    config = {"model_format": "gguf", "model_family": family, "model_families": [family],
              "model_type": "1M", "file_type": "Q4_K_M", "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]}}
    config_blob = Blob(canonical(config), DOCKER_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config_blob.descriptor(),
                "layers": [b.descriptor() for b in layers]}
    return Image(manifest=Blob(canonical(manifest), DOCKER_MANIFEST), config=config_blob, layers=layers,
                 platform="linux/amd64")
