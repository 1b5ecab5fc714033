"""A small, sync, thread-safe client for the OCI Distribution API v2.

This is the only module of labbuild that talks to registries. ``builder.lock``
resolves pins through it; the bundle stage downloads image blobs through it
for air-gapped bundles. One ``RegistryClient`` is shared by the threads of a
``ThreadPoolExecutor``::

    with RegistryClient(insecure_registries=lab.insecure_registries) as client:
        manifest = client.fetch_manifest("docker.io/qdrant/qdrant", "sha256:...")
        config = client.fetch_blob("docker.io/qdrant/qdrant", config_digest)
        with client.open_blob("docker.io/qdrant/qdrant", layer_digest, offset=done) as blob:
            if not blob.range_honoured:
                ...  # the body starts at byte 0: reset the hasher and the file
            for chunk in blob:
                ...  # the caller hashes and writes

Trust nothing: every manifest and small blob is hashed and must equal the
digest it was asked for (a mismatch raises at once and is never retried into
acceptance); ``open_blob`` leaves hashing to the caller, who streams.

Transport policy: plain HTTP only for loopback registries (127.0.0.0/8,
``localhost``, ``[::1]``, as Docker allows) and the ``insecure_registries``
given; HTTPS otherwise. Bounded timeouts; retries with exponential backoff
and jitter on 429/5xx, connection errors and timeouts, honouring
``Retry-After``; every call has an overall deadline, and a registry that
stays unreachable is remembered as dead so later calls fail at once (a dead
registry fails a whole ``lock`` within 60 s). At most
``per_registry_concurrency`` requests run against one registry at a time.

Authentication: credentials come from ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` (``auths`` entries with a base64 ``auth`` or
``username``/``password``; credential helpers are not consulted). Basic auth
and the Bearer token flow (``WWW-Authenticate: Bearer realm,service,scope``;
anonymous, or with the credentials) are supported; tokens are cached per
scope until they expire.

Every failure is a ``RegistryError`` carrying ``registry``, ``image``,
``digest`` (or ``None``) and ``status`` (HTTP status or ``None``) attributes
and a hint.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import ipaddress
import json
import os
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

import httpx

from .errors import RegistryError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- names

@dataclass(frozen=True)
class ImageName:
    """A repository as the registry API sees it: which host, which repository path."""

    registry: str       # host[:port] contacted, e.g. "registry-1.docker.io", "127.0.0.1:5000"
    repository: str     # e.g. "library/postgres"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


def parse_image_name(name: str) -> ImageName:
    """Normalise a repository name as Docker does.

    ``postgres`` and ``docker.io/postgres`` -> ``registry-1.docker.io/library/postgres``;
    the first component is a registry host when it has a ``.`` or ``:`` or is
    ``localhost``.
    """
    if not name or "@" in name or name != name.strip():
        raise registry_error(f"{name!r} is not an image name", image=name,
                             hint="expected e.g. docker.io/qdrant/qdrant")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, path = first, rest
    else:
        host, path = "docker.io", name
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return ImageName(registry=host, repository=path)


def _host_only(registry: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """True for registries on this host: 127.0.0.0/8, ``localhost``, ``[::1]``."""
    host = _host_only(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_scheme(registry: str, insecure_registries: tuple[str, ...] | list[str] = ()) -> str:
    """``http`` for loopback and explicitly insecure registries, else ``https``."""
    insecure = {_normalise_registry(r) for r in insecure_registries}
    if is_loopback(registry) or registry in insecure or _host_only(registry) in insecure:
        return "http"
    return "https"


def _normalise_registry(key: str) -> str:
    """A registry as written in config.json or lab.toml -> the host[:port] contacted."""
    key = key.strip()
    key = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]
    return DOCKER_HUB if key in _HUB_ALIASES else key


# --------------------------------------------------------------------------- credentials

def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def load_credentials(path: Path | None = None) -> dict[str, tuple[str, str]]:
    """``{registry: (user, password)}`` from a Docker config.json (``auths`` only).

    A missing file means no credentials; an unreadable one is an error, as it
    is for the docker CLI.
    """
    path = path or docker_config_path()
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise registry_error(f"{path}: cannot read Docker credentials ({exc})",
                            hint="fix or remove the file, or point DOCKER_CONFIG elsewhere") from None
    creds: dict[str, tuple[str, str]] = {}
    auths = data.get("auths") if isinstance(data, dict) else None
    for key, entry in (auths or {}).items():
        if not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise registry_error(f"{path}: auths.{key}.auth is not base64 of user:password",
                                     registry=_normalise_registry(key),
                                     hint=f"run `docker login {key}` again") from None
        if user and password is not None:
            creds[_normalise_registry(key)] = (user, password)
    return creds


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as served: its bytes hash to ``digest``."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        return json.loads(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class BlobStream:
    """The body of one blob, yielded by ``RegistryClient.open_blob``.

    Iterate it for byte chunks. ``range_honoured`` says whether the body
    starts at the requested offset (True, also when offset was 0) or at byte
    0 because the server ignored the Range (False: reset hasher and file).
    ``start`` is the offset of the first byte yielded; ``total_size`` is the
    blob's full size when the server said it, else None. A transfer error
    while iterating raises ``RegistryError`` (nothing is retried after the
    first byte: resume with a new ``open_blob(..., offset=bytes_kept)``).
    """

    def __init__(self, response: httpx.Response, start: int, total_size: int | None,
                 error: "_ErrorFactory") -> None:
        self._response = response
        self.start = start
        self.range_honoured = True
        self.total_size = total_size
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in self._response.iter_bytes(_CHUNK):
                received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise self._error(f"transfer interrupted after {self.start + received} bytes "
                              f"({type(exc).__name__}: {exc})",
                              hint=f"resume with offset={self.start + received}") from None


# --------------------------------------------------------------------------- errors

def registry_error(message: str, *, registry: str | None = None, image: str | None = None,
                   digest: str | None = None, status: int | None = None,
                   hint: str | None = None) -> RegistryError:
    """A RegistryError carrying ``registry``, ``image``, ``digest`` and ``status`` attributes."""
    err = RegistryError(message, hint=hint)
    err.registry, err.image, err.digest, err.status = registry, image, digest, status
    return err


class _ErrorFactory:
    """Builds RegistryErrors that name registry, image and digest."""

    def __init__(self, ref: ImageName, digest: str | None) -> None:
        self.ref = ref
        self.digest = digest

    def __call__(self, what: str, *, hint: str | None = None, status: int | None = None) -> RegistryError:
        subject = f"{self.ref}@{self.digest}" if self.digest else str(self.ref)
        return registry_error(f"registry {self.ref.registry}: {subject}: {what}", registry=self.ref.registry,
                              image=str(self.ref), digest=self.digest, status=status, hint=hint)


def _registry_message(resp: httpx.Response) -> str:
    """The registry's own error text (``{"errors":[{"code","message"}]}``) when it sent one."""
    try:
        errors = json.loads(resp.content).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ``("bearer", {"realm": "x", "service": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z]+)="([^"]*)"', rest)}
    return scheme.lower(), params


