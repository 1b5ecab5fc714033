"""Open WebUI, run for real (issues 22 and 23): the open-webui test image (tests/apps/recipes/open-webui:
PyPI's open-webui 0.11.0 with the CPU build of torch) in a test lab of the shipped blueprints, only
[image] substituted, beside "ollama" served by the Ollama protocol stand-in (tests/apps/recipes/
ollama-standin: canned answers, not Ollama).

Shown, with the real Open WebUI:
- the lab installs, and Open WebUI is healthy by the shipped [health] (GET /health on host port 3080,
  awaited by install) and by the image's own HEALTHCHECK (curl | jq, as upstream's);
- no first-visitor admin: the admin is the one install's generated WEBUI_ADMIN_* credentials made
  at the first start; a sign-up is refused (ENABLE_SIGNUP=false, and create_admin_user stored
  ui.enable_signup=false), a wrong password is refused;
- through the shipped wiring ([when.ollama.env] OLLAMA_BASE_URL=http://ollama:11434) the signed-in
  admin's /api/models lists the stand-in's models, and the stand-in logged Open WebUI's /api/tags call.

The lab is released as a plain bundle and pulls both images from the test registry: the shipped
ollama blueprint's [[models]] come from registry.ollama.ai, unreachable here, so no image bundle of
it can be made (testlab.lock_services), and so [when.ollama.embedding] (active only in an image bundle
that ships an embedding model) is not part of this lab: Open WebUI's start tries the local
sentence-transformers model, which this image does not have (Hugging Face is unreachable), logs the
failure and serves on, as upstream does.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from apps.images import REPO, build_and_push
from apps.testlab import lock_services, make_test_lab
from builder.blueprint import load_lab
from builder.bundle.release import build_release
from builder.install.apply import install_bundle

from labkit import path_with_venv
from support.dockerenv import require_tool
from test_apps import PROFILE, AppsLab, apps_lab, say, shipped_ports, wait_ports_free  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SERVICE = "open-webui"
OLLAMA = "ollama"
STAND_IN_MODELS = {"qwen2.5:0.5b", "nomic-embed-text:v1.5"}      # tests/apps/recipes/ollama-standin


def install_with_stand_in(lab: AppsLab) -> tuple[str, object]:
    """The test lab [ollama (stand-in), open-webui] installed; Open WebUI's base URL and blueprint."""
    start = time.monotonic()
    built = build_and_push(lab.registry.host, only=[OLLAMA + "-standin", SERVICE], engine=lab.engine, log=say,
                           storage=lab.registry.storage)
    assert not built.failed and SERVICE in built.images, built.to_json()
    assert set(built.stand_ins) == {OLLAMA} and OLLAMA in built.unbuilt and SERVICE not in built.unbuilt
    lab.timings["build+push"] = time.monotonic() - start
    refs = {s: built.images[s] for s in (OLLAMA, SERVICE)}
    lab.refs += [r.split("@")[0] for r in refs.values()] + list(refs.values())   # compose pulls them by digest
    root = make_test_lab(lab.tmp / "lab", refs, lab_name=lab.project, profile=(PROFILE, [OLLAMA, SERVICE]))
    lock_services(root, [OLLAMA, SERVICE])
    lab.bundle = Path(build_release(root, "1.0.0", profile=PROFILE, out_dir=lab.tmp / "dist", progress=False).bundle)
    wait_ports_free(root, [OLLAMA, SERVICE])
    lab.target = lab.tmp / "inst"
    start = time.monotonic()
    installed = install_bundle(lab.bundle, lab.target, timeout=900)
    assert installed.ok, installed.failure
    lab.timings["install"] = time.monotonic() - start
    assert installed.services[OLLAMA].state == "healthy"
    assert installed.services[SERVICE].state == "healthy"          # the shipped [health]: GET /health
    bp = load_lab(root).services[SERVICE]
    assert load_lab(REPO).services[SERVICE].env == bp.env           # the shipped env, nothing added
    (port,) = [p.host for p in bp.ports if p.name == bp.health.port]
    return f"http://127.0.0.1:{port}", bp


def test_the_real_open_webui_lists_the_stand_ins_models_for_its_generated_admin_and_refuses_sign_up(apps_lab):
    lab = apps_lab
    base, bp = install_with_stand_in(lab)
    lab.wait_healthy(SERVICE, timeout=300)           # the image's own HEALTHCHECK: curl ... /health | jq
    env = lab.container(SERVICE).attrs["Config"]["Env"]
    assert "OLLAMA_BASE_URL=http://ollama:11434" in env and "ENABLE_SIGNUP=false" in env

    email = bp.env["WEBUI_ADMIN_EMAIL"]
    password = lab.env("OPEN_WEBUI__WEBUI_ADMIN_PASSWORD")          # generated at install, shown once
    assert len(password) >= 24
    with httpx.Client(base_url=base, timeout=60) as web:
        assert web.get("/health").json() == {"status": True}
        refused = web.post("/api/v1/auths/signup", json={"name": "First Visitor", "email": "first@example.org",
                                                          "password": "visitor-pw-" + uuid.uuid4().hex})
        assert refused.status_code == 403, refused.text             # no first-visitor admin, no sign-up
        wrong = web.post("/api/v1/auths/signin", json={"email": email, "password": password + "x"})
        assert wrong.status_code in (400, 401, 403), wrong.text
        assert web.get("/api/models").status_code == 401             # not without a session

        signed = web.post("/api/v1/auths/signin", json={"email": email, "password": password})
        assert signed.status_code == 200, signed.text
        session = signed.json()
        assert session["role"] == "admin" and session["email"] == email and session["name"] == bp.env["WEBUI_ADMIN_NAME"]
        auth = {"Authorization": f"Bearer {session['token']}"}
        deadline = time.monotonic() + 60
        while True:                                                   # Open WebUI caches the model list briefly
            listed = web.get("/api/models", headers=auth)
            assert listed.status_code == 200, listed.text
            models = {m["id"]: m for m in listed.json()["data"]}
            if STAND_IN_MODELS <= set(models) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert STAND_IN_MODELS <= set(models), sorted(models)
        assert all(models[m]["owned_by"] == "ollama" for m in STAND_IN_MODELS), models
        users = web.get("/api/v1/users/", headers=auth)
        assert users.status_code == 200, users.text
        body = users.json()
        listed_users = body["users"] if isinstance(body, dict) else body
        assert [(u["email"], u["role"]) for u in listed_users] == [(email, "admin")]   # the visitor was not added

    seen = [json.loads(line) for line in lab.container(OLLAMA).logs().decode().splitlines()
            if line.startswith('{"standin"')]
    assert any(r["path"] == "/api/tags" for r in seen), seen       # the list came from the stand-in


def test_without_the_cpu_torch_wheel_on_disk_open_webui_is_named_unbuilt_not_failed(docker_engine, monkeypatch, tmp_path):
    import dataclasses

    import apps.images
    from apps.recipe import RECIPES
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    (recipe,) = [r for r in RECIPES if r.name == SERVICE]
    ((name, _),) = recipe.host_files
    absent = str(tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    monkeypatch.setattr(apps.images, "RECIPES", tuple(
        dataclasses.replace(r, host_files=((name, absent),)) if r is recipe else r for r in RECIPES))
    result = build_and_push("127.0.0.1:9", only=[SERVICE], engine=docker_engine, log=say)
    assert result.failed == [] and SERVICE not in result.images
    assert result.unbuilt[SERVICE].startswith(f"{absent} not on this machine"), result.unbuilt
