"""The Docker engine: everything the install side says to the Docker API goes through here.

The client (and the one process-wide setting it needs: request bodies in 1 MiB blocks),
image IDs against the lock, the lab's containers, a streaming ``docker load``
(``StreamingLoad``: a tar generated on the fly from the bundle archive while it is
verified; see ``builder.install.unpack``), the archive API (``archive_stat``,
``get_archive``, ``read_archive``, ``put_archive``), pulling by digest (``pull_stream``) and
the raw archive PUT over the engine's unix socket that sends file ranges with ``sendfile``
(``put_archive_ranges``), and commands run in a container with values in their environment
(``run_exec``). No other module touches the SDK's private attributes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import socket
import tarfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import docker
from docker.transport.unixconn import UnixHTTPConnection

from ..errors import InstallError
from ..format.manifest import Manifest
from ..format.tar import END
from ..platforms import expected_image_id
from .compose import PROJECT_LABEL, SERVICE_LABEL

LOOPBACK = "127.0.0.1"

# docker-py's unix-socket connection sends a request body (docker load, put_archive) in urllib3's
# default 16 KiB blocks: a GiB load stream then costs ~0.7 CPU-s and ~1 s more than in 1 MiB
# blocks (measured against the engine here). ``blocksize`` is urllib3's own connection setting;
# the SDK builds its connections without passing one, so it is raised after construction.
BODY_BLOCK = 1 << 20


def _send_bodies_in_big_blocks() -> None:
    """The one process-wide library setting of labbuild's install side (tested to take effect:
    ``tests/test_install_engine.py``). Idempotent."""
    cls = UnixHTTPConnection
    if getattr(cls, "_labbuild_blocksize", False):
        return
    init = cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.blocksize = max(getattr(self, "blocksize", 0) or 0, BODY_BLOCK)
    cls.__init__ = __init__
    cls._labbuild_blocksize = True


def body_block_size(client) -> int | None:
    """The block size the client's unix-socket connections send request bodies in (None: not a
    unix socket)."""
    if unix_socket_path(client) is None:
        return None
    return UnixHTTPConnection(client.api.base_url, unix_socket_path(client)).blocksize


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


def container_address(client, project: str, service: str) -> str | None:
    """The IPv4 address of the service's container on its (first) network, or None while it has none.
    A Linux host reaches a bridge network's containers at these addresses directly: how install
    probes and provisions a service that publishes no host port (the front door's UIs)."""
    c = containers(client, project).get(service)
    if c is None:
        return None
    c.reload()
    networks = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return next((n["IPAddress"] for _, n in sorted(networks.items()) if n.get("IPAddress")), None)


def service_endpoint(published: int | None, container_port: int | None,
                     address: Callable[[], str | None] | None, bind: str = "") -> tuple[str, int] | None:
    """Where the host reaches one port of a service, as ``(host, port)``: its published port on
    ``bind`` (127.0.0.1 when it binds every interface), else -- the front door publishes no UI port
    -- ``container_port`` at the container's own address on the lab network, ``address()`` asked now
    (a container made again has another). None while neither can be told. The one place that
    choice is made: health probes (install, status, check), provisioning calls, OpenBao's KV copy."""
    if published:
        return (LOOPBACK if bind in ("", "0.0.0.0") else "::1" if bind == "::" else bind), published
    host = address() if address is not None and container_port else None
    return (host, container_port) if host and container_port else None


def addresses(client, project: str) -> Callable[[str], str | None]:
    """``service -> container_address(...)``: what ``service_endpoint`` asks, per service."""
    return lambda service: container_address(client, project, service)


def container_health(client, project: str, service: str) -> str | None:
    """The engine's health status (starting | healthy | unhealthy) of the service's container's
    in-container healthcheck; None when it has no container or no healthcheck."""
    c = containers(client, project).get(service)
    return ((c.attrs.get("State") or {}).get("Health") or {}).get("Status") if c is not None else None


WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"


def check_project_owner(client, project: str, install_dir: Path) -> None:
    """InstallError when containers of compose project ``project`` were made from another
    directory than ``install_dir``: one lab installed in two dirs would otherwise share its
    containers and volumes (the project name is the lab's name), and the second install
    would take over the first's — with the second's secrets."""
    here = os.path.realpath(install_dir)
    others = sorted({c.labels.get(WORKING_DIR_LABEL) for c in
                     client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})}
                    - {None, here, str(install_dir)})
    others = [d for d in others if os.path.realpath(d) != here]
    if others:
        raise InstallError(f"the lab {project!r} is already installed in {others[0]}: its containers and volumes "
                           f"are the compose project {project!r}, which {install_dir} would share",
                           hint=f"use --dir {others[0]} for this lab (upgrade it there), or "
                                f"`labbuild uninstall --dir {others[0]}` first")


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
    TRAILER = END

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


# --------------------------------------------------------------------------- the archive API

ARCHIVE_BLOCK = 1 << 20


def archive_stat(client, container_id: str, path: str) -> dict | None:
    """The engine's stat of ``path`` in the container (HEAD on the archive API), or None."""
    resp = client.api.head(client.api._url("/containers/{0}/archive", container_id), params={"path": path})
    if resp.status_code == 404:
        return None
    client.api._raise_for_status(resp)
    raw = resp.headers.get("X-Docker-Container-Path-Stat")
    return json.loads(base64.b64decode(raw)) if raw else None


