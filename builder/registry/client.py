"""``RegistryClient``: the OCI Distribution API v2 over HTTP, with retries,
deadlines, per-registry concurrency and hash verification."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import threading
import time
from typing import Callable, Iterable, Iterator

import httpcore
import httpx

from ..names import is_valid
from ..errors import RegistryError
from ..limits import MAX_TAG_PAGE_BYTES, MAX_TAG_PAGES
from .auth import Authenticator, Credentials, docker_config_path, load_credentials
from .manifests import ACCEPT_MANIFESTS, ImageManifest, manifest_media_type
from .names import ImageName, parse_image_name, registry_scheme
from .responses import (
    BlobStream,
    ErrorFactory,
    is_tls_failure,
    registry_message,
    retry_after,
    total_size,
)

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# httpcore reads HTTP/1.1 bodies 64 KiB per recv (HTTP11Connection.READ_NUM_BYTES) and h11
# re-buffers each read: for GiB-sized blobs that framing, not the network, was the limit
# (a 320 MiB blob from a local registry: 1.39 s at 64 KiB, 0.67 s at 1 MiB, hashing and
# writing included). Larger reads only change how many bytes one recv may return.
_READ_BYTES = 1 << 20


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
                 credentials: "Credentials | dict[str, tuple[str, str]] | None" = None) -> None:
        self.insecure_registries = tuple(insecure_registries)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline
        self.per_registry_concurrency = per_registry_concurrency
        if getattr(httpcore.HTTP11Connection, "READ_NUM_BYTES", _READ_BYTES) < _READ_BYTES:
            httpcore.HTTP11Connection.READ_NUM_BYTES = _READ_BYTES
        self._http = httpx.Client(timeout=timeout, follow_redirects=True,
                                  limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                                  headers={"User-Agent": "labbuild"})
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._auth = Authenticator(load_credentials() if credentials is None
                                   else credentials if isinstance(credentials, Credentials) else Credentials(credentials),
                                   self._send_with_retries)
        self._dead: dict[str, str] = {}

    # -- lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def unreachable(self) -> dict[str, str]:
        """``{registry: why}`` for every registry this client found unreachable (and now skips)."""
        with self._lock:
            return dict(self._dead)

    # -- public API
    def fetch_manifest(self, image_name: str, reference: str) -> ImageManifest:
        """The manifest or index at ``reference`` (a tag or a ``sha256:`` digest).

        With a digest, the bytes must hash to it (else RegistryError, no retry).
        With a tag, the digest is the hash of the bytes served (and must equal
        the ``Docker-Content-Digest`` header when the registry sends one).
        """
        ref = parse_image_name(image_name)
        by_digest = reference.startswith("sha256:") or ":" in reference
        error = ErrorFactory(ref, reference if by_digest else None)
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
            raise ErrorFactory(ref, served)(
                f"tag {reference}: Docker-Content-Digest says {served} but the bytes hash to {digest}",
                hint="the manifest was altered in transit")
        return ImageManifest(data=data, media_type=manifest_media_type(data, resp.headers.get("Content-Type", ""), error), digest=digest)

    def resolve_tag(self, image_name: str, tag: str) -> str:
        """The digest ``tag`` points to now: ``HEAD`` first, ``GET`` when HEAD says nothing."""
        ref = parse_image_name(image_name)
        error = ErrorFactory(ref, None)
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

    def list_tags(self, image_name: str, page_size: int = 1000) -> list[str]:
        """Every tag of the repository, in the order served, following ``Link: <...>; rel="next"``
        pages (``n=page_size``; a registry that ignores ``n`` sends them all at once).

        Only tags of the tag grammar are kept (a hostile registry's junk never reaches a
        track's regex); a next link must stay on this repository's tag list.
        """
        ref = parse_image_name(image_name)
        error = ErrorFactory(ref, None)
        base = f"{registry_scheme(ref.registry, self.insecure_registries)}://{ref.registry}/v2/{ref.repository}/tags/list"
        url = str(httpx.URL(base, params={"n": page_size}))
        tags: dict[str, None] = {}
        visited = {url}
        for _ in range(MAX_TAG_PAGES):
            with self._request(ref, "GET", "", error, url=url, read_limit=MAX_TAG_PAGE_BYTES) as resp:
                page, following = resp.content, resp.links.get("next", {}).get("url")
            try:
                listed = json.loads(page).get("tags") or []
            except (ValueError, AttributeError, RecursionError):
                raise error("the tag list is not a JSON object", hint="is this a registry v2?") from None
            if not isinstance(listed, list):
                raise error("the tag list's \"tags\" is not a list", hint="is this a registry v2?")
            tags.update((t, None) for t in listed if is_valid("tag", t))
            if not following:
                return list(tags)
            url = str(httpx.URL(url).join(following))
            if (httpx.URL(url).netloc, httpx.URL(url).path) != (httpx.URL(base).netloc, httpx.URL(base).path):
                raise error(f"the tag list's next page {following!r} leaves {ref.repository}'s tag list",
                            hint="the registry or a proxy in front of it rewrote the Link header")
            if url in visited:
                raise error(f"the tag list's next page {following!r} was read before",
                            hint="the registry's pagination goes round in a circle")
            visited.add(url)
        raise error(f"the tag list has more than {MAX_TAG_PAGES} pages", hint="the registry keeps sending next links")

    def fetch_blob(self, image_name: str, digest: str, max_size: int = 64 << 20) -> bytes:
        """A small blob (an image config), verified against ``digest``."""
        ref = parse_image_name(image_name)
        error = ErrorFactory(ref, digest)
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
        error = ErrorFactory(ref, digest)
        if not _DIGEST_RE.match(digest):
            raise error("unsupported digest (only sha256:<64 hex> is accepted)")
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        with self._request(ref, "GET", f"blobs/{digest}", error, headers=headers,
                           accept_statuses=(200, 206)) as resp:
            total = total_size(resp)
            honoured = resp.status_code == 206
            stream = BlobStream(resp, offset if honoured else 0, total, error)
            stream.range_honoured = honoured or offset == 0
            yield stream

    # -- transport
    # -- pushing (``labbuild mirror``)
    def has_blob(self, image_name: str, digest: str) -> bool:
        """Whether the repository holds blob ``digest`` (``HEAD``; 404 -> False)."""
        ref = parse_image_name(image_name)
        error = ErrorFactory(ref, digest)
        with self._request(ref, "HEAD", f"blobs/{digest}", error, accept_statuses=(200, 404),
                           actions="pull,push") as resp:
            return resp.status_code == 200

    def manifest_digest(self, image_name: str, reference: str) -> str | None:
        """The digest the repository serves at ``reference`` (tag or digest), None when absent."""
        ref = parse_image_name(image_name)
        error = ErrorFactory(ref, reference if reference.startswith("sha256:") else None)
        with self._request(ref, "HEAD", f"manifests/{reference}", error, accept_statuses=(200, 404),
                           headers={"Accept": ACCEPT_MANIFESTS}, actions="pull,push") as resp:
            if resp.status_code == 404:
                return None
            served = resp.headers.get("Docker-Content-Digest", "")
            return served if _DIGEST_RE.match(served) else (reference if reference.startswith("sha256:") else None)

    def push_blob(self, image_name: str, digest: str, size: int, body: Callable[[], Iterable[bytes]], *,
                  mount_from: str | None = None, attempts: int = 3) -> str:
        """Upload blob ``digest`` (``size`` bytes) to the repository: one upload session and a
        monolithic ``PUT`` whose body streams from ``body()`` (called again for each attempt:
        nothing is held in memory). With ``mount_from`` (a repository of the same registry
        holding the blob) a cross-repository mount is asked first. The registry checks the
        digest; a refused or broken upload starts a new session (``attempts`` in all).
        Returns "mounted" or "pushed"."""
        ref = parse_image_name(image_name)
        error = ErrorFactory(ref, digest)
        if not _DIGEST_RE.match(digest):
            raise error("unsupported digest (only sha256:<64 hex> is accepted)")
        for attempt in range(attempts):
            path = "blobs/uploads/" + (f"?mount={digest}&from={mount_from}" if mount_from else "")
            with self._request(ref, "POST", path, error, accept_statuses=(201, 202), actions="pull,push",
                               headers={"Content-Length": "0"}) as resp:
                if resp.status_code == 201:
                    return "mounted"
                location = resp.headers.get("Location")
            if not location:
                raise error("upload refused: the registry sent no Location", hint="is this a registry v2?")
            url = self._upload_url(ref, location, digest)
            try:
                with self._request(ref, "PUT", "", error, url=url, accept_statuses=(201, 204),
                                   actions="pull,push", content=body,
                                   headers={"Content-Type": "application/octet-stream",
                                            "Content-Length": str(size)}):
                    return "pushed"
            except RegistryError as exc:
                if attempt + 1 >= attempts or getattr(exc, "status", None) in (401, 403):
                    raise
        raise AssertionError("unreachable")

    def push_manifest(self, image_name: str, reference: str, data: bytes, media_type: str) -> str:
        """``PUT`` the exact manifest/index bytes at ``reference`` (a digest or a tag); the
        digest the registry answers must be the bytes' own. Returns that digest."""
        ref = parse_image_name(image_name)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        error = ErrorFactory(ref, digest)
        with self._request(ref, "PUT", f"manifests/{reference}", error, accept_statuses=(201,),
                           actions="pull,push", content=lambda: [data],
                           headers={"Content-Type": media_type, "Content-Length": str(len(data))}) as resp:
            served = resp.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise error(f"the registry stored {reference} as {served}, not {digest}",
                        hint="it rewrote the manifest; mirror into a registry that keeps manifests as pushed")
        return digest

    def _upload_url(self, ref: ImageName, location: str, digest: str) -> str:
        base = f"{registry_scheme(ref.registry, self.insecure_registries)}://{ref.registry}"
        url = httpx.URL(base).join(location)
        return str(url.copy_merge_params({"digest": digest}))

    @contextlib.contextmanager
    def _request(self, ref: ImageName, method: str, path: str, error: ErrorFactory, *,
                 headers: dict[str, str] | None = None, accept_statuses: tuple[int, ...] = (200,),
                 read_limit: int | None = None, actions: str = "pull", url: str | None = None,
                 content: Callable[[], Iterable[bytes]] | None = None) -> Iterator[httpx.Response]:
        """One API request with auth, retries and the registry's concurrency slot.

        With ``read_limit`` the body is read (at most that many bytes) inside
        the retry loop, so a body cut off mid-way is fetched again; without,
        the response is yielded with its body unread (streaming). The slot is
        held until the block ends. ``actions``: the token scope's actions
        (``pull,push`` to upload); ``url``: an absolute URL (an upload
        session's); ``content()``: a fresh request body for each attempt.
        """
        url = url or f"{registry_scheme(ref.registry, self.insecure_registries)}://{ref.registry}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:{actions}"
        deadline = time.monotonic() + self.deadline
        with self._slot(ref.registry):
            authorised_once = False
            while True:
                # credentials go only to the registry itself, never to another host an upload Location names
                foreign = httpx.URL(url).netloc.decode() != ref.registry
                auth = {} if foreign else self._auth.header(ref.registry, scope, error, deadline)
                resp = self._send_with_retries(method, url, ref.registry, error, deadline,
                                               {**(headers or {}), **auth}, read_limit=read_limit, content=content)
                if resp.status_code == 401 and not authorised_once:
                    resp.close()
                    self._auth.forget_tokens(scope)
                    self._auth.learn_challenge(ref.registry, resp, error)
                    authorised_once = True
                    continue
                break
            try:
                if resp.status_code not in accept_statuses:
                    raise self._status_error(resp, method, error)
                yield resp
            finally:
                resp.close()

    def _send_with_retries(self, method: str, url: str, registry: str, error: ErrorFactory,
                           deadline: float, headers: dict[str, str], read_limit: int | None = None,
                           content: Callable[[], Iterable[bytes]] | None = None) -> httpx.Response:
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
                body = content() if content is not None else None
                timeout = (max(0.5, min(self.timeout, remaining)) if content is None
                           else httpx.Timeout(self.timeout, write=max(self.timeout, 60.0)))
                request = self._http.build_request(method, url, headers=headers, content=body, timeout=timeout)
                resp = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if is_tls_failure(exc):   # not transient: retrying cannot help
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
                    problem, delay, status = f"HTTP {resp.status_code}", retry_after(resp), resp.status_code
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
    def _read_body(resp: httpx.Response, error: ErrorFactory, limit: int) -> bytes:
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

    def _status_error(self, resp: httpx.Response, method: str, error: ErrorFactory) -> RegistryError:
        with contextlib.suppress(httpx.HTTPError):
            resp.read()
        detail = registry_message(resp)
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
