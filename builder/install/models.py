"""Models into volumes (install side): Ollama's on-disk layout, placed through the engine.

``place_models`` runs after the bundle verified (``builder.install.unpack``
hashed every model blob against manifest.json, SHA256SUMS and the signature
while it loaded the images: a bad blob aborts the install before anything is
placed). It then streams each service's models from the bundle archive into
the service's own container with the engine's archive API (``put_archive``,
a tar written on the fly), so it works with any volume driver, on a created
(not yet started) container as on a running one, and needs no image but the
service's:

    <target>/<path>/blobs/sha256-<hex>                         config and every layer
    <target>/<path>/manifests/<host>/<namespace>/<model>/<tag> the exact manifest bytes

Ollama's source defines this layout: ``manifest.BlobsPath`` (``sha256:`` ->
``sha256-``; ollama/ollama ``manifest/paths.go``, formerly
``server/modelpath.go GetBlobsPath``) and ``Name.Filepath()`` =
``host/namespace/model/tag`` under ``manifests/`` (``types/model/name.go``; a
registry port stays in the host part: ``127.0.0.1:5000/...``). Newer Ollama
also writes ``manifests-v2/`` but still reads the legacy ``manifests/`` path
(``resolveManifestPath``), which every version reads — so that is what is written.

Order and atomicity, within one tar stream per service: blobs first, manifests
last, and each file is written under a temporary name and then linked to its
final name (a tar hard-link entry, which the engine applies only after the
data entry was written completely). The temporary name is one fixed file,
``blobs/.labbuild-incoming``, rewritten for every file and emptied at the end:
no litter, no second copy. The blobs were hashed once, by the verifying pass;
placement reads them at their archive offsets and checks, before each link
entry, that the bundle file is still the one that verified (device, inode,
size, mtime, ctime) and that the blob came out whole — else the stream ends
and the blob never gets its final name. (A second sha256 pass here would
double the CPU of a multi-GiB install: see bench/models.py.) Blobs already
present with the right hash are skipped (read back through the engine and
hashed); nothing is ever deleted, so models an operator pulled stay, across
upgrades and rollbacks.

``model_inventory`` lists the models present in a service's volume (``status``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import docker

from ..bundle.layout import Manifest, ManifestModel, ManifestService, model_blob_path, shipped_models
from ..bundle.reader import is_gzip
from ..errors import InstallError
from .state import Say

BLOCK = 1 << 20
INCOMING = "blobs/.labbuild-incoming"
_HEX = re.compile(r"^sha256:([0-9a-f]{64})$")


# --------------------------------------------------------------------------- the layout (pure)

def ollama_blob_path(digest: str) -> str:
    """``sha256:<hex>`` -> ``blobs/sha256-<hex>`` (Ollama's ``BlobsPath``)."""
    m = _HEX.match(digest)
    if not m:
        raise InstallError(f"{digest!r} is not a sha256 digest Ollama can store")
    return f"blobs/sha256-{m[1]}"


def ollama_manifest_path(name: str, tag: str) -> str:
    """``registry.ollama.ai/library/qwen2.5`` + ``0.5b`` -> ``manifests/registry.ollama.ai/library/qwen2.5/0.5b``.

    ``Name.Filepath()``: host/namespace/model/tag; the host keeps its port
    (``127.0.0.1:5000``), a literal colon in the directory name.
    """
    parts = name.split("/")
    if len(parts) != 3 or not all(parts) or not tag or any(p in (".", "..") for p in (*parts, tag)):
        raise InstallError(f"{name}:{tag} is not host/namespace/model:tag",
                           hint="Ollama's layout holds exactly one namespace")
    return "manifests/" + "/".join((*parts, tag))


def reference_of_manifest_path(rel: str) -> str | None:
    """The inverse: ``manifests/<host>/<ns>/<model>/<tag>`` -> ``host/ns/model:tag`` (else None)."""
    parts = rel.strip("/").split("/")
    if len(parts) != 5 or parts[0] not in ("manifests", "manifests-v2") or parts[-1].startswith("."):
        return None
    return "/".join(parts[1:4]) + ":" + parts[4]


# --------------------------------------------------------------------------- results

@dataclass
class Placement:
    """What placing one service's models did."""

    service: str
    models: list[str] = field(default_factory=list)        # name:tag placed (or already there)
    written: list[str] = field(default_factory=list)       # blob digests written
    skipped: list[str] = field(default_factory=list)       # blob digests already present with the right hash
    bytes_written: int = 0

    def to_json(self) -> dict:
        return {"models": self.models, "blobs_written": len(self.written), "blobs_skipped": len(self.skipped),
                "bytes_written": self.bytes_written}


# --------------------------------------------------------------------------- the engine side

def _mount_target(entry: ManifestService, model: ManifestModel, service: str) -> str:
    for v in entry.volumes:
        if v.name == model.volume:
            return v.target.rstrip("/") or "/"
    raise InstallError(f"{service}: model {model.reference} names volume {model.volume!r}, which the service lacks",
                       hint="the bundle is inconsistent; rebuild it")


def _stat(client, container_id: str, path: str) -> dict | None:
    """The engine's stat of ``path`` in the container (HEAD on the archive API), or None."""
    resp = client.api.head(client.api._url("/containers/{0}/archive", container_id), params={"path": path})
    if resp.status_code == 404:
        return None
    client.api._raise_for_status(resp)
    raw = resp.headers.get("X-Docker-Container-Path-Stat")
    return json.loads(base64.b64decode(raw)) if raw else None


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the engine's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n


def _read_back(client, container_id: str, path: str) -> Iterator[tuple[str, BinaryIO]]:
    """Each regular file of ``path`` (a file or a directory) as ``(relative name, stream)``, read
    through the engine."""
    chunks, _ = client.api.get_archive(container_id, path, chunk_size=BLOCK)
    with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(iter(chunks)), BLOCK), mode="r|") as tar:
        for member in tar:
            if member.isreg():
                yield member.name, tar.extractfile(member)


