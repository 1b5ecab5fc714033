"""OpenBao as a second home of the lab's secrets: its KV v2 mount ``lab/``, one path per service.

When the installed release has the ``openbao`` service, install, ``secrets rotate`` and
``secrets set`` copy the values of ``DIR/.env`` there, grouped by the service that owns each key
(``lab/<service>``, fields named by their ``DIR/.env`` key). Every write is a new KV version, so
OpenBao keeps the history, and its file audit device logs every access.

``DIR/.env`` wins. It is what compose reads and what the holders (a database's password) match;
OpenBao holds a copy. A value changed in OpenBao does nothing to the lab and is replaced, as a
new version, by ``DIR/.env``'s at the next write (the edited version stays in the history); to
change a secret, use ``labbuild secrets set|rotate``. A path whose fields already equal
``DIR/.env``'s is not written again (no empty versions).

OpenBao's own keys (its unseal key, labbuild's AppRole, the metrics token) are never copied into it:
the unseal key inside the store it unlocks protects nothing, and the others open that store.

The calls, exactly (OpenBao v2.6.2 docs, website/content/docs/api/...):

- ``POST /v1/auth/approle/login`` ``{"role_id", "secret_id"}`` -> ``auth.client_token``
  (auth/approle.mdx, "Login with AppRole");
- ``GET /v1/lab/data/<service>`` -> ``data.data``, ``data.metadata.version``; 404 when absent
  (secret/kv/kv-v2.mdx, "Read secret version");
- ``POST /v1/lab/data/<service>`` ``{"options": {"cas": <version read, 0 if none>}, "data": {...}}``
  (secret/kv/kv-v2.mdx, "Create/Update secret": cas 0 writes only a path that does not exist yet);

with the token in the ``X-Vault-Token`` header (api/index.mdx). A failure never undoes a change
of ``DIR/.env``: it is reported and recorded in ``DIR/audit.log``, and the next write catches up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

from ..format.manifest import Manifest
from .auditlog import record
from .dotenv import env_values, plain_value, read_env
from .engine import service_endpoint

OPENBAO = "openbao"
MOUNT = "lab"
ROLE_ID = "OPENBAO__BAO_LABBUILD_ROLE_ID"
SECRET_ID = "OPENBAO__BAO_LABBUILD_SECRET_ID"
TOKEN_HEADER = "X-Vault-Token"


@dataclass
class KVResult:
    ok: bool
    written: list[str] = field(default_factory=list)      # services whose path got a new version
    unchanged: list[str] = field(default_factory=list)    # services whose path already held DIR/.env's values
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "written": self.written, "unchanged": self.unchanged, "error": self.failure}


def openbao_url(manifest: Manifest, address: Callable[[], str | None] | None = None) -> str | None:
    """Where labbuild reaches the install's OpenBao from the host; None when it has none. Without a
    published port (the front door publishes none for its UIs) it is the container's own address on
    the lab network, which ``address`` tells (None while it has none)."""
    entry = manifest.services.get(OPENBAO)
    if entry is None:
        return None
    port = next((p for p in entry.ports if p.name == "http"), None)
    if port is None:
        return None
    where = service_endpoint(port.host, port.container, address, port.bind)
    if where is None:
        return None
    host, number = where
    return f"http://{'[' + host + ']' if ':' in host else host}:{number}"


def payloads(manifest: Manifest, env_text: str, services: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """``{service: {DIR/.env key: value}}`` for every owning service (or those of ``services``) but OpenBao;
    keys without a value are left out."""
    values = env_values(env_text)
    wanted = set(services) if services is not None else None
    out: dict[str, dict[str, str]] = {}
    for key, owner in sorted(manifest.secret_owners.items()):
        if owner == OPENBAO or (wanted is not None and owner not in wanted):
            continue
        value = plain_value(values[key]) if key in values else ""
        if value:
            out.setdefault(owner, {})[key] = value
    return out


def _masked(text: str, secrets: Iterable[str]) -> str:
    for value in sorted({v for v in secrets if len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, "********")
    return text


def _json(resp: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer; {} for anything else (an empty body, HTML of a proxy, a list)."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _errors(resp: httpx.Response) -> str:
    errors = _json(resp).get("errors")
    errors = errors if isinstance(errors, list) else []
    return f"HTTP {resp.status_code}" + (f" ({'; '.join(str(e) for e in errors)[:200]})" if errors else "")


def write_kv(base_url: str, role_id: str, secret_id: str, data: dict[str, dict[str, str]], *,
             client: httpx.Client | None = None, timeout: float = 10.0) -> KVResult:
    """Log in with labbuild's AppRole and write each service's fields to ``lab/<service>`` unless equal."""
    result = KVResult(ok=False)
    own = client is None
    http = client or httpx.Client(timeout=timeout)
    try:
        resp = http.post(f"{base_url}/v1/auth/approle/login", json={"role_id": role_id, "secret_id": secret_id})
        if resp.status_code != 200:
            raise _Failed(f"AppRole login of labbuild refused: {_errors(resp)}")
        auth = _json(resp).get("auth")
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise _Failed("AppRole login answered without auth.client_token")
        headers = {TOKEN_HEADER: token}
        for service, fields in sorted(data.items()):
            url = f"{base_url}/v1/{MOUNT}/data/{service}"
            resp = http.get(url, headers=headers)
            found = _json(resp).get("data")
            found = found if isinstance(found, dict) else {}
            meta = found.get("metadata") if isinstance(found.get("metadata"), dict) else {}
            if resp.status_code == 200 and found.get("data") == fields:
                result.unchanged.append(service)
                continue
            if resp.status_code not in (200, 404):
                raise _Failed(f"reading {MOUNT}/{service}: {_errors(resp)}")
            version = meta.get("version") if isinstance(meta.get("version"), int) else 0
            resp = http.post(url, headers=headers, json={"options": {"cas": version}, "data": fields})
            if resp.status_code not in (200, 204):
                raise _Failed(f"writing {MOUNT}/{service}: {_errors(resp)}")
            result.written.append(service)
        result.ok = True
    except _Failed as exc:
        result.failure = str(exc)
    except (httpx.HTTPError, ValueError) as exc:
        result.failure = f"OpenBao at {base_url} did not answer as expected: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        if own:
            http.close()
    if result.failure:
        result.failure = _masked(result.failure, [role_id, secret_id, *(v for f in data.values() for v in f.values())])
    return result


class _Failed(Exception):
    pass


def sync_openbao(install_dir: Path, manifest: Manifest, *, services: Iterable[str] | None = None,
                 command: str, say: Callable[[str], None], client: httpx.Client | None = None,
                 address: Callable[[], str | None] | None = None) -> KVResult | None:
    """Copy ``DIR/.env``'s secrets (of ``services``' owners; all when None) to the install's OpenBao and
    record it in ``DIR/audit.log``; None when the release has no OpenBao. Never raises for OpenBao's
    answers: a failure is said, recorded, and left for the next write."""
    base = openbao_url(manifest, address)
    if base is None:
        if OPENBAO not in manifest.services:
            return None
        result = KVResult(ok=False, failure=f"{OPENBAO} has no published port and no address on the lab network")
        say(f"warning: the lab's secrets were not written to OpenBao: {result.failure}; DIR/.env is unchanged and wins")
        record(install_dir, f"openbao kv write ({command})", [], [], "failed", detail=result.failure)
        return result
    env_text = read_env(install_dir)
    values = env_values(env_text)
    data = payloads(manifest, env_text, services)
    role, secret = (plain_value(values.get(k, "")) for k in (ROLE_ID, SECRET_ID))
    if not role or not secret:
        result = KVResult(ok=False, failure=f"{ROLE_ID} or {SECRET_ID} is missing from DIR/.env")
    elif not data:
        result = KVResult(ok=True)
    else:
        result = write_kv(base, role, secret, data, client=client)
    keys = sorted(k for f in data.values() for k in f)
    if result.ok:
        if result.written:
            say(f"OpenBao: wrote {', '.join(f'{MOUNT}/{s}' for s in result.written)} (a new KV version each)")
    else:
        say(f"warning: the lab's secrets were not written to OpenBao: {result.failure}; DIR/.env is unchanged and "
            "wins; the next install, secrets rotate or secrets set writes them again")
    if result.written or not result.ok:
        record(install_dir, f"openbao kv write ({command})", keys, sorted(result.written or data),
               "ok" if result.ok else "failed", detail=result.failure or "")
    return result
