"""The Docker engine, as the install side uses it: the client, image IDs against
the lock, the lab's containers, and a streaming ``docker load``.

``StreamingLoad`` feeds ``docker load`` a tar generated on the fly (the host
platform's docker-load manifest and blobs, read straight from the bundle
archive while it is verified; see ``builder.install.unpack``).
"""

from __future__ import annotations

import queue
import tarfile
import threading
from typing import Any, Iterator

import docker
from docker.transport.unixconn import UnixHTTPConnection

from ..bundle.layout import Manifest
from ..errors import InstallError
from ..platforms import expected_image_id
from .compose import PROJECT_LABEL, SERVICE_LABEL


# docker-py's unix-socket connection sends a request body (docker load, put_archive) in urllib3's
# default 16 KiB blocks: a GiB load stream then costs ~0.7 CPU-s and ~1 s more than in 1 MiB
# blocks (measured against the engine here). ``blocksize`` is urllib3's own connection setting;
# the SDK builds its connections without passing one, so it is raised after construction.
BODY_BLOCK = 1 << 20


def _send_bodies_in_big_blocks() -> None:
    cls = UnixHTTPConnection
    if getattr(cls, "_labbuild_blocksize", False):
        return
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.blocksize = max(getattr(self, "blocksize", 0) or 0, BODY_BLOCK)
    cls.__init__ = __init__
    cls._labbuild_blocksize = True


def docker_client():
    """A docker SDK client, or InstallError saying the engine does not answer."""
    _send_bodies_in_big_blocks()
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as exc:  # docker.errors.DockerException and transport errors
        raise InstallError(f"the Docker engine does not answer ({type(exc).__name__}: {exc})",
                           hint="start it (systemctl start docker) and check that you may use it "
                                "(member of the docker group, or root)") from None


def host_platform(client) -> str:
    """The engine's platform, e.g. ``linux/amd64``."""
    v = client.version()
    return f"{v.get('Os', 'linux')}/{v.get('Arch', 'amd64')}"


def image_id(client, reference: str) -> str | None:
    """The engine's image ID for ``reference``, or None when it has no such image."""
    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise InstallError(f"cannot inspect image {reference}: {exc.explanation or exc}") from None


def has_image(client, image_id: str) -> bool:
    """Whether the engine holds the image ``image_id`` (a config digest), whatever its tags."""
    try:
        return client.images.get(image_id).id == image_id
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise InstallError(f"cannot inspect image {image_id}: {exc.explanation or exc}") from None


def tag_image(client, image_id: str, reference: str) -> None:
    """Point ``reference`` (name:tag) at the engine's image ``image_id`` (a delta's unchanged images)."""
    repo, tag = reference.rsplit(":", 1)
    try:
        client.api.tag(image_id, repo, tag, force=True)
    except docker.errors.APIError as exc:
        raise InstallError(f"cannot tag image {image_id} as {reference}: {exc.explanation or exc}") from None


def check_image_ids(client, manifest: Manifest, platform: str, *, required: bool) -> dict[str, str]:
    """Every service's engine image ID must be its locked config digest for ``platform``.

    ``required`` (offline bundles): a missing image is an error too. Returns
    ``{service: image id}`` of what was checked.
    """
    checked: dict[str, str] = {}
    for svc, entry in sorted(manifest.services.items()):
        ref = entry.image
        want = expected_image_id(entry.config_digests, platform)
        if want is None:
            if required:
                raise InstallError(f"{svc}: the lock has no {platform} image for {ref}",
                                   hint="this bundle cannot run on this host's platform")
            continue
        got = image_id(client, ref)
        if got is None:
            if required:
                raise InstallError(f"{svc}: image {ref} is not in the engine",
                                   hint="the bundle's images/ lacks it: rebuild the bundle with --with-images")
            continue
        if got != want:
            raise InstallError(f"{svc}: image {ref} has ID {got} but the lock says {want}",
                               hint=f"another image holds this tag: `docker rmi {ref}`, then install again")
        checked[svc] = got
    return checked


def containers(client, project: str) -> dict[str, Any]:
    """service -> its (most recent) container of the compose project."""
    out: dict[str, Any] = {}
    for c in client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}):
        svc = c.labels.get(SERVICE_LABEL)
        if svc:
            out.setdefault(svc, c)
    return out


