"""A fault-injecting HTTP proxy in front of a real registry.

``FaultProxy(upstream="127.0.0.1:PORT")`` listens on its own loopback port
and forwards every request to the upstream registry, counting them
(``requests``: a list of ``(method, path)``). Faults are queued rules that
match a method and a path substring and fire ``times`` times:

- ``status``: answer ``code`` (with ``Retry-After`` when given) instead of forwarding;
- ``reset``: close the connection with a TCP RST, no answer;
- ``delay``: sleep ``seconds`` before answering;
- ``truncate``: send the upstream headers (full Content-Length) and half the body, then close;
- ``alter``: flip one byte of the upstream body (same length);
- ``strip_header``: drop response header ``name``.

``page_tags=N`` pages tag lists (``GET /v2/NAME/tags/list``) the way Docker
Hub and Distribution 3 do and Distribution 2.8 does not: at most N tags a
page (fewer when the client asks ``n``), sorted, from ``last``, with a
``Link: </v2/NAME/tags/list?last=...&n=...>; rel="next"`` header while more follow.

``latency`` adds a fixed delay to every request (the benchmark's WAN);
``max_in_flight`` is the most requests it ever served at once. ``bind``
picks the listening address (a non-loopback one tests insecure registries).
With ``bearer=TokenServer``, requests need a valid ``Authorization: Bearer``
token for the repository's pull scope, as Docker Hub does.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class QuietServer(ThreadingHTTPServer):
    """Clients that hang up (resets, aborted retries) are normal here: no tracebacks on stderr."""

    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        pass

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "host"}


@dataclass
class Fault:
    kind: str
    path: str = ""
    method: str | None = None
    times: int = 1
    code: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    name: str = ""

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and (self.method is None or self.method == method) and self.path in path


class FaultProxy:
    def __init__(self, upstream: str, *, latency: float = 0.0, bearer=None, bind: str = "127.0.0.1",
                 page_tags: int | None = None) -> None:
        self.upstream = upstream
        self.page_tags = page_tags
        self.latency = latency
        self.bearer = bearer
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    proxy._serve(self)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = QuietServer((bind, 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"{self.server.server_address[0]}:{self.server.server_address[1]}"

    def add(self, kind: str, path: str = "", **kw) -> Fault:
        fault = Fault(kind=kind, path=path, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, method: str | None = None, path: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and path in p)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- one request
    def _take_faults(self, method: str, path: str) -> list[Fault]:
        fired = []
        with self._lock:
            self.requests.append((method, path))
            for f in self.faults:
                if f.matches(method, path):
                    f.times -= 1
                    fired.append(f)
        return fired

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        method, path = h.command, h.path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        faults = self._take_faults(method, path)
        if self.latency:
            time.sleep(self.latency)
        for f in faults:
            if f.kind == "delay":
                time.sleep(f.seconds)
        for f in faults:
            if f.kind == "reset":
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.close_connection = True
                h.connection.close()
                return
            if f.kind == "status":
                payload = b'{"errors":[{"code":"INJECTED","message":"fault proxy"}]}'
                h.send_response(f.code)
                if f.retry_after is not None:
                    h.send_header("Retry-After", f.retry_after)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(payload)))
                h.end_headers()
                if method != "HEAD":
                    h.wfile.write(payload)
                return
        if self.bearer is not None and path.startswith("/v2/") and not self._authorised(h, path):
            return
        tag_list = re.match(r"^/v2/(.+)/tags/list(\?.*)?$", path)
        if self.page_tags and method == "GET" and tag_list:
            status, headers, data = self._tag_page(tag_list.group(1), path, h.headers)
        else:
            status, headers, data = self._forward(method, path, h.headers, body)
        for f in faults:
            if f.kind == "alter" and data:
                data = data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:]
            if f.kind == "strip_header":
                headers = [(k, v) for k, v in headers if k.lower() != f.name.lower()]
        truncate = any(f.kind == "truncate" for f in faults) and method != "HEAD"
        h.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                h.send_header(k, v)
        if method == "HEAD":
            upstream_len = next((v for k, v in headers if k.lower() == "content-length"), "0")
            h.send_header("Content-Length", upstream_len)
        else:
            h.send_header("Content-Length", str(len(data)))
        if truncate:
            h.send_header("Connection", "close")
        h.end_headers()
        if method == "HEAD":
            return
        if truncate:
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data)

    def _authorised(self, h: BaseHTTPRequestHandler, path: str) -> bool:
        m = re.match(r"^/v2/(.+)/(manifests|blobs|tags)/", path)
        scope = f"repository:{m.group(1)}:pull" if m else "registry:catalog:*"
        auth = h.headers.get("Authorization", "")
        if path in ("/v2/", "/v2") and auth.startswith("Bearer ") and self.bearer.valid(auth[7:]):
            return True
        if auth.startswith("Bearer ") and self.bearer.valid(auth[7:], scope):
            return True
        challenge = f'Bearer realm="{self.bearer.realm}",service="{self.bearer.service}"'
        if m:
            challenge += f',scope="{scope}"'
        payload = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        h.send_response(401)
        h.send_header("WWW-Authenticate", challenge)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)
        return False

    def _tag_page(self, name: str, path: str, headers) -> tuple[int, list, bytes]:
        status, upstream_headers, data = self._forward("GET", f"/v2/{name}/tags/list", headers, b"")
        if status != 200:
            return status, upstream_headers, data
        query = parse_qs(urlparse(path).query)
        size = min(self.page_tags, int(query.get("n", [self.page_tags])[0]))
        last = query.get("last", [""])[0]
        remaining = [t for t in sorted(json.loads(data)["tags"] or []) if t > last]
        page = remaining[:size]
        out = [("Content-Type", "application/json")]
        if len(remaining) > size:
            out.append(("Link", f'</v2/{name}/tags/list?last={page[-1]}&n={size}>; rel="next"'))
        return 200, out, json.dumps({"name": name, "tags": page}).encode()

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            out: dict[str, str] = {}
            for k, v in headers.items():   # a repeated header (skopeo sends one Accept per type) is joined, not lost
                if k.lower() not in HOP_BY_HOP and k.lower() != "authorization":
                    out[k] = f"{out[k]}, {v}" if k in out else v
            conn.request(method, path, body=body or None, headers=out)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()
