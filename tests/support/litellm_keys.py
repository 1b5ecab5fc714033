"""A protocol STAND-IN for LiteLLM's virtual-key API: not LiteLLM.

The real LiteLLM proxy runs here (tests/apps/recipes/litellm), but without its database mode:
Prisma's engines come from binaries.prisma.sh, which is not reachable, so its key endpoints answer
"DB not connected" (tests/e2e/test_app_keys_e2e.py shows that with the real proxy). This stand-in
answers only the calls labbuild and the lab's key holder (blueprints/services/litellm.toml,
lab_app_key.py) make, as BerriAI/litellm v1.97.0 answers them with a database
(litellm/proxy/management_endpoints/key_management_endpoints.py, litellm/proxy/auth/user_api_key_auth.py):

- ``POST /key/generate`` (master key only): a caller-chosen ``key`` must start with ``sk-`` and be
  at least 16 characters (400 "Invalid key format..."); ``key_alias`` is unique across keys
  (_enforce_unique_key_alias: 400 "Key with alias '<a>' already exists. Unique key aliases across
  all keys are required."); 200 with the key. A value already registered under another alias is
  refused with 500 (LiteLLM's answer there, a database unique-constraint error, is not modelled).
- ``POST /key/delete`` (master key only) with ``keys`` or ``key_aliases``: 200 ``deleted_keys``;
  404 "No keys found" when none matched.
- ``GET /v1/models`` (the master key or a registered key): 200 with the configured model list;
  an unknown key: 401 "Authentication Error, Invalid proxy server token passed...".
- ``GET /health/liveliness``: 200, no key.

Errors have LiteLLM's ProxyException shape: ``{"error": {"message", "type", "param", "code"}}``.
``GET /standin/keys`` (no key) lists what is registered, as ``{alias: {"key", "key_type",
"metadata"}}``, and ``GET /standin/calls`` every call received (path, bearer, body), so tests see
what the proxy would hold. Run it as a script (``python3 litellm_keys.py``: port 4000 and the master
key from ``$LITELLM_MASTER_KEY``, as the proxy reads them; its arguments, the proxy's, are ignored),
or in a thread with ``serve``. With ``$LITELLM_STANDIN_STATE`` (a file path) the key table survives a
restart of the container, as LiteLLM's does in its database (litellm-db).
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MIN_KEY_LENGTH = 16     # litellm/constants.py MINIMUM_CUSTOM_KEY_LENGTH
MODELS = {"data": [{"id": "ollama/*", "object": "model", "created": 1677610602, "owned_by": "openai"}],
          "object": "list"}


def _error(message: str, kind: str, code: int, param: str = "None") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": str(code)}}


class State:
    def __init__(self, master: str, path: str = "") -> None:
        self.master, self.path = master, path
        self.keys: dict[str, dict] = {}       # key value -> {"key_alias", "key_type", "metadata"}
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                self.keys = json.load(fh)
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def save(self) -> None:
        if self.path:
            with open(self.path + ".tmp", "w", encoding="utf-8") as fh:
                json.dump(self.keys, fh)
            os.replace(self.path + ".tmp", self.path)


def handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, obj: object) -> None:
            # support.jsonhttp.send_json's answer, kept here: this file is mounted alone into the
            # LiteLLM image's container (tests/e2e/test_app_keys_e2e.py) and imports nothing of ours
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _bearer(self) -> str:
            auth = self.headers.get("Authorization", "")
            return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""

        def _auth_error(self) -> None:
            self._answer(401, _error("Authentication Error, Invalid proxy server token passed. Unable to find token "
                                     "in cache or `LiteLLM_VerificationTokenTable`", "auth_error", 401))

        def do_GET(self) -> None:   # noqa: N802 (http.server's name)
            key = self._bearer()
            with state.lock:
                state.calls.append({"method": "GET", "path": self.path, "bearer": key, "body": None})
                if self.path == "/health/liveliness":
                    return self._answer(200, "I'm alive!")
                if self.path == "/standin/keys":
                    return self._answer(200, {v["key_alias"]: {"key": k, "key_type": v["key_type"],
                                                               "metadata": v["metadata"]}
                                              for k, v in state.keys.items()})
                if self.path == "/standin/calls":
                    return self._answer(200, state.calls[:-1])
                if self.path in ("/v1/models", "/models"):
                    if key == state.master or key in state.keys:
                        return self._answer(200, MODELS)
                    return self._auth_error()
            self._answer(404, {"detail": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            key = self._bearer()
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except ValueError:
                return self._answer(422, {"detail": "body is not JSON"})
            with state.lock:
                state.calls.append({"method": "POST", "path": self.path, "bearer": key, "body": body})
                if self.path not in ("/key/generate", "/key/delete"):
                    return self._answer(404, {"detail": "Not Found"})
                if key != state.master:          # an llm_api key may not call management routes
                    return self._auth_error()
                if self.path == "/key/generate":
                    return self._generate(body)
                return self._delete(body)

        def _generate(self, body: dict) -> None:
            alias, value = body.get("key_alias"), body.get("key")
            if alias is not None and any(v["key_alias"] == alias for v in state.keys.values()):
                return self._answer(400, _error(f"Key with alias '{alias}' already exists. Unique key aliases across "
                                                "all keys are required.", "bad_request_error", 400, "key_alias"))
            if value is not None and not value.startswith("sk-"):
                return self._answer(400, {"detail": {"error": "Invalid key format. LiteLLM Virtual Key must start "
                                                              "with 'sk-'. Received: ****"}})
            if value is not None and len(value) < MIN_KEY_LENGTH:
                return self._answer(400, {"detail": {"error": "Invalid key format. LiteLLM Virtual Key must be at "
                                                              f"least {MIN_KEY_LENGTH} characters long."}})
            if value is None:
                return self._answer(400, {"detail": {"error": "the stand-in only registers caller-chosen keys"}})
            if value in state.keys:
                return self._answer(500, _error("stand-in: this key value is registered already (LiteLLM: a "
                                                "database unique-constraint error)", "internal_server_error", 500))
            state.keys[value] = {"key_alias": alias, "key_type": body.get("key_type", "default"),
                                 "metadata": body.get("metadata") or {}}
            state.save()
            self._answer(200, {"key": value, "key_alias": alias, "key_name": f"sk-...{value[-4:]}",
                               "token": "stand-in", "metadata": body.get("metadata") or {}})

        def _delete(self, body: dict) -> None:
            if body.get("keys"):
                gone = [k for k in body["keys"] if k in state.keys]
            elif body.get("key_aliases"):
                gone = [k for k, v in state.keys.items() if v["key_alias"] in body["key_aliases"]]
            else:
                return self._answer(422, {"detail": "At least one of 'keys' or 'key_aliases' must be provided."})
            if not gone:
                return self._answer(404, {"detail": {"error": "No keys found"}})
            for k in gone:
                del state.keys[k]
            state.save()
            self._answer(200, {"deleted_keys": body.get("keys") or body.get("key_aliases")})

        def log_message(self, *args) -> None:
            pass
    return Handler


def serve(master: str, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, State]:
    """The stand-in in a daemon thread: ``(server, state)``; ``server.server_address`` has its port."""
    state = State(master)
    server = ThreadingHTTPServer((host, port), handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "4000"))),
                        handler(State(os.environ["LITELLM_MASTER_KEY"],
                                      os.environ.get("LITELLM_STANDIN_STATE", "")))).serve_forever()