def running(client, project: str) -> list[str]:
    """Services of the project whose container is running (or restarting)."""
    return sorted(s for s, c in containers(client, project).items() if c.status in ("running", "restarting"))


def check_running_images(client, manifest: Manifest, platform: str) -> None:
    """Each running container's image ID must be the locked config digest."""
    found = containers(client, manifest.lab)
    for svc, entry in sorted(manifest.services.items()):
        c = found.get(svc)
        want = expected_image_id(entry.config_digests, platform)
        if c is None or want is None:
            continue
        got = c.attrs.get("Image")
        if got != want:
            raise InstallError(f"{svc}: the container runs image {got}, not the locked {want}",
                               hint=f"labbuild uninstall --dir DIR, `docker rmi {entry.image}`, install again")



def tar_header(name: str, size: int) -> bytes:
    """A ustar header of a regular file member (what docker load reads)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT)


class StreamingLoad:
    """``docker load`` fed from another thread: ``put`` tar bytes, then ``finish`` or ``abort``.

    The engine unpacks the whole stream before it imports anything, so an
    ``abort`` (the stream ends with an error, never with the tar trailer)
    leaves the engine unchanged. The queue is bounded: memory stays flat.

    ``size``: the stream's length, tar trailer included, when known in advance:
    the body is then sent with a Content-Length (``_QueueBody``), which the
    engine takes in about 1 s/GiB faster than a chunked body. ``finish``
    refuses a stream that came out another length (the engine would wait for
    the rest, or read past the end).
    """

    _END = object()
    TRAILER = b"\0" * 1024

    def __init__(self, docker_client, size: int | None = None, depth: int = 16) -> None:
        self.size = size
        self._put = 0
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(docker_client,), daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                yield self.TRAILER
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self, docker_client) -> None:
        try:
            body = self._chunks() if self.size is None else _QueueBody(self._chunks(), self.size)
            for msg in docker_client.api.load_image(body, quiet=True):
                if "errorDetail" in msg or "error" in msg:
                    raise InstallError("docker load failed: "
                                       + (msg.get("errorDetail", {}).get("message") or msg.get("error")),
                                       hint="check free disk space and the engine log (journalctl -u docker)")
        except BaseException as exc:  # handed to the caller in finish()
            self._error = exc
            while self._thread.is_alive() and not self._queue.empty():  # unblock a waiting put()
                self._queue.get_nowait()

    def put(self, data: bytes) -> None:
        if self._error is None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                self._put += len(data)
            self._queue.put(data)

    def finish(self) -> None:
        """End the stream; raise InstallError when the engine refused it."""
        if self.size is not None and self._put + len(self.TRAILER) != self.size:
            self.abort(InstallError("load stream length"))
            raise InstallError(f"internal error: the docker load stream has {self._put + len(self.TRAILER)} "
                               f"bytes, not the {self.size} announced; nothing was loaded",
                               hint="report it; `labbuild install` again")
        self.put(self._END)
        self._thread.join()
        if isinstance(self._error, InstallError):
            raise self._error
        if self._error is not None:
            raise InstallError(f"docker load failed: {self._error}",
                               hint="check free disk space and the engine log (journalctl -u docker)")

    def abort(self, reason: BaseException) -> None:
        """End the stream with an error: the engine discards everything it received."""
        self.put(reason)
        self._thread.join()


class _QueueBody:
    """A request body of known length read from a stream of blocks (http.client reads it
    ``blocksize`` at a time: slices of the current block, no copies). A stream that runs
    past ``size`` is an error before a byte too many is sent."""

    def __init__(self, blocks: Iterator[bytes], size: int) -> None:
        self._blocks, self._size, self._left = blocks, size, size
        self._rest = memoryview(b"")

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes | memoryview:
        while not self._rest:
            block = next(self._blocks, None)
            if block is None:
                return b""
            self._rest = memoryview(block)
        out = self._rest if n is None or n < 0 else self._rest[:n]
        self._rest = self._rest[len(out):]
        self._left -= len(out)
        if self._left < 0:
            raise InstallError(f"internal error: the docker load stream runs past its {self._size} bytes",
                               hint="report it; `labbuild install` again")
        return out
