"""tests/apps/recipes/ollama-standin/ollama: the Ollama protocol stand-in (not Ollama) answers the calls
of Ollama's API reference (docs/api.md) in their shapes, with canned answers, on 127.0.0.1."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from apps.recipe import RECIPES

SCRIPT = next(r for r in RECIPES if r.name == "ollama-standin").directory / "ollama"


def load_standin():
    loader = importlib.machinery.SourceFileLoader("ollama_standin", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def standin():
    module = load_standin()
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, body: dict | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_the_stand_in_answers_root_version_and_tags(standin, capsys):
    assert call(standin + "/")[::2] == (200, b"Ollama is running")
    status, _, body = call(standin + "/api/version")
    assert status == 200 and json.loads(body)["version"].endswith("-stand-in")
    status, _, body = call(standin + "/api/tags")
    models = json.loads(body)["models"]
    assert status == 200 and [m["name"] for m in models] == ["qwen2.5:0.5b", "nomic-embed-text:v1.5"]
    assert all(m["model"] == m["name"] and len(m["digest"]) == 64 and m["details"]["format"] == "gguf" for m in models)
    assert call(standin + "/api/pull", {"model": "x"})[0] == 404
    assert '"standin": "GET", "path": "/api/tags"' in capsys.readouterr().out    # every request is logged


def test_the_stand_in_chats_with_and_without_streaming(standin):
    ask = {"model": "qwen2.5:0.5b", "messages": [{"role": "system", "content": "s"},
                                                 {"role": "user", "content": "hi there"}]}
    status, ctype, body = call(standin + "/api/chat", {**ask, "stream": False})
    answer = json.loads(body)
    assert status == 200 and ctype.startswith("application/json")
    assert answer["message"] == {"role": "assistant", "content": "stand-in reply to: hi there"}
    assert answer["done"] is True and answer["done_reason"] == "stop"
    status, ctype, body = call(standin + "/api/chat", ask)            # Ollama streams by default: NDJSON
    chunks = [json.loads(line) for line in body.decode().splitlines()]
    assert status == 200 and ctype == "application/x-ndjson"
    assert [c["done"] for c in chunks] == [False, True]
    assert "".join(c["message"]["content"] for c in chunks) == "stand-in reply to: hi there"


def test_the_stand_in_embeds_the_same_input_the_same_way_and_refuses_unknown_models(standin):
    ask = {"model": "nomic-embed-text:v1.5", "input": ["a", "b", "a"]}
    status, _, body = call(standin + "/api/embed", ask)
    vectors = json.loads(body)["embeddings"]
    assert status == 200 and len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1] and len(vectors[0]) == 8
    assert json.loads(call(standin + "/api/embed", {**ask, "input": "a"})[2])["embeddings"] == [vectors[0]]
    status, _, body = call(standin + "/api/chat", {"model": "llama3", "messages": []})
    assert status == 404 and json.loads(body) == {"error": 'model "llama3" not found, try pulling it first'}
    status, _, body = call(standin + "/api/show", {"name": "qwen2.5:0.5b"})
    assert status == 200 and json.loads(body)["details"]["family"] == "qwen2"


@pytest.mark.parametrize("value, address", [
    (None, ("127.0.0.1", 11434)), ("0.0.0.0", ("0.0.0.0", 11434)), ("0.0.0.0:11434", ("0.0.0.0", 11434)),
    ("127.0.0.1:9000", ("127.0.0.1", 9000)), ("http://10.0.0.1:1", ("10.0.0.1", 1)), ("[::]:11434", ("::", 11434)),
])
def test_the_stand_in_listens_where_ollama_host_says(monkeypatch, value, address):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    if value is not None:
        monkeypatch.setenv("OLLAMA_HOST", value)
    assert load_standin().listen_address() == address


def test_the_stand_in_has_only_serve():
    assert load_standin().main(["ollama", "list"]) == 1
