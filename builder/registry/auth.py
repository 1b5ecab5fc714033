"""Who may pull: Docker credentials and the registry's authentication flow.

Credentials come from ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` as the docker CLI finds them: the registry's entry
in ``credHelpers``, else ``credsStore``, each a ``docker-credential-<name>``
program asked ``get`` (only when a registry asks for a login, once per
registry; what it prints is read to ``MAX_HELPER_OUTPUT_BYTES``), else the ``auths`` entries. ``Authenticator`` learns each registry's ``WWW-Authenticate``
challenge (Basic, or Bearer with its token realm) and produces the
``Authorization`` header of a request; Bearer tokens are cached per scope
until they expire.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import selectors
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import httpx

from ..errors import RegistryError
from ..fsutil import CapExceeded, read_capped
from ..limits import MAX_DOCKER_CONFIG_BYTES, MAX_HELPER_OUTPUT_BYTES
from .names import DOCKER_HUB, is_loopback, normalise_registry
from .responses import ErrorFactory

# (method, url, registry, error, deadline, headers, read_limit=...) -> response, retried
Send = Callable[..., httpx.Response]


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


HUB_SERVER = "https://index.docker.io/v1/"    # the key Docker Hub logins are stored under
HELPER_TIMEOUT = 60                          # seconds a credential helper may take (it may ask to unlock a keyring)
_NOT_FOUND = "credentials not found"         # docker-credential-helpers' message for "no login for this server"


class Credentials:
    """Docker credentials by registry (normalised name -> ``(user, password)``).

    ``auths``: the config file's logins. ``helpers``: registry -> helper name
    (``credHelpers``); ``store``: the helper for every other registry
    (``credsStore``), which then replaces ``auths`` as for the docker CLI.
    A helper runs only when ``get`` is first asked about its registry.
    """

    def __init__(self, auths: dict[str, tuple[str, str]] | None = None, *, helpers: dict[str, str] | None = None,
                 store: str | None = None, source: Path | None = None) -> None:
        self.auths = dict(auths or {})
        self.helpers = dict(helpers or {})
        self.store = store or None
        self.source = source
        self._asked: dict[str, tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    def helper_for(self, registry: str) -> str | None:
        return self.helpers.get(registry) or self.store

    def get(self, registry: str) -> tuple[str, str] | None:
        helper = self.helper_for(registry)
        if helper is None:
            return self.auths.get(registry)
        with self._lock:
            if registry not in self._asked:
                self._asked[registry] = ask_helper(helper, registry, self.source)
            return self._asked[registry]

    def __contains__(self, registry: str) -> bool:
        return self.get(registry) is not None


def ask_helper(helper: str, registry: str, source: Path | None = None) -> tuple[str, str] | None:
    """``docker-credential-<helper> get`` for ``registry``: ``(user, secret)``, None when it has no login.

    The protocol of github.com/docker/docker-credential-helpers: the server
    name on stdin, ``{"ServerURL", "Username", "Secret"}`` on stdout; "not
    found" is an error exit whose output says ``credentials not found``.
    """
    program = f"docker-credential-{helper}"
    where = f"{source or docker_config_path()}"
    server = HUB_SERVER if registry == DOCKER_HUB else registry
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", helper):
        raise RegistryError(f"{where}: credential helper name {helper!r} is not a program name", registry=registry,
                            hint="credsStore / credHelpers name the part after docker-credential-, e.g. \"pass\"")
    path = shutil.which(program)
    if path is None:
        raise RegistryError(f"{where} names the credential helper {program!r}, which is not on PATH",
                            registry=registry, hint=f"install {program}, or remove it from the config and run "
                            f"`docker login {registry}` to store the login in the file")
    try:
        done = run_helper([path, "get"], server.encode())
    except subprocess.TimeoutExpired:
        raise RegistryError(f"{program} get did not answer within {HELPER_TIMEOUT} s", registry=registry,
                            hint="is its keyring locked? unlock it, or log in with the file store") from None
    except CapExceeded:
        raise RegistryError(f"{program} get printed more than {MAX_HELPER_OUTPUT_BYTES >> 20} MiB and was stopped "
                            "(a login is a short JSON object)", registry=registry,
                            hint=f"the helper is broken or not a Docker credential helper: run `echo {server} | "
                                 f"{program} get` to see what it prints, or remove it from {where}") from None
    except OSError as exc:
        raise RegistryError(f"cannot run {program}: {exc.strerror}", registry=registry) from None
    said = (done.stdout or done.stderr).decode("utf-8", "replace").strip()
    if done.returncode != 0:
        if _NOT_FOUND in said.lower():
            return None
        raise RegistryError(f"{program} get failed (exit {done.returncode}): {said[:300]}", registry=registry,
                            hint=f"run `echo {server} | {program} get` to see why")
    try:
        answer = json.loads(done.stdout)
        user, secret = answer["Username"], answer["Secret"]
        if not isinstance(user, str) or not isinstance(secret, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"{program} get answered something other than "
                            "{\"Username\": ..., \"Secret\": ...}", registry=registry,
                            hint="the helper is broken or not a Docker credential helper") from None
    if user == "<token>":
        raise RegistryError(f"{program} holds an identity token for {server}, which labbuild cannot use",
                            registry=registry,
                            hint=f"log in with a user name and password or access token: `docker login {registry}`")
    return user, secret


def run_helper(argv: list[str], stdin: bytes, *, timeout: float = HELPER_TIMEOUT,
               cap: int = MAX_HELPER_OUTPUT_BYTES) -> subprocess.CompletedProcess:
    """Run a credential helper with ``stdin``; its stdout and stderr are read as they come, each
    to ``cap`` bytes at most. One that prints more (CapExceeded) or runs past ``timeout``
    seconds (``subprocess.TimeoutExpired``) is killed: a helper that prints forever costs
    ``cap`` bytes, not the memory of the host (``communicate`` would keep all of it)."""
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with contextlib.suppress(BrokenPipeError):     # a few bytes: fits the pipe, never blocks
            proc.stdin.write(stdin)
        proc.stdin.close()
        out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        with selectors.DefaultSelector() as sel:
            for fd in out:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                ready = sel.select(deadline - time.monotonic())
                if not ready:
                    raise subprocess.TimeoutExpired(argv, timeout)
                for key, _ in ready:
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fd)
                    elif len(out[key.fd]) + len(chunk) > cap:
                        raise CapExceeded(f"{argv[0]} printed more than {cap} bytes")
                    else:
                        out[key.fd] += chunk
        returncode = proc.wait(max(0.0, deadline - time.monotonic()))
        return subprocess.CompletedProcess(argv, returncode, bytes(out[proc.stdout.fileno()]),
                                           bytes(out[proc.stderr.fileno()]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()     # a child it left behind still writing ends on SIGPIPE
        proc.stderr.close()


def load_credentials(path: Path | None = None) -> Credentials:
    """The ``Credentials`` of a Docker config.json (``auths``, ``credHelpers``, ``credsStore``).

    A missing file means no credentials; an unreadable one is an error, as it
    is for the docker CLI.
    """
    path = path or docker_config_path()
    try:
        data = json.loads(read_capped(path, MAX_DOCKER_CONFIG_BYTES))
    except FileNotFoundError:
        return Credentials(source=path)
    except (OSError, ValueError) as exc:     # CapExceeded is a ValueError
        raise RegistryError(f"{path}: cannot read Docker credentials ({exc})",
                            hint="fix or remove the file, or point DOCKER_CONFIG elsewhere") from None
    if not isinstance(data, dict):
        data = {}
    creds: dict[str, tuple[str, str]] = {}
    auths = data.get("auths")
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
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
    helpers = data.get("credHelpers")
    store = data.get("credsStore")
    for what, value in (("credHelpers", helpers), ("credsStore", store)):
        if value is not None and not isinstance(value, dict if what == "credHelpers" else str):
            raise RegistryError(f"{path}: {what} must be " + ("an object of registry: helper" if what == "credHelpers"
                                                               else "a helper name"),
                                hint="fix the file, or run `docker login` again")
    return Credentials(creds, helpers={normalise_registry(k): v for k, v in (helpers or {}).items()
                                       if isinstance(v, str) and v},
                       store=store or None, source=path)


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

    def __init__(self, credentials: Credentials, send: Send) -> None:
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
                            hint=f"run `docker login {registry}` (credentials are read from {docker_config_path()}"
                                 " and its credential helpers)")
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
            user, password = self._credentials.get(registry)
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

