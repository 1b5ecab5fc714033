"""Provisioning calls: claim what an app hands to its first visitor, or register what another app
needs (an app's own LiteLLM key), right after the service is healthy.

A service's ``[[provision]]`` steps (manifest.json ``provision``: method, host port, path, a JSON
body whose strings may hold ``${KEY}`` for a DIR/.env key, the statuses that mean "done now" and
the status + text that mean "done before"; optionally a DIR/.env key sent as the bearer token, e.g.
LiteLLM's master key to register an app's own key) run in order over HTTP to 127.0.0.1, sharing one
cookie jar (a session an earlier step opened, e.g. Dify's init password, reaches the next).

The body is decoded, each ``${KEY}`` filled into the decoded strings, and encoded again with
``json.dumps``: a value is never pasted into JSON text. Values never reach a message or the
audit log: an answer's excerpt shown on failure has every value used replaced by ``***``.
Every run is one ``DIR/audit.log`` entry per service (command ``provision``; the keys it read).
Answers that say it was done before count as done, so every install may run them again; when
DIR/audit.log holds no record that labbuild itself once made it ("done"), such an answer comes with
a loud warning (``Provisioned.warning``): a first visitor may own that admin account.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Callable

from ..format.manifest import Manifest, ManifestProvision
from ..host.auditlog import read_entries, record
from ..host.dotenv import env_values, plain_value, read_env
from ..host.engine import service_endpoint
from ..host.labdir import AUDIT_FILE, ENV_FILE

PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
MAX_ANSWER_BYTES = 64 << 10
RETRY_SECONDS = 60.0        # a healthy app may still answer 502/503 for a moment (n8n: "starting up")


@dataclass
class Provisioned:
    """What the steps of one service did: ``done`` (made now), ``already`` (done before),
    ``failed`` (``detail`` says which step and what came back, never a value)."""

    service: str
    state: str
    detail: str = ""
    warning: str = ""        # "already", yet labbuild never made it: who did is unknown (see unclaimed_warning)

    def to_json(self) -> dict[str, str]:
        return {"state": self.state, "detail": self.detail, **({"warning": self.warning} if self.warning else {})}

    def failure(self, runbook: Path, unpublished: bool = False) -> str:
        """What install says when these steps failed: which step, the answer, what is missing, what to do.
        ``unpublished``: the service publishes no host port until they succeed (DIR/unpublished.yaml)."""
        shut = (f"{self.service} publishes no host port until it succeeds (DIR/unpublished.yaml)" if unpublished
                else "an app's admin account may still be claimed by its first visitor: keep it unreachable")
        return (f"{self.service}: provisioning failed: {self.detail}\nwhat these calls set up is not in place "
                f"({shut}; an app's own key is not accepted yet): see {runbook}, Provisioning; install again to retry")


class ProvisionFailed(Exception):
    pass


def fill_body(body: str, values: dict[str, str]) -> bytes:
    """The request body: ``body``'s JSON decoded, every ``${KEY}`` in its strings replaced by
    ``values[KEY]``, encoded again. ProvisionFailed naming a key that has no value."""
    if not body:
        return b""

    def fill(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, str):
            def one(m: re.Match) -> str:
                if not values.get(m.group(1)):
                    raise ProvisionFailed(f"{m.group(1)} has no value in {ENV_FILE}")
                return values[m.group(1)]
            return PLACEHOLDER_RE.sub(one, obj)
        return obj
    return json.dumps(fill(json.loads(body)), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every value of ``secrets`` replaced by ``***`` (as it is, and as a JSON string
    holds it: an app may echo the body back), control characters dropped, short."""
    forms = {f for s in secrets if s
             for f in (s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1])}
    for value in sorted(forms, key=len, reverse=True):
        text = text.replace(value, "***")
    return re.sub(r"[\x00-\x1f\x7f]+", " ", text)[:200]


def _call(step: ManifestProvision, data: bytes, cookies: dict[str, str], timeout: float,
          address: Callable[[], str | None] | None, bearer: str = "") -> tuple[int, str]:
    headers = {"Accept": "application/json", "User-Agent": "labbuild-provision"}
    if step.method != "GET":
        headers["Content-Type"] = "application/json"
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    where = service_endpoint(step.host_port, step.container_port, address)    # not published: the container's address
    if where is None:
        raise ConnectionRefusedError("the container has no address on the lab network yet")
    host, port = where
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(step.method, step.path, body=data or None, headers=headers)
        resp = conn.getresponse()
        answer = resp.read(MAX_ANSWER_BYTES).decode("utf-8", "replace")
        for header in resp.headers.get_all("Set-Cookie") or ():
            try:   # the app on 127.0.0.1 set it: kept for the next step whatever its Secure flag
                jar = SimpleCookie(header)
            except CookieError:
                continue
            cookies.update({k: m.value for k, m in jar.items()})
        return resp.status, answer
    finally:
        conn.close()


