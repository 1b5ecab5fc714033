"""Who may pull: Docker credentials and the registry's authentication flow.

Credentials come from ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` (``auths`` entries only; credential helpers are not
consulted). ``Authenticator`` learns each registry's ``WWW-Authenticate``
challenge (Basic, or Bearer with its token realm) and produces the
``Authorization`` header of a request; Bearer tokens are cached per scope
until they expire.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import httpx

from ..errors import RegistryError
from .names import is_loopback, normalise_registry
from .responses import ErrorFactory

# (method, url, registry, error, deadline, headers, read_limit=...) -> response, retried
Send = Callable[..., httpx.Response]


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
        raise RegistryError(f"{path}: cannot read Docker credentials ({exc})",
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
                raise RegistryError(f"{path}: auths.{key}.auth is not base64 of user:password",
                                    registry=normalise_registry(key),
                                    hint=f"run `docker login {key}` again") from None
        if user and password is not None:
            creds[normalise_registry(key)] = (user, password)
    return creds


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ``("bearer", {"realm": "x", "service": "y"})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'([A-Za-z]+)="([^"]*)"', rest)}
    return scheme.lower(), params


def basic_authorization(user: str, password: str) -> str:
    """The ``Authorization`` value of HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Authenticator:
    """The ``Authorization`` headers of one client's requests, safe to share between threads.

    ``send`` fetches a token from a realm (the client's retrying transport).
    """

    def __init__(self, credentials: dict[str, tuple[str, str]], send: Send) -> None:
        self._credentials = credentials
        self._send = send
        self._lock = threading.Lock()
        self._challenges: dict[str, tuple[str, dict[str, str]]] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._token_locks: dict[tuple[str, str, str], threading.Lock] = {}

    def forget_tokens(self, scope: str) -> None:
        """Drop cached tokens for ``scope``: the registry just refused one (expired or revoked)."""
        with self._lock:
            for key in [k for k in self._tokens if k[2] == scope]:
                del self._tokens[key]

    def learn_challenge(self, registry: str, resp: httpx.Response, error: ErrorFactory) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(header)
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

    def header(self, registry: str, scope: str, error: ErrorFactory, deadline: float) -> dict[str, str]:
        challenge = self._challenges.get(registry)
        if challenge is None:
            return {}
        scheme, params = challenge
        if scheme == "basic":
            user, password = self._credentials[registry]
            return {"Authorization": basic_authorization(user, password)}
        return {"Authorization": "Bearer " + self._token(registry, params, scope, error, deadline)}

    def _token(self, registry: str, params: dict[str, str], scope: str, error: ErrorFactory,
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
                headers["Authorization"] = basic_authorization(*creds)
            url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(sorted(query.items()))}"
            resp = self._send("GET", url, realm_host, error, deadline, headers, read_limit=1 << 20)
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