# --------------------------------------------------------------------------- the client

class RegistryClient:
    """A sync OCI Distribution client, safe to share between threads.

    ``timeout`` bounds each connect/read/write; ``retries`` is how many times
    a request is retried after 429/5xx/connection errors/timeouts, with
    exponential backoff from ``backoff`` seconds plus jitter; ``deadline``
    bounds one call including its retries; ``per_registry_concurrency``
    caps concurrent requests to one registry.
    """

    def __init__(self, insecure_registries: tuple[str, ...] | list[str] = (), *,
                 timeout: float = 10.0, retries: int = 4, backoff: float = 0.5,
                 deadline: float = 45.0, per_registry_concurrency: int = 32,
                 credentials: dict[str, tuple[str, str]] | None = None) -> None:
        self.insecure_registries = tuple(insecure_registries)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline
        self.per_registry_concurrency = per_registry_concurrency
        self._credentials = load_credentials() if credentials is None else dict(credentials)
        self._http = httpx.Client(timeout=timeout, follow_redirects=True,
                                  limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                                  headers={"User-Agent": "labbuild"})
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._challenges: dict[str, tuple[str, dict[str, str]]] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._token_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._dead: dict[str, str] = {}

    # -- lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API
    def fetch_manifest(self, image_name: str, reference: str) -> Manifest:
        """The manifest or index at ``reference`` (a tag or a ``sha256:`` digest).

        With a digest, the bytes must hash to it (else RegistryError, no retry).
        With a tag, the digest is the hash of the bytes served (and must equal
        the ``Docker-Content-Digest`` header when the registry sends one).
        """
        ref = parse_image_name(image_name)
        by_digest = reference.startswith("sha256:") or ":" in reference
        error = _ErrorFactory(ref, reference if by_digest else None)
        if by_digest and not _DIGEST_RE.match(reference):
            raise error("unsupported digest (only sha256:<64 hex> is accepted)")
        with self._request(ref, "GET", f"manifests/{reference}", error,
                           headers={"Accept": ACCEPT_MANIFESTS}, read_limit=4 << 20) as resp:
            data = resp.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if by_digest and digest != reference:
            raise error(f"manifest bytes hash to {digest}, not to the digest asked for",
                        hint="the registry or something between it and you altered the manifest; "
                             "do not trust this registry until that is explained")
        served = resp.headers.get("Docker-Content-Digest")
        if not by_digest and served and served != digest:
            raise _ErrorFactory(ref, served)(
                f"tag {reference}: Docker-Content-Digest says {served} but the bytes hash to {digest}",
                hint="the manifest was altered in transit")
        return Manifest(data=data, media_type=_media_type(data, resp, error), digest=digest)

    def resolve_tag(self, image_name: str, tag: str) -> str:
        """The digest ``tag`` points to now: ``HEAD`` first, ``GET`` when HEAD says nothing."""
        ref = parse_image_name(image_name)
        error = _ErrorFactory(ref, None)
        try:
            with self._request(ref, "HEAD", f"manifests/{tag}", error,
                               headers={"Accept": ACCEPT_MANIFESTS}) as resp:
                digest = resp.headers.get("Docker-Content-Digest", "")
            if _DIGEST_RE.match(digest):
                return digest
        except RegistryError as exc:
            if getattr(exc, "status", None) == 404 or ref.registry in self._dead:
                raise
        return self.fetch_manifest(image_name, tag).digest

    def fetch_blob(self, image_name: str, digest: str, max_size: int = 64 << 20) -> bytes:
        """A small blob (an image config), verified against ``digest``."""
        ref = parse_image_name(image_name)
        error = _ErrorFactory(ref, digest)
        if not _DIGEST_RE.match(digest):
            raise error("unsupported digest (only sha256:<64 hex> is accepted)")
        with self._request(ref, "GET", f"blobs/{digest}", error, read_limit=max_size) as resp:
            data = resp.content
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise error(f"blob bytes hash to {actual}, not to the digest asked for",
                        hint="the registry or something between it and you altered the blob")
        return data

    @contextlib.contextmanager
    def open_blob(self, image_name: str, digest: str, offset: int = 0) -> Iterator[BlobStream]:
        """Stream a (multi-GB) blob; yields a ``BlobStream`` of byte chunks.

        With ``offset > 0`` a ``Range: bytes=offset-`` is sent; check
        ``stream.range_honoured`` (False: the body restarts at byte 0).
        Retries happen only until the response starts; the caller hashes.
        """
        ref = parse_image_name(image_name)
        error = _ErrorFactory(ref, digest)
        if not _DIGEST_RE.match(digest):
            raise error("unsupported digest (only sha256:<64 hex> is accepted)")
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        with self._request(ref, "GET", f"blobs/{digest}", error, headers=headers,
                           accept_statuses=(200, 206)) as resp:
            total = _total_size(resp)
            honoured = resp.status_code == 206
            stream = BlobStream(resp, offset if honoured else 0, total, error)
            stream.range_honoured = honoured or offset == 0
            yield stream

    # -- transport
    @contextlib.contextmanager
    def _request(self, ref: ImageName, method: str, path: str, error: _ErrorFactory, *,
                 headers: dict[str, str] | None = None, accept_statuses: tuple[int, ...] = (200,),
                 read_limit: int | None = None) -> Iterator[httpx.Response]:
        """One API request with auth, retries and the registry's concurrency slot.

        With ``read_limit`` the body is read (at most that many bytes) inside
        the retry loop, so a body cut off mid-way is fetched again; without,
        the response is yielded with its body unread (streaming). The slot is
        held until the block ends.
        """
        url = f"{registry_scheme(ref.registry, self.insecure_registries)}://{ref.registry}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:pull"
        deadline = time.monotonic() + self.deadline
        with self._slot(ref.registry):
            authorised_once = False
            while True:
                resp = self._send_with_retries(method, url, ref.registry, error, deadline,
                                               {**(headers or {}), **self._auth_header(ref.registry, scope, error, deadline)},
                                               read_limit=read_limit)
                if resp.status_code == 401 and not authorised_once:
                    resp.close()
                    self._forget_tokens(scope)
                    self._learn_challenge(ref.registry, resp, error)
                    authorised_once = True
                    continue
                break
            try:
                if resp.status_code not in accept_statuses:
                    raise self._status_error(resp, method, error)
                yield resp
            finally:
                resp.close()

    def _send_with_retries(self, method: str, url: str, registry: str, error: _ErrorFactory,
                           deadline: float, headers: dict[str, str],
                           read_limit: int | None = None) -> httpx.Response:
        """Send until a non-retryable answer, the retry budget or the deadline runs out.

        With ``read_limit``, a successful answer's body is read here too (a
        broken or too-slow body is retried like a failed request).
        """
        attempt = 0
        while True:
            if registry in self._dead:
                raise error(f"unreachable ({self._dead[registry]})",
                            hint=self._unreachable_hint(registry, tls=self._dead[registry].startswith("TLS")))
            remaining = deadline - time.monotonic()
            problem: str
            try:
                request = self._http.build_request(method, url, headers=headers,
                                                   timeout=max(0.5, min(self.timeout, remaining)))
                resp = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if _is_tls_failure(exc):   # not transient: retrying cannot help
                    with self._lock:
                        self._dead.setdefault(registry, f"TLS failure: {exc}")
                    raise error(f"TLS handshake failed ({exc})", hint=self._unreachable_hint(registry, tls=True)) from None
                problem, delay, status = f"{type(exc).__name__}: {exc}".rstrip(": "), None, None
            else:
                if resp.status_code not in _RETRY_STATUSES:
                    if read_limit is None or resp.status_code >= 300 or method == "HEAD":
                        return resp
                    try:
                        self._read_body(resp, error, read_limit)
                        return resp
                    except httpx.TransportError as exc:
                        resp.close()
                        problem, delay, status = f"body cut off ({type(exc).__name__}: {exc})", None, None
                else:
                    resp.close()
                    problem, delay, status = f"HTTP {resp.status_code}", _retry_after(resp), resp.status_code
            delay = self._backoff(attempt) if delay is None else delay
            if attempt >= self.retries or time.monotonic() + delay > deadline:
                if status is None:
                    with self._lock:
                        self._dead.setdefault(registry, problem)
                    raise error(f"unreachable after {attempt + 1} attempt(s) ({problem})",
                                hint=self._unreachable_hint(registry), status=None)
                raise error(f"gave up after {attempt + 1} attempt(s): {problem}"
                            + (f", Retry-After {delay:.0f}s" if status == 429 else ""),
                            hint="the registry is overloaded or rate-limiting; try again later",
                            status=status)
            time.sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter in [0.5, 1.5) of the step, capped at 10 s."""
        return min(10.0, self.backoff * (2 ** attempt)) * (0.5 + random.random())

    @staticmethod
    def _read_body(resp: httpx.Response, error: _ErrorFactory, limit: int) -> bytes:
        """Read a whole (small) body into ``resp.content``, refusing more than ``limit`` bytes.

        Transport errors propagate: the caller retries them.
        """
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            resp.close()
            raise error(f"response of {declared} bytes is larger than the {limit} allowed",
                        hint="this is not a manifest or config")
        return resp.read()

    def _slot(self, registry: str) -> threading.BoundedSemaphore:
        with self._lock:
            if registry not in self._slots:
                self._slots[registry] = threading.BoundedSemaphore(self.per_registry_concurrency)
            return self._slots[registry]

    def _unreachable_hint(self, registry: str, tls: bool = False) -> str:
        scheme = registry_scheme(registry, self.insecure_registries)
        if tls:
            return (f"if {registry} speaks plain HTTP, list it with --insecure-registry {registry} "
                    "or in lab.toml's insecure_registries; else check its certificate")
        return (f"check that {scheme}://{registry}/v2/ answers from this host (network, proxy, DNS), "
                "or record the pins unverified with `labbuild lock --offline`")

    def _status_error(self, resp: httpx.Response, method: str, error: _ErrorFactory) -> RegistryError:
        with contextlib.suppress(httpx.HTTPError):
            resp.read()
        detail = _registry_message(resp)
        status = resp.status_code
        text = f"HTTP {status}" + (f" ({detail})" if detail else "")
        if status == 404:
            return error(f"not found: {text}", status=status,
                         hint="check the image name, tag and digest; was the image pushed to this registry?")
        if status in (401, 403):
            return error(f"access denied: {text}", status=status,
                         hint=f"log in with `docker login {error.ref.registry}` (credentials are read from "
                              f"{docker_config_path()}), or check the image name")
        return error(f"{method} failed: {text}", status=status, hint="the registry refused the request")

    # -- authentication
    def _forget_tokens(self, scope: str) -> None:
        """Drop cached tokens for ``scope``: the registry just refused one (expired or revoked)."""
        with self._lock:
            for key in [k for k in self._tokens if k[2] == scope]:
                del self._tokens[key]

    def _learn_challenge(self, registry: str, resp: httpx.Response, error: _ErrorFactory) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        if scheme == "basic":
            if registry not in self._credentials:
                raise error("the registry requires a login (HTTP 401, Basic)", status=401,
                            hint=f"run `docker login {registry}` (credentials are read from {docker_config_path()})")
        elif scheme == "bearer":
            if not params.get("realm"):
                raise error(f"malformed WWW-Authenticate header {header!r}", status=401)
        else:
            raise error(f"HTTP 401 with unsupported authentication {header!r}", status=401,
                        hint="labbuild speaks Basic and Bearer token auth")
        with self._lock:
            self._challenges[registry] = (scheme, params)

    def _auth_header(self, registry: str, scope: str, error: _ErrorFactory, deadline: float) -> dict[str, str]:
        challenge = self._challenges.get(registry)
        if challenge is None:
            return {}
        scheme, params = challenge
        if scheme == "basic":
            user, password = self._credentials[registry]
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {"Authorization": "Bearer " + self._token(registry, params, scope, error, deadline)}

    def _token(self, registry: str, params: dict[str, str], scope: str, error: _ErrorFactory,
               deadline: float) -> str:
        """A Bearer token for ``scope``: cached until it expires, else fetched from the realm."""
        key = (params["realm"], params.get("service", ""), scope)
        with self._lock:
            lock = self._token_locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            query = {"scope": scope}
            if params.get("service"):
                query["service"] = params["service"]
            realm = params["realm"]
            headers = {}
            creds = self._credentials.get(registry)
            realm_host = re.sub(r"^[a-z]+://", "", realm).split("/", 1)[0]
            if creds and (realm.startswith("https://") or is_loopback(realm_host)):
                headers["Authorization"] = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(sorted(query.items()))}"
            resp = self._send_with_retries("GET", url, realm_host, error, deadline, headers, read_limit=1 << 20)
            resp.close()
            body = resp.content if resp.status_code == 200 else b""
            if resp.status_code != 200:
                raise error(f"token service {realm} refused ({resp.status_code})", status=resp.status_code,
                            hint=f"check the credentials for {registry} (`docker login {registry}`)")
            try:
                data = json.loads(body)
                token = data.get("token") or data["access_token"]
                ttl = float(data.get("expires_in") or 60)
            except (ValueError, KeyError, TypeError, AttributeError):
                raise error(f"token service {realm} sent no token", hint="the token service is misbehaving") from None
            self._tokens[key] = (token, time.monotonic() + max(1.0, ttl - 10))
            return token


def _media_type(data: bytes, resp: httpx.Response, error: _ErrorFactory) -> str:
    """The manifest's media type: its own ``mediaType`` field, else Content-Type, else its shape."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise error("manifest is not JSON", hint="the registry served something else") from None
    if not isinstance(doc, dict):
        raise error("manifest is not a JSON object")
    media = doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0].strip()
    if media not in INDEX_TYPES | MANIFEST_TYPES:
        if doc.get("schemaVersion") == 1 or "prettyjws" in media:
            raise error("Docker schema1 manifests are not supported",
                        hint="pick a tag pushed with a current Docker or buildkit (schema2/OCI)")
        media = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "config" in doc else media
    if media not in INDEX_TYPES | MANIFEST_TYPES:
        raise error(f"unsupported manifest media type {media!r}")
    return media


def _is_tls_failure(exc: BaseException) -> bool:
    """Did this transport error come from TLS (e.g. HTTPS spoken to a plain-HTTP registry)?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _total_size(resp: httpx.Response) -> int | None:
    rng = resp.headers.get("Content-Range", "")
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    if resp.status_code == 200 and resp.headers.get("Content-Length", "").isdigit():
        return int(resp.headers["Content-Length"])
    return None
