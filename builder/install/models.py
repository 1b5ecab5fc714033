"""Models into volumes (install side): each in its format's on-disk layout, placed through the engine.

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

The format table (``builder.format.models``) says where a format keeps blobs and
manifests; Ollama's is the one format today.

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

import hashlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import docker

from ..bundle.reader import BlobRanges, file_fingerprint
from ..errors import InstallError
from ..format.manifest import Manifest, ManifestModel, ManifestService
from ..format.models import ModelFormat, model_format, shipped_models
from ..format.tar import DIRECTORY, END, HARDLINK, padding, tar_header
from ..host.engine import (
    ARCHIVE_BLOCK,
    FileRange,
    archive_stat,
    put_archive,
    put_archive_ranges,
    read_archive,
    unix_socket_path,
)
from ..host.labdir import Say

INCOMING = "blobs/.labbuild-incoming"


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


def present_with_hash(client, container_id: str, path: str, digest: str, size: int) -> bool:
    """True when ``path`` exists in the container with ``size`` bytes hashing to ``digest``."""
    st = archive_stat(client, container_id, path)
    if st is None or st.get("size") != size or st.get("linkTarget"):
        return False
    h = hashlib.sha256()
    for _, fh in read_archive(client, container_id, path):
        while fh is not None and (block := fh.read(ARCHIVE_BLOCK)):
            h.update(block)
    return "sha256:" + h.hexdigest() == digest


class _BundleBlobs:
    """The model blobs of a bundle archive, read at their offsets (``reader.BlobRanges``: the one
    blob reader), not hashed again: ``verified`` is the bundle's ``file_fingerprint`` taken
    before the verifying pass, and placement refuses a bundle file that changed since.
    ``plain``: an uncompressed tar, so a blob is a byte range of the file (``sendfile``).
    """

    def __init__(self, bundle: Path, verified: tuple[int, ...] | None) -> None:
        self.bundle, self.verified = bundle, verified
        self.check_unchanged()
        self.ranges = BlobRanges(bundle, compressed=True)
        self.plain = self.ranges.plain

    def check_unchanged(self, digest: str | None = None, seen: int = 0, size: int = 0) -> None:
        """InstallError when the bundle file changed since it verified (or a blob came up short)."""
        if seen != size or (self.verified is not None and file_fingerprint(self.bundle) != self.verified):
            raise InstallError(f"{self.bundle} changed since it verified" + (f" (while placing {digest})" if digest else ""),
                               hint="something is writing to the bundle file; copy it again and install again")

    def size(self, digest: str) -> int:
        if digest not in self.ranges:
            raise InstallError(f"the bundle holds no blob {digest}", hint="the bundle is damaged; copy it again")
        return self.ranges.size(digest)

    def read(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes, block by block (also from a compressed archive)."""
        return self.ranges.chunks(digest, check=False)

    def close(self) -> None:
        self.ranges.close()


@dataclass(frozen=True)
class _Blob:
    """A piece of the placement stream that is a blob of the bundle, checked before its link."""

    digest: str
    size: int


def _placement_pieces(fmt: ModelFormat, root: str, blobs: list[str], manifests: list[tuple[str, str]],
                      source: _BundleBlobs) -> list[bytes | _Blob]:
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
                pieces.append(tar_header(d + "/", kind=DIRECTORY))
    incoming = prefix + INCOMING
    for digest, final in [(d, fmt.blob_path(d)) for d in blobs] + manifests:
        size = source.size(digest)
        pieces += [tar_header(incoming, size), _Blob(digest, size),
                   padding(size) + tar_header(prefix + final, kind=HARDLINK, link=incoming)]
    pieces.append(tar_header(incoming, 0) + END)   # unlink the last file's second name; tar end
    return pieces


def _stream(pieces: list[bytes | _Blob], source: _BundleBlobs, placement: Placement) -> Iterator[bytes]:
    """The pieces as one byte stream (for the SDK's put_archive); checks each blob before its link."""
    for piece in pieces:
        if isinstance(piece, _Blob):
            seen = 0
            for block in source.read(piece.digest):
                seen += len(block)
                yield block
            source.check_unchanged(piece.digest, seen, piece.size)   # before the link entry
            placement.bytes_written += piece.size
        else:
            yield piece