def get_archive(client, container_id: str, path: str) -> tuple[Iterator[bytes], dict]:
    """``path`` of the container as a tar stream of chunks, and the engine's stat of it."""
    chunks, stat = client.api.get_archive(container_id, path, chunk_size=ARCHIVE_BLOCK)
    return iter(chunks), stat


def put_archive(client, container_id: str, target: str, data: Iterable[bytes] | bytes) -> None:
    """Unpack a tar (bytes or chunks) into the container's directory ``target``."""
    client.api.put_archive(container_id, target, data)


EXEC_OUTPUT_CAP = 16 << 10


def run_exec(client, container_id: str, argv: Iterable[str], environment: dict[str, str],
             timeout: float = 300.0) -> tuple[int | None, str]:
    """Run ``argv`` in the running container with ``environment`` added to the exec's own
    environment (the API carries it in the exec's create body: never in argv, never logged);
    return its exit code (None when it did not finish within ``timeout``) and the last
    ``EXEC_OUTPUT_CAP`` bytes of its stdout and stderr. InstallError when the engine refuses."""
    api = client.api
    try:
        exec_id = api.exec_create(container_id, list(argv), environment=dict(environment), stdout=True,
                                  stderr=True)["Id"]
        stream = api.exec_start(exec_id, stream=True, demux=False)
    except docker.errors.APIError as exc:
        raise InstallError(f"the engine refused to run {list(argv)[:1]} in container {container_id[:12]}: "
                           f"{exc.explanation or exc}", hint="is the container running?") from None
    output = bytearray()

    def drain() -> None:
        try:
            for chunk in stream:
                output.extend(chunk)
                del output[:-EXEC_OUTPUT_CAP]
        except Exception:  # the connection broke: the exit code below says what happened
            pass

    reader = threading.Thread(target=drain, daemon=True, name="labbuild-exec")
    reader.start()
    reader.join(timeout)
    text = bytes(output).decode("utf-8", "replace")
    if reader.is_alive():
        return None, text
    try:
        return api.exec_inspect(exec_id).get("ExitCode"), text
    except docker.errors.APIError as exc:
        raise InstallError(f"cannot read the exit code of {list(argv)[:1]}: {exc.explanation or exc}") from None


def pull_stream(client, repository: str, tag: str) -> Iterator[dict]:
    """The engine's progress messages while it pulls ``repository:tag`` (a tag or a digest)."""
    return client.api.pull(repository, tag=tag, stream=True, decode=True)


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (the engine's streamed answers)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self._left:
            self._left = next(self._chunks, b"")
        if size is None or size < 0 or size >= len(self._left):
            out, self._left = self._left, b""
        else:
            out, self._left = self._left[:size], self._left[size:]
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def read_archive(client, container_id: str, path: str) -> Iterator[tuple[tarfile.TarInfo, BinaryIO | None]]:
    """Each member of ``path`` (a file or a directory) read through the engine, as
    ``(member, stream or None)``, in the order the engine sends them."""
    chunks, _ = get_archive(client, container_id, path)
    with tarfile.open(fileobj=io.BufferedReader(ChunkReader(chunks), ARCHIVE_BLOCK), mode="r|") as tar:
        for member in tar:
            yield member, (tar.extractfile(member) if member.isreg() else None)


def unix_socket_path(client) -> str | None:
    """The engine's unix socket path when the client talks to one (else None: use the SDK)."""
    adapter = getattr(client.api, "_custom_adapter", None)
    path = getattr(adapter, "socket_path", None)
    return path if isinstance(path, str) and client.api.base_url.startswith("http+docker://") else None


@dataclass(frozen=True)
class FileRange:
    """``size`` bytes of an open file at ``offset``, sent with ``sendfile``; ``sent(n)`` is called
    with the bytes that went out before the next piece (it may raise to stop the stream)."""

    offset: int
    size: int
    sent: Callable[[int], None]


def put_archive_ranges(client, container_id: str, target: str, fh: BinaryIO,
                       pieces: list[bytes | FileRange]) -> None:
    """The archive PUT of ``put_archive``, with a known length, over the engine's unix socket
    (``unix_socket_path`` must not be None): ``bytes`` pieces are written, ``FileRange`` pieces
    are sent straight from ``fh`` with ``sendfile`` (no copy through Python)."""
    length = sum(p.size if isinstance(p, FileRange) else len(p) for p in pieces)
    url = client.api._url("/containers/{0}/archive", container_id).split("://", 1)[1]
    path = "/" + url.split("/", 1)[1] + "?" + urllib.parse.urlencode({"path": target})
    head = (f"PUT {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: labbuild\r\n"
            f"Content-Type: application/x-tar\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(600)
        sock.connect(unix_socket_path(client))
        sock.sendall(head.encode())
        for piece in pieces:
            if isinstance(piece, FileRange):
                offset, left = piece.offset, piece.size
                while left > 0:
                    sent = sock.sendfile(fh, offset, min(left, 64 * ARCHIVE_BLOCK))
                    if sent == 0:
                        break
                    offset, left = offset + sent, left - sent
                piece.sent(piece.size - left)
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
