"""Reading what a registry answers: errors that name the image, the
registry's own error text, ``Retry-After``, ``Content-Range``, TLS failures,
and streamed blob bodies."""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from typing import Iterator

import httpx

from ..errors import RegistryError
from .names import ImageName


class ErrorFactory:
    """Builds RegistryErrors that name registry, image and digest."""

    def __init__(self, ref: ImageName, digest: str | None) -> None:
        self.ref = ref
        self.digest = digest

    def __call__(self, what: str, *, hint: str | None = None, status: int | None = None) -> RegistryError:
        subject = f"{self.ref}@{self.digest}" if self.digest else str(self.ref)
        return RegistryError(f"registry {self.ref.registry}: {subject}: {what}", registry=self.ref.registry,
                             image=str(self.ref), digest=self.digest, status=status, hint=hint)


def registry_message(resp: httpx.Response) -> str:
    """The registry's own error text (``{"errors":[{"code","message"}]}``) when it sent one."""
    try:
        errors = json.loads(resp.content).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds the ``Retry-After`` header asks to wait (delta or HTTP date), or None."""
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


def is_tls_failure(exc: BaseException) -> bool:
    """Did this transport error come from TLS (e.g. HTTPS spoken to a plain-HTTP registry)?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def total_size(resp: httpx.Response) -> int | None:
    """The whole blob's size from ``Content-Range`` (or a 200's ``Content-Length``), or None."""
    rng = resp.headers.get("Content-Range", "")
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    if resp.status_code == 200 and resp.headers.get("Content-Length", "").isdigit():
        return int(resp.headers["Content-Length"])
    return None

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
                 error: ErrorFactory) -> None:
        self._response = response
        self.start = start
        self.range_honoured = True
        self.total_size = total_size
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        received = 0
        try:
            # chunks as they come off the connection (up to httpcore's READ_NUM_BYTES, see client.py):
            # iter_bytes(n) would re-buffer every byte into n-sized pieces, three more copies
            # (0.55 CPU-s per GiB here)
            for chunk in self._response.iter_bytes():
                received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise self._error(f"transfer interrupted after {self.start + received} bytes "
                              f"({type(exc).__name__}: {exc})",
                              hint=f"resume with offset={self.start + received}") from None

