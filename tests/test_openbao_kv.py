"""labbuild's calls to OpenBao's HTTP API (builder.host.kvstore), against a STAND-IN.

OpenBao cannot run here (no package of it in the registries we reach), so ``OpenBaoStandIn`` is a
small HTTP server for exactly the three endpoints labbuild calls, nothing else. Each request body
is checked against OpenBao's API docs (v2.6.2, github.com/openbao/openbao website/content/docs/api/):

- ``POST /v1/auth/approle/login`` (auth/approle.mdx, "Login with AppRole"): ``role_id`` and
  ``secret_id``, both required strings; the answer carries ``auth.client_token``;
- ``GET /v1/<mount>/data/<path>`` (secret/kv/kv-v2.mdx, "Read secret version"): answers
  ``data.data`` and ``data.metadata.version``, 404 when the path was never written;
- ``POST /v1/<mount>/data/<path>`` (same page, "Create/Update secret"): ``data`` (Map, required)
  and ``options`` (Map, optional) with ``cas`` (int): the write succeeds only when ``cas`` is the
  current version, 0 for a path not written yet;

with the token in the ``X-Vault-Token`` header (api/index.mdx). Anything else is answered 405
and recorded as unexpected; every test asserts there was none.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.host.auditlog import read_entries
from builder.host.kvstore import ROLE_ID, SECRET_ID, openbao_url, payloads, sync_openbao, write_kv
from support.jsonhttp import send_json

ROLE, SECRET = "role-" + "1" * 32, "secret-" + "2" * 48


class OpenBaoStandIn:
    """The stand-in: one KV v2 mount ``lab`` and one AppRole."""

    def __init__(self, role_id: str = ROLE, secret_id: str = SECRET) -> None:
        self.role_id, self.secret_id = role_id, secret_id
        self.token = "s.standin-token"
        self.kv: dict[str, list[dict[str, str]]] = {}        # path -> versions (1-based by position)
        self.calls: list[tuple[str, str, dict | None]] = []
        self.unexpected: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _body(self) -> dict:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                assert isinstance(data, dict), "a JSON object"
                return data

            def do_GET(self) -> None:
                outer.calls.append(("GET", self.path, None))
                if not self.path.startswith("/v1/lab/data/"):
                    outer.unexpected.append(f"GET {self.path}")
                    return send_json(self, 405, {"errors": ["unsupported by the stand-in"]})
                if self.headers.get("X-Vault-Token") != outer.token:
                    return send_json(self, 403, {"errors": ["permission denied"]})
                versions = outer.kv.get(self.path.removeprefix("/v1/lab/data/"))
                if not versions:
                    return send_json(self, 404, {"errors": []})
                send_json(self, 200, {"data": {"data": versions[-1], "metadata": {
                    "created_time": "2026-12-07T00:00:00Z", "custom_metadata": None, "deletion_time": "",
                    "destroyed": False, "version": len(versions)}}})

            def do_POST(self) -> None:
                try:
                    body = self._body()
                except (ValueError, AssertionError) as exc:
                    outer.unexpected.append(f"POST {self.path}: body {exc}")
                    return send_json(self, 400, {"errors": ["bad body"]})
                outer.calls.append(("POST", self.path, body))
                if self.path == "/v1/auth/approle/login":
                    # approle.mdx: role_id (string, required), secret_id (string, required)
                    if set(body) != {"role_id", "secret_id"} or not all(isinstance(v, str) for v in body.values()):
                        outer.unexpected.append(f"login body keys {sorted(body)}")
                        return send_json(self, 400, {"errors": ["missing role_id or secret_id"]})
                    if (body["role_id"], body["secret_id"]) != (outer.role_id, outer.secret_id):
                        return send_json(self, 400, {"errors": ["invalid role or secret ID"]})
                    return send_json(self, 200, {"auth": {"client_token": outer.token, "policies": ["default", "labbuild"],
                                                     "lease_duration": 900, "renewable": True}})
                if not self.path.startswith("/v1/lab/data/"):
                    outer.unexpected.append(f"POST {self.path}")
                    return send_json(self, 405, {"errors": ["unsupported by the stand-in"]})
                if self.headers.get("X-Vault-Token") != outer.token:
                    return send_json(self, 403, {"errors": ["permission denied"]})
                # kv-v2.mdx: data (Map, required), options (Map, optional) with cas (int)
                data, options = body.get("data"), body.get("options", {})
                if (set(body) - {"data", "options"} or not isinstance(data, dict) or not isinstance(options, dict)
                        or set(options) - {"cas"} or not all(isinstance(v, str) for v in data.values())):
                    outer.unexpected.append(f"write body {sorted(body)}")
                    return send_json(self, 400, {"errors": ["bad write body"]})
                versions = outer.kv.setdefault(self.path.removeprefix("/v1/lab/data/"), [])
                if "cas" in options and (not isinstance(options["cas"], int) or options["cas"] != len(versions)):
                    return send_json(self, 400, {"errors": ["check-and-set parameter did not match the current version"]})
                versions.append(dict(data))
                send_json(self, 200, {"data": {"created_time": "2026-12-07T00:00:00Z", "custom_metadata": None,
                                          "deletion_time": "", "destroyed": False, "version": len(versions)}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bao():
    s = OpenBaoStandIn()
    yield s
    s.close()
    assert not s.unexpected, s.unexpected


def test_writes_one_path_per_service_then_only_what_changed_with_check_and_set(bao):
    data = {"litellm-db": {"LITELLM_DB__POSTGRES_PASSWORD": "a" * 32}, "n8n": {"N8N__N8N_ENCRYPTION_KEY": "k" * 24}}
    first = write_kv(bao.url, ROLE, SECRET, data)
    assert first.ok and first.written == ["litellm-db", "n8n"] and first.unchanged == []
    writes = [(path, body) for method, path, body in bao.calls if method == "POST" and "/lab/" in path]
    assert writes == [("/v1/lab/data/litellm-db", {"options": {"cas": 0}, "data": data["litellm-db"]}),
                      ("/v1/lab/data/n8n", {"options": {"cas": 0}, "data": data["n8n"]})]
    assert bao.calls[0] == ("POST", "/v1/auth/approle/login", {"role_id": ROLE, "secret_id": SECRET})

    again = write_kv(bao.url, ROLE, SECRET, data)
    assert again.ok and again.written == [] and again.unchanged == ["litellm-db", "n8n"]
    assert [len(v) for v in bao.kv.values()] == [1, 1]                 # no empty versions

    data["litellm-db"] = {"LITELLM_DB__POSTGRES_PASSWORD": "b" * 32}   # rotated
    bao.calls.clear()
    third = write_kv(bao.url, ROLE, SECRET, data)
    assert third.ok and third.written == ["litellm-db"] and third.unchanged == ["n8n"]
    assert ("POST", "/v1/lab/data/litellm-db", {"options": {"cas": 1}, "data": data["litellm-db"]}) in bao.calls
    assert [v["LITELLM_DB__POSTGRES_PASSWORD"] for v in bao.kv["litellm-db"]] == ["a" * 32, "b" * 32]   # history


def test_a_value_changed_in_openbao_is_replaced_by_dotenvs_as_a_new_version(bao):
    data = {"web": {"WEB__API_TOKEN": "from-dotenv-123"}}
    assert write_kv(bao.url, ROLE, SECRET, data).ok
    bao.kv["web"].append({"WEB__API_TOKEN": "edited-in-openbao"})       # someone wrote version 2 in the UI
    result = write_kv(bao.url, ROLE, SECRET, data)
    assert result.ok and result.written == ["web"]
    assert bao.kv["web"] == [{"WEB__API_TOKEN": "from-dotenv-123"}, {"WEB__API_TOKEN": "edited-in-openbao"},
                             {"WEB__API_TOKEN": "from-dotenv-123"}]   # .env wins; the edit stays in the history


def test_refused_credentials_and_an_unreachable_openbao_fail_without_a_value_in_the_message(bao):
    data = {"web": {"WEB__API_TOKEN": "tok-" + "9" * 20}}
    bad = write_kv(bao.url, ROLE, "wrong-secret-id-value", data)
    assert not bad.ok and "AppRole login of labbuild refused: HTTP 400 (invalid role or secret ID)" in bad.failure
    assert "wrong-secret-id-value" not in bad.failure and not bao.kv
    bao.close()
    down = write_kv(bao.url, ROLE, SECRET, data, timeout=2)
    assert not down.ok and "did not answer as expected" in down.failure
    assert SECRET not in down.failure and "9" * 20 not in down.failure


# --------------------------------------------------------------------------- sync_openbao on an install dir

@pytest.fixture(scope="module")
def manifest():
    from builder.blueprint import load_lab
    from builder.bundle.pack import manifest_services
    from builder.format.manifest import Manifest
    from builder.lockfile import LOCK_PATH, read_lock
    from builder.render import ReleaseInput
    from test_catalog import REPO

    ri = ReleaseInput(lab=load_lab(REPO), lock=read_lock(REPO / LOCK_PATH), profile="phase4", version="1.0.0",
                      labbuild_version="test")
    return Manifest(lab="lab", name="n", version="1.0.0", profile="phase4", inputs="i", labbuild="t", offline=False,
                    platforms=("linux/amd64",), services=manifest_services(ri), files={})


def test_payloads_group_dotenv_by_owner_and_keep_openbaos_own_keys_out(manifest):
    env = "\n".join(f"{k}='v-{k.lower()}'" for k in manifest.secret_owners) + "\n"
    got = payloads(manifest, env)
    assert "openbao" not in got
    assert got["litellm-db"] == {"LITELLM_DB__POSTGRES_PASSWORD": "v-litellm_db__postgres_password"}
    assert {k for f in got.values() for k in f} == {k for k, o in manifest.secret_owners.items() if o != "openbao"}
    assert payloads(manifest, env, ["litellm-db"]) == {"litellm-db": got["litellm-db"]}
    # phase4 holds the front door: OpenBao's UI port is not published, so labbuild asks its address
    assert openbao_url(manifest) is None
    assert openbao_url(manifest, lambda: "172.18.0.5") == "http://172.18.0.5:8200"
    assert openbao_url(manifest, lambda: None) is None


def test_sync_writes_dotenvs_values_and_records_it_in_the_audit_log(manifest, bao, tmp_path: Path, monkeypatch):
    import builder.host.kvstore as kvstore

    monkeypatch.setattr(kvstore, "openbao_url", lambda m, address=None: bao.url)        # the stand-in instead of port 8200
    values = {k: f"value-{i:04d}-of-{k.lower()}" for i, k in enumerate(sorted(manifest.secret_owners))}
    values[ROLE_ID], values[SECRET_ID] = ROLE, SECRET
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    said: list[str] = []
    result = sync_openbao(tmp_path, manifest, command="install", say=said.append)
    assert result.ok and "litellm-db" in result.written and "openbao" not in bao.kv
    assert bao.kv["litellm-db"] == [{"LITELLM_DB__POSTGRES_PASSWORD": values["LITELLM_DB__POSTGRES_PASSWORD"]}]
    (entry,) = read_entries(tmp_path).entries
    assert entry.command == "openbao kv write (install)" and entry.outcome == "ok"
    assert "LITELLM_DB__POSTGRES_PASSWORD" in entry.keys and ROLE_ID not in entry.keys
    log = (tmp_path / "audit.log").read_text()
    assert not [v for v in values.values() if v in log]                   # never a value
    assert any("OpenBao: wrote" in s for s in said)

    (tmp_path / ".env").write_text((tmp_path / ".env").read_text().replace(SECRET, "not-the-secret-id"))
    failed = sync_openbao(tmp_path, manifest, command="secrets rotate", say=said.append)
    assert not failed.ok and "warning: the lab's secrets were not written to OpenBao" in said[-1]
    assert read_entries(tmp_path).entries[-1].outcome == "failed"
    assert "not-the-secret-id" not in (tmp_path / "audit.log").read_text()


def test_no_openbao_in_the_release_means_no_call(manifest, tmp_path: Path):
    from dataclasses import replace

    without = replace(manifest, services={k: v for k, v in manifest.services.items() if k != "openbao"})
    assert sync_openbao(tmp_path, without, command="install", say=print) is None


@pytest.mark.parametrize("body", [b"[1, 2]", b"<html>proxy error</html>", b"", b'{"auth": "x"}'])
def test_a_malformed_login_answer_is_a_failure_not_a_traceback(body):
    """A fault the stand-in does not produce (a proxy's page, a JSON list): httpx's MockTransport answers."""
    import httpx

    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))
    result = write_kv("http://127.0.0.1:1", ROLE, SECRET, {"web": {"WEB__K": "v" * 8}}, client=client)
    assert not result.ok and "without auth.client_token" in result.failure