def _send_pieces(client, container_id: str, target: str, pieces: list[bytes | _Blob], source: _BundleBlobs,
                 placement: Placement) -> None:
    """The pieces through the engine's raw archive PUT, blob bytes sent straight from the bundle
    file (``engine.put_archive_ranges``); each blob is checked before its link entry."""
    def sent(piece: _Blob):
        def check(n: int) -> None:
            source.check_unchanged(piece.digest, n, piece.size)   # before the link
            placement.bytes_written += piece.size
        return check

    with open(source.bundle, "rb") as fh:
        put_archive_ranges(client, container_id, target, fh, [
            FileRange(source.ranges.ranges[p.digest][0], p.size, sent(p)) if isinstance(p, _Blob) else p
            for p in pieces])


def place_service_models(client, container, entry: ManifestService, service: str, source: _BundleBlobs,
                         say: Say) -> Placement:
    """Place every model of one service into its container's volume (see the module docstring)."""
    placement = Placement(service)
    by_root: dict[tuple[str, str], list[ManifestModel]] = {}
    formats: dict[tuple[str, str], ModelFormat] = {}
    for m in entry.models:
        fmt = model_format(m.format)
        if fmt is None:
            raise InstallError(f"{service}: model {m.reference} has format {m.format!r}, which this labbuild "
                               "cannot place", hint="install with a newer labbuild")
        root_key = (_mount_target(entry, m, service), m.path.strip("/"))
        if formats.setdefault(root_key, fmt) is not fmt:
            raise InstallError(f"{service}: models of two formats share the root {m.path!r}",
                               hint="the bundle is inconsistent; rebuild it")
        by_root.setdefault(root_key, []).append(m)
    for (target, root), models in sorted(by_root.items()):
        fmt = formats[(target, root)]
        base = f"{target.rstrip('/')}/{root}"
        needed: dict[str, int] = {}
        for m in models:
            needed.update({b.digest: b.size for b in m.blobs})
        blobs = []
        for digest, size in sorted(needed.items()):
            if present_with_hash(client, container.id, f"{base}/{fmt.blob_path(digest)}", digest, size):
                placement.skipped.append(digest)
            else:
                blobs.append(digest)
        manifests = [(m.digest, fmt.manifest_path(m.name, m.tag)) for m in models]
        say(f"{service}: placing {len(models)} model(s) into {base} ({len(blobs)} blob(s) to write, "
            f"{len(placement.skipped)} already there)")
        pieces = _placement_pieces(fmt, root, blobs, manifests, source)
        try:
            if source.plain and unix_socket_path(client):
                _send_pieces(client, container.id, target, pieces, source, placement)
            else:
                put_archive(client, container.id, target, _stream(pieces, source, placement))
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
    ``verified``: the ``file_fingerprint`` taken before the bundle verified
    (placement stops, before a blob gets its name, when the file changed since).
    Returns a ``Placement`` per service with models; nothing when the bundle ships none.
    """
    shipped = shipped_models(manifest)
    if not shipped:
        return {}
    source = _BundleBlobs(bundle, verified)
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
    roots = sorted({(f"{_mount_target(entry, m, '')}/{m.path.strip('/')}", m.format) for m in entry.models})
    found: set[str] = set()
    try:
        for root, name in roots:
            fmt = model_format(name)
            for top in fmt.manifest_dirs if fmt else ():
                if archive_stat(client, container.id, f"{root}/{top}") is None:
                    continue
                for member, _ in read_archive(client, container.id, f"{root}/{top}"):
                    if member.isreg() or member.issym() or member.islnk():
                        ref = fmt.reference_of(member.name)
                        if ref:
                            found.add(ref)
    except (docker.errors.APIError, tarfile.TarError, OSError):
        return None
    return sorted(found)
