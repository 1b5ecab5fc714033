"""The JSON answer of the in-process HTTP stand-ins (http.server handlers)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def send_json(h: BaseHTTPRequestHandler, status: int, body: object) -> None:
    """Answer ``status`` with ``body`` as JSON (Content-Type and Content-Length set)."""
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)
