"""A small Docker-style token service for the Bearer flow.

``GET /token?service=S&scope=repository:NAME:pull`` answers
``{"token": ..., "expires_in": ...}``. With ``users``, a request must carry
Basic credentials of one of them (else 401); without, tokens are anonymous
(as Docker Hub gives them for public images). ``valid(token, scope)`` is what
the fault proxy asks before letting a request through; ``issued`` counts
tokens handed out (to check the client's per-scope cache).
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler

from .faultproxy import QuietServer
from .jsonhttp import send_json
from urllib.parse import parse_qs, urlparse


class TokenServer:
    def __init__(self, *, users: dict[str, str] | None = None, service: str = "test-registry",
                 expires_in: int = 300) -> None:
        self.users = users
        self.service = service
        self.expires_in = expires_in
        self.issued = 0
        self.refused = 0
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def valid(self, token: str, scope: str | None = None) -> bool:
        with self._lock:
            entry = self._tokens.get(token)
        return bool(entry) and entry[1] > time.time() and (scope is None or entry[0] == scope)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = parse_qs(url.query)
        if url.path != "/token" or query.get("service", [""])[0] != self.service:
            return send_json(h, 400, {"error": "bad request"})
        if self.users is not None:
            auth = h.headers.get("Authorization", "")
            try:
                user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
            except ValueError:
                user, password = "", ""
            if not auth.startswith("Basic ") or self.users.get(user) != password:
                with self._lock:
                    self.refused += 1
                return send_json(h, 401, {"error": "invalid credentials"})
        token = secrets.token_hex(16)
        scope = query.get("scope", [""])[0]
        with self._lock:
            self._tokens[token] = (scope, time.time() + self.expires_in)
            self.issued += 1
        send_json(h, 200, {"token": token, "expires_in": self.expires_in})