def present_with_hash(client, container_id: str, path: str, digest: str, size: int) -> bool:
    """True when ``path`` exists in the container with ``size`` bytes hashing to ``digest``."""
    st = _stat(client, container_id, path)
    if st is None or st.get("size") != size or st.get("linkTarget"):
        return False
    h = hashlib.sha256()
    for _, fh in _read_back(client, container_id, path):
        while block := fh.read(BLOCK):
            h.update(block)
    return "sha256:" + h.hexdigest() == digest


def _header(name: str, size: int = 0, *, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = size, kind, link, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 512)


def bundle_fingerprint(bundle: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or written to: device, inode, size, mtime, ctime."""
    st = os.stat(bundle)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _BundleBlobs:
    """Random access to the model blobs of a bundle archive (member offsets, no extraction).

    ``verified``: the bundle's ``bundle_fingerprint`` taken before the
    verifying pass; placement refuses a bundle file that changed since.
    ``plain``: the archive is an uncompressed tar (what image bundles are), so a
    blob is a byte range of the file, which can be sent with ``sendfile``.
    """

    def __init__(self, bundle: Path, wanted: set[str], verified: tuple[int, ...] | None) -> None:
        self.bundle, self.verified = bundle, verified
        self.check_unchanged()
        self.plain = not is_gzip(bundle)
        self._tar = tarfile.open(bundle, mode="r:*")
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in self._tar:
            rel = member.name.split("/", 1)[1] if "/" in member.name else ""
            if rel in wanted and member.isreg():
                self.members[rel] = member

    def check_unchanged(self, digest: str | None = None, seen: int = 0, size: int = 0) -> None:
        """InstallError when the bundle file changed since it verified (or a blob came up short)."""
        if seen != size or (self.verified is not None and bundle_fingerprint(self.bundle) != self.verified):
            raise InstallError(f"{self.bundle} changed since it verified" + (f" (while placing {digest})" if digest else ""),
                               hint="something is writing to the bundle file; copy it again and install again")

    def member(self, digest: str) -> tarfile.TarInfo:
        member = self.members.get(model_blob_path(digest))
        if member is None:
            raise InstallError(f"the bundle holds no blob {digest}", hint="the bundle is damaged; copy it again")
        return member

    def read(self, member: tarfile.TarInfo) -> Iterator[bytes]:
        """The blob's bytes, block by block (through tarfile: also for a compressed archive)."""
        fh = self._tar.extractfile(member)
        while block := fh.read(BLOCK):
            yield block

    def close(self) -> None:
        self._tar.close()


@dataclass(frozen=True)
class _Blob:
    """A piece of the placement stream that is a blob of the bundle, checked before its link."""

    digest: str
    member: tarfile.TarInfo

    @property
    def size(self) -> int:
        return self.member.size


def _placement_pieces(root: str, blobs: list[str], manifests: list[tuple[str, str]], source: _BundleBlobs,
                      placement: Placement) -> list[bytes | _Blob]:
    """The tar stream put into the volume, as bytes and blob pieces: directories, then each blob
    into INCOMING and linked to its name, then each manifest the same way, then INCOMING emptied.
    A ``_Blob`` piece is followed by its padding and its link header."""
    prefix = f"{root}/" if root else ""
    pieces: list[bytes | _Blob] = []
    dirs: set[str] = set()
    for rel in [INCOMING] + [m for _, m in manifests]:
        parts = (prefix + rel).split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                pieces.append(_header(d + "/", kind=tarfile.DIRTYPE))
    incoming = prefix + INCOMING
    for digest, final in [(d, ollama_blob_path(d)) for d in blobs] + manifests:
        member = source.member(digest)
        pieces += [_header(incoming, member.size), _Blob(digest, member),
                   _pad(member.size) + _header(prefix + final, kind=tarfile.LNKTYPE, link=incoming)]
    pieces.append(_header(incoming, 0) + b"\0" * 1024)   # unlink the last file's second name; tar end
    return pieces


def _stream(pieces: list[bytes | _Blob], source: _BundleBlobs, placement: Placement) -> Iterator[bytes]:
    """The pieces as one byte stream (for the SDK's put_archive); checks each blob before its link."""
    for piece in pieces:
        if isinstance(piece, _Blob):
            seen = 0
            for block in source.read(piece.member):
                seen += len(block)
                yield block
            source.check_unchanged(piece.digest, seen, piece.size)   # before the link entry
            placement.bytes_written += piece.size
        else:
            yield piece


def _unix_socket(client) -> str | None:
    """The engine's unix socket path when the client talks to one (else None: use the SDK)."""
    adapter = getattr(client.api, "_custom_adapter", None)
    path = getattr(adapter, "socket_path", None)
    return path if isinstance(path, str) and client.api.base_url.startswith("http+docker://") else None


def _send_pieces(client, container_id: str, target: str, pieces: list[bytes | _Blob], source: _BundleBlobs,
                 placement: Placement) -> None:
    """PUT the archive with a known length over the engine's unix socket, blob bytes sent straight
    from the bundle file with ``sendfile`` (no copy through Python). Same API call as put_archive."""
    length = sum(p.size if isinstance(p, _Blob) else len(p) for p in pieces)
    url = client.api._url("/containers/{0}/archive", container_id).split("://", 1)[1]
    path = "/" + url.split("/", 1)[1] + "?" + urllib.parse.urlencode({"path": target})
    head = (f"PUT {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: labbuild\r\n"
            f"Content-Type: application/x-tar\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, open(source.bundle, "rb") as fh:
        sock.settimeout(600)
        sock.connect(_unix_socket(client))
        sock.sendall(head.encode())
        for piece in pieces:
            if isinstance(piece, _Blob):
                offset, left = piece.member.offset_data, piece.size
                while left > 0:
                    sent = sock.sendfile(fh, offset, min(left, 64 * BLOCK))
                    if sent == 0:
                        break
                    offset, left = offset + sent, left - sent
                source.check_unchanged(piece.digest, piece.size - left, piece.size)   # before the link
                placement.bytes_written += piece.size
            else:
                sock.sendall(piece)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = answer.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        body = answer.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace").strip()
        raise InstallError(f"the engine refused the archive ({b' '.join(status[1:]).decode()}): {body[-300:]}",
                           hint="check free space in the volume and the engine log")


def place_service_models(client, container, entry: ManifestService, service: str, source: _BundleBlobs,
                         say: Say) -> Placement:
    """Place every model of one service into its container's volume (see the module docstring)."""
    placement = Placement(service)
    by_root: dict[tuple[str, str], list[ManifestModel]] = {}
    for m in entry.models:
        if m.format != "ollama":
            raise InstallError(f"{service}: model {m.reference} has format {m.format!r}, which this labbuild "
                               "cannot place", hint="install with a newer labbuild")
        by_root.setdefault((_mount_target(entry, m, service), m.path.strip("/")), []).append(m)
    for (target, root), models in sorted(by_root.items()):
        base = f"{target.rstrip('/')}/{root}"
        needed: dict[str, int] = {}
        for m in models:
            needed.update({b.digest: b.size for b in m.blobs})
        blobs = []
        for digest, size in sorted(needed.items()):
            if present_with_hash(client, container.id, f"{base}/{ollama_blob_path(digest)}", digest, size):
                placement.skipped.append(digest)
            else:
                blobs.append(digest)
        manifests = [(m.digest, ollama_manifest_path(m.name, m.tag)) for m in models]
        say(f"{service}: placing {len(models)} model(s) into {base} ({len(blobs)} blob(s) to write, "
            f"{len(placement.skipped)} already there)")
        pieces = _placement_pieces(root, blobs, manifests, source, placement)
        try:
            if source.plain and _unix_socket(client):
                _send_pieces(client, container.id, target, pieces, source, placement)
            else:
                client.api.put_archive(container.id, target, _stream(pieces, source, placement))
            placement.written += blobs
        except InstallError:
            raise
        except Exception as exc:  # docker.errors.APIError, requests' connection errors
            raise InstallError(f"{service}: placing models into {base} failed ({type(exc).__name__}: "
                               f"{getattr(exc, 'explanation', None) or exc})",
                               hint="check free space in the volume and the engine log") from None
        placement.models += [m.reference for m in models]
    return placement


def place_models(client, bundle: Path, manifest: Manifest, containers: dict, say: Say,
                 verified: tuple[int, ...] | None = None) -> dict[str, Placement]:
    """Place the models an (already verified) bundle ships into each service's volume.

    ``containers``: service -> its container (created or running);
    ``verified``: the ``bundle_fingerprint`` taken before the bundle verified
    (placement stops, before a blob gets its name, when the file changed since).
    Returns a ``Placement`` per service with models; nothing when the bundle ships none.
    """
    shipped = shipped_models(manifest)
    if not shipped:
        return {}
    wanted = {model_blob_path(d) for models in shipped.values() for m in models
              for d in (m.digest, *(b.digest for b in m.blobs))}
    source = _BundleBlobs(bundle, wanted, verified)
    try:
        out = {}
        for service in shipped:
            container = containers.get(service)
            if container is None:
                raise InstallError(f"{service}: no container to place its models through",
                                   hint="docker compose could not create it; see the messages above")
            out[service] = place_service_models(client, container, manifest.services[service], service, source, say)
        return out
    finally:
        source.close()


def model_inventory(client, container, entry: ManifestService) -> list[str] | None:
    """``host/namespace/model:tag`` of every model in the service's model roots (those of its
    declared models), or None when the engine cannot tell."""
    roots = sorted({f"{_mount_target(entry, m, '')}/{m.path.strip('/')}" for m in entry.models})
    found: set[str] = set()
    try:
        for root in roots:
            for top in ("manifests", "manifests-v2"):
                if _stat(client, container.id, f"{root}/{top}") is None:
                    continue
                chunks, _ = client.api.get_archive(container.id, f"{root}/{top}", chunk_size=BLOCK)
                with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(iter(chunks)), BLOCK), mode="r|") as tar:
                    for member in tar:
                        if member.isreg() or member.issym() or member.islnk():
                            ref = reference_of_manifest_path(member.name)
                            if ref:
                                found.add(ref)
    except (docker.errors.APIError, tarfile.TarError, OSError):
        return None
    return sorted(found)
