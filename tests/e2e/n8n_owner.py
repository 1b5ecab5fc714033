"""No first-visitor admin in the real n8n (issue 23): its owner comes from env, no provisioning call.

Checked on the install of the real n8n that tests/e2e/test_apps.py's real-Prometheus test makes anyway
(``check_n8n_owner``, called there): one build, push, release and load of its 2.2 GB image serves both.

The real n8n 2.35.5 (tests/apps/recipes/n8n, from npm) installed offline from a bundle of the shipped
n8n blueprint: install derives N8N__LAB_ADMIN_PASSWORD_HASH (bcrypt) from the generated password, n8n
sets its owner from N8N_INSTANCE_OWNER_* before its routes serve, so
- the owner signs in with the generated credentials (POST /rest/login) and a wrong password is refused;
- a visitor's POST /rest/owner/setup is refused ('Instance owner already setup'): there is no window;
- a lab whose first visitor claimed the owner before this release (n8n reset and claimed by a visitor
  with the same image on the same volume, no owner env) gets labbuild's owner back at the next install:
  the visitor's credentials stop working.
"""

from __future__ import annotations

import sys
import time

import httpx

from builder.install.apply import install_bundle

N8N = "n8n"
ADMIN = "admin@local-ai-lab.localhost"
VISITOR = {"email": "visitor@example.com", "firstName": "Vis", "lastName": "Itor", "password": "Visitor1pass"}


def login(base: str, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{base}/rest/login", json={"emailOrLdapLoginId": email, "password": password}, timeout=30)


def wait_ready(base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz/readiness", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{base} not ready after {timeout:.0f} s"
        time.sleep(1)


def say(text: str) -> None:
    print(text, file=sys.stderr)


def check_n8n_owner(lab) -> None:
    """The owner signs in with the generated credentials, a visitor cannot claim it, and a lab whose
    visitor claimed it before gets labbuild's owner back at the next install (``lab``: an AppsLab
    with the real n8n installed, healthy)."""
    base = "http://127.0.0.1:5678"
    password = lab.env("N8N__LAB_ADMIN_PASSWORD")
    hashed = lab.env("N8N__LAB_ADMIN_PASSWORD_HASH")
    assert hashed.startswith("'$2b$10$") and password not in (lab.target / "audit.log").read_text()
    env = lab.container(N8N).attrs["Config"]["Env"]
    assert f"N8N_INSTANCE_OWNER_PASSWORD_HASH={hashed.strip(chr(39))}" in env    # compose passed it literally

    ok = login(base, ADMIN, password)
    assert ok.status_code == 200 and ok.json()["data"]["email"] == ADMIN, ok.text
    assert ok.json()["data"]["role"] == "global:owner", ok.text
    assert login(base, ADMIN, password + "x").status_code == 401
    claim = httpx.post(f"{base}/rest/owner/setup", json=VISITOR, timeout=30)
    assert claim.status_code == 400 and "Instance owner already setup" in claim.text, claim.text
    assert login(base, VISITOR["email"], VISITOR["password"]).status_code == 401

    # a lab whose first visitor claimed the owner before this release: same image, same volume, no owner env
    c = lab.container(N8N)
    image = c.image.id
    volume = next(m["Name"] for m in c.attrs["Mounts"] if m["Destination"] == "/home/node/.n8n")
    c.stop(timeout=30)
    old_env = {"N8N_ENCRYPTION_KEY": lab.env("N8N__N8N_ENCRYPTION_KEY"), "N8N_DIAGNOSTICS_ENABLED": "false"}
    mount = {volume: {"bind": "/home/node/.n8n", "mode": "rw"}}
    out = lab.engine.containers.run(image, ["user-management:reset"], environment=old_env, volumes=mount,
                                    remove=True, stdout=True, stderr=True)
    say(out.decode(errors="replace")[-300:])
    old = lab.engine.containers.run(image, environment=old_env, volumes=mount, detach=True,
                                    labels={"com.docker.compose.project": lab.project})   # cleaned up with the lab
    try:
        old.reload()
        old_base = f"http://{old.attrs['NetworkSettings']['IPAddress']}:5678"
        wait_ready(old_base)
        claimed = httpx.post(f"{old_base}/rest/owner/setup", json=VISITOR, timeout=30)
        assert claimed.status_code == 200, claimed.text             # the window the env closes
        assert login(old_base, VISITOR["email"], VISITOR["password"]).status_code == 200
    finally:
        old.remove(force=True)

    again = install_bundle(lab.bundle, lab.target, timeout=180)     # the next install starts n8n with its env
    assert again.ok, again.failure
    wait_ready(base)
    assert login(base, VISITOR["email"], VISITOR["password"]).status_code == 401
    ok = login(base, ADMIN, password)
    assert ok.status_code == 200 and ok.json()["data"]["role"] == "global:owner", ok.text