def run_steps(service: str, steps: tuple[ManifestProvision, ...], values: dict[str, str], *,
              timeout: float = 30.0, retry_for: float = RETRY_SECONDS,
              sleep: Callable[[float], None] = time.sleep,
              address: Callable[[], str | None] | None = None) -> Provisioned:
    """Run ``steps`` in order with one cookie jar; stop at the first that fails."""
    cookies: dict[str, str] = {}
    states = []
    used = [values[k] for step in steps for k in step.keys if k in values]
    for i, step in enumerate(steps):
        where = f"step {i + 1} ({step.method} {step.path}: {step.description})"
        try:
            data = fill_body(step.body, values)
            if step.bearer and not values.get(step.bearer):
                raise ProvisionFailed(f"{step.bearer} has no value in {ENV_FILE}")
        except ProvisionFailed as exc:
            return Provisioned(service, "failed", f"{where}: {exc}")
        deadline = time.monotonic() + retry_for
        while True:
            try:
                status, answer = _call(step, data, cookies, timeout, address, values.get(step.bearer, ""))
                seen = f"answered {status}"
            except (OSError, http.client.HTTPException) as exc:
                status, answer, seen = 0, "", f"{type(exc).__name__}: {redact(str(exc), used)}"
            if (status == 0 or status >= 500) and time.monotonic() < deadline:
                sleep(2.0)
                continue
            break
        if status in step.status:
            states.append("done")
        elif status in step.already_status and step.already_text and step.already_text in answer:
            states.append("already")
        else:
            excerpt = redact(answer, used)
            return Provisioned(service, "failed", f"{where}: {seen}" + (f": {excerpt}" if excerpt.strip() else ""))
    state = "already" if states and all(s == "already" for s in states) else "done"
    return Provisioned(service, state, "; ".join(f"{s.path}: {st}" for s, st in zip(steps, states)))


def _provision_records(install_dir: Path) -> list:
    """DIR/audit.log's ``provision`` entries with outcome ok since the volumes were last deleted
    (``uninstall --volumes``: what was provisioned went with them; audit.log is never rewritten)."""
    out: list = []
    for e in read_entries(install_dir).entries:
        if e.command == "uninstall --volumes":
            out = []
        elif e.command == "provision" and e.outcome == "ok":
            out.append(e)
    return out


def provisioned_before(install_dir: Path) -> set[str]:
    """The services whose steps once ended "done" or "already" in this install dir (and its volumes)."""
    return {e.detail.split(":", 1)[0] for e in _provision_records(install_dir)}


def made_by_labbuild(install_dir: Path) -> set[str]:
    """The services whose steps labbuild itself once ran to "done" in this install dir: DIR/audit.log's
    ``provision`` entries (outcome ok, detail ``SERVICE: done: ...``), which are never rewritten."""
    return {e.detail.split(":", 1)[0] for e in _provision_records(install_dir)
            if re.match(r"[a-z][a-z0-9-]*: done: ", e.detail)}


def unclaimed_warning(service: str, steps: tuple[ManifestProvision, ...], runbook: str) -> str:
    """What to say when ``service`` answers "done before" and no record says labbuild did it: a first
    visitor (or someone running install.sh's printed calls) made its admin, with a password labbuild
    does not know."""
    what = "; ".join(s.description for s in steps)
    return (f"{service} was set up before, but not by labbuild in this install dir ({AUDIT_FILE} has no "
            f"provision record of it): its admin account may belong to whoever reached it first, and the "
            f"password in {ENV_FILE} may not open it. Check who owns it (sign in as the admin named in "
            f"'{what}' with the password in {ENV_FILE}); if that fails, the account is not yours: see "
            f"{runbook} (\"install warns '{service} was set up before, but not by labbuild'\")")


def provision_services(install_dir: Path, manifest: Manifest, healthy: set[str],
                       say: Callable[[str], None],
                       address: Callable[[str], str | None] | None = None,
                       retry_for: float = RETRY_SECONDS) -> dict[str, Provisioned]:
    """Run the steps of every service in ``healthy`` that has any; one audit entry per service."""
    todo = {s: e.provision for s, e in sorted(manifest.services.items()) if e.provision and s in healthy}
    if not todo:
        return {}
    values = {k: plain_value(v) for k, v in env_values(read_env(install_dir)).items()}
    ours = made_by_labbuild(install_dir)
    out: dict[str, Provisioned] = {}
    for svc, steps in todo.items():
        say(f"provisioning {svc}: " + "; ".join(s.description for s in steps))
        result = run_steps(svc, steps, values, retry_for=retry_for,
                           address=(lambda svc=svc: address(svc)) if address is not None else None)
        if result.state == "already" and svc not in ours:
            result.warning = unclaimed_warning(svc, steps, str(install_dir / "current" / manifest.services[svc].runbook))
            say(f"WARNING: {result.warning}")
        keys = sorted({k for s in steps for k in s.keys})
        record(install_dir, "provision", keys, [svc], outcome="ok" if result.state != "failed" else "failed",
               detail=f"{svc}: {result.state}: {result.detail}" + (" (not made by labbuild)" if result.warning else ""))
        say(f"  {svc}: {result.state}" + (f" ({result.detail})" if result.state == "failed" else ""))
        out[svc] = result
    return out


def credentials_shown(manifest: Manifest, added: list[str], env_text: str) -> list[tuple[str, str, str]]:
    """``(service, key, value)`` of the sign-in credentials (``show``) generated just now: printed once."""
    values = env_values(env_text)
    return [(svc, key, plain_value(values[key])) for svc, e in sorted(manifest.services.items())
            for key in e.show if key in added and key in values]
