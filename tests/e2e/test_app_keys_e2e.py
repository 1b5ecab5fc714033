"""Apps are principals too (issue 23): litellm's provisioning calls and the key holder of
`labbuild secrets rotate`, made by the install side on the real engine, from the shipped phase4
release (the front door is on there: LiteLLM publishes no port, install reaches it at its address on
the lab network, as it does behind the door).

Against a STAND-IN of LiteLLM's key API (tests/support/litellm_keys.py, run by the Python of the
tests/apps litellm image in a container, with the shipped holder script mounted where the blueprint
mounts it): LiteLLM's database mode cannot run here (its Prisma engines come from
binaries.prisma.sh, unreachable), so the real proxy has no key store. Shown with the stand-in: each
app's key from DIR/.env is registered under its alias with the master key as bearer and then
accepted with the app's own key; a second install counts "alias already exists" as done only
because the app's key is then accepted; a stale key under an app's alias fails the install naming
the step, with no value in any message or in DIR/audit.log; the holder `secrets rotate` runs
re-registers a new value, is safe to run twice and with the values swapped, and puts the old value
back when the new one is refused.

Installed: a test lab of the shipped blueprints with the real litellm-db and the real JupyterLab
(tests/apps) and "litellm" served by the stand-in: install registers JupyterLab's key, JupyterLab
calls with it; `labbuild secrets rotate LITELLM__JUPYTER_KEY` re-registers it through the shipped
holder and recreates JupyterLab, which then calls with the new key while the old one is refused.

Against the REAL LiteLLM proxy (no database): what can be shown without DB mode: /key/generate
answers 500 "DB not connected", install's provisioning reports that step and what to do (no crash,
no value), the app's key is refused, the master key still lists the models (the operator's and
Prometheus' key), and the holder exits 1 without a traceback.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from apps.build import recipe_image
from builder.blueprint import load_lab
from builder.bundle.pack import manifest_services
from builder.format.files import SECRETS_EXAMPLE
from builder.format.manifest import Manifest
from builder.host.dotenv import env_values
from builder.host.engine import run_exec
from builder.install.provision import provision_services
from builder.install.secrets import write_secrets
from builder.lockfile import LOCK_PATH, read_lock
from builder.render import ReleaseInput, render_text_files
from labkit import path_with_venv
from support.dockerenv import require_tool
from test_apps import PROFILE, apps_lab, shipped_ports, wait_ports_free  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "support" / "litellm_keys.py"
MASTER = "LITELLM__LITELLM_MASTER_KEY"
APPS = {"open-webui": "LITELLM__OPEN_WEBUI_KEY", "n8n": "LITELLM__N8N_KEY", "jupyter": "LITELLM__JUPYTER_KEY",
        "dify": "LITELLM__DIFY_KEY", "flowise": "LITELLM__FLOWISE_KEY"}


def say(text: str) -> None:
    print(text, file=sys.stderr)


@pytest.fixture
def release(tmp_path):
    """The shipped phase4 release's text files and manifest, and an install dir whose DIR/.env holds
    the secrets install generates for it."""
    lab = load_lab(REPO)
    ri = ReleaseInput(lab=lab, lock=read_lock(REPO / LOCK_PATH), profile="phase4", version="0.0.0",
                      labbuild_version="test")
    files = render_text_files(ri)
    manifest = Manifest(lab=lab.name, name="x", version="0.0.0", profile="phase4", inputs="i", labbuild="t",
                        offline=False, platforms=("linux/amd64",), services=manifest_services(ri), files={})
    inst = tmp_path / "inst"
    inst.mkdir()
    write_secrets(inst, files[SECRETS_EXAMPLE], manifest.secret_keys, owners=manifest.secret_owners)
    (inst / "lab_app_key.py").write_text(files["config/litellm/lab_app_key.py"], "utf-8")
    return ri, manifest, inst


@pytest.fixture
def litellm_image(docker_engine, monkeypatch):
    monkeypatch.setenv("PATH", path_with_venv() + ":/usr/sbin:/sbin")
    require_tool("debootstrap")
    return recipe_image(docker_engine, "litellm", say).ref


def _run(engine, image: str, inst: Path, env: dict[str, str], **kw):
    """A container on a network of its own: ``(container, address, network)`` once it answers."""
    net = engine.networks.create(f"keys-{uuid.uuid4().hex[:8]}")
    c = engine.containers.run(image, detach=True, network=net.name, environment=env,
                              labels={"org.local-ai-lab.test": "app-keys"},
                              volumes={str(inst / "lab_app_key.py"): {"bind": "/app/lab_app_key.py", "mode": "ro"},
                                       **kw.pop("volumes", {})}, **kw)
    deadline = time.monotonic() + 120
    while True:
        c.reload()
        ip = c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        try:
            if ip and httpx.get(f"http://{ip}:4000/health/liveliness", timeout=2).status_code == 200:
                return c, ip, net
        except httpx.HTTPError:
            pass
        if c.status != "running" or time.monotonic() > deadline:
            logs = c.logs(tail=30).decode(errors="replace")
            c.remove(force=True)
            net.remove()
            pytest.fail(f"litellm container did not answer: {logs}")
        time.sleep(0.5)


def test_each_apps_key_is_registered_once_checked_with_its_own_key_and_rotated_by_the_holder(
        docker_engine, litellm_image, release):
    _, manifest, inst = release
    steps = manifest.services["litellm"].provision     # behind the door: no host port, the container's address
    assert len(steps) == 10 and all(s.host_port is None and s.container_port == 4000 for s in steps)
    values = env_values((inst / ".env").read_text())
    master = values[MASTER]
    c, ip, net = _run(docker_engine, litellm_image, inst, {"LITELLM_MASTER_KEY": master},
                      entrypoint=["/opt/litellm/bin/python3", "/standin/litellm_keys.py"],
                      volumes={str(STANDIN): {"bind": "/standin/litellm_keys.py", "mode": "ro"}})
    base = f"http://{ip}:4000"
    said: list[str] = []

    def provision():
        return provision_services(inst, manifest, {"litellm"}, said.append, address=lambda svc: ip,
                                  retry_for=5)["litellm"]

    def registered() -> dict:
        return httpx.get(f"{base}/standin/keys").json()

    def accepted(key: str) -> bool:
        return httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    def holder(app: str, new: str, old: str) -> tuple[int | None, str]:
        argv = manifest.services["litellm"].rotation[APPS[app]].holder
        return run_exec(docker_engine, c.id, argv, {"LAB_SECRET_NEW": new, "LAB_SECRET_OLD": old}, timeout=60)

    try:
        first = provision()
        assert first.state == "done", first.detail
        keys = registered()
        assert {alias: k["key"] for alias, k in keys.items()} == {a: values[k] for a, k in APPS.items()}
        assert all(k["key_type"] == "llm_api" and k["metadata"] == {"lab_app": a} for a, k in keys.items())
        calls = httpx.get(f"{base}/standin/calls").json()
        generate = [x for x in calls if x["path"] == "/key/generate"]
        checks = [x for x in calls if x["path"] == "/v1/models"]
        assert len(generate) == len(checks) == 5
        assert all(x["bearer"] == master for x in generate)                  # the master key registers ...
        assert sorted(x["bearer"] for x in checks) == sorted(values[k] for k in APPS.values())   # ... apps check
        assert all(values[k] != master for k in APPS.values())

        again = provision()                                                  # the next install
        assert again.state == "done", again.detail
        assert "/key/generate: already" in again.detail and "/v1/models: done" in again.detail
        assert {a: k["key"] for a, k in registered().items()} == {a: values[k] for a, k in APPS.items()}

        # a stale key under Open WebUI's alias (made by hand, or DIR/.env restored from elsewhere)
        stale = "sk-stale-" + uuid.uuid4().hex
        auth = {"Authorization": f"Bearer {master}"}
        assert httpx.post(f"{base}/key/delete", json={"key_aliases": ["open-webui"]}, headers=auth).status_code == 200
        assert httpx.post(f"{base}/key/generate", json={"key": stale, "key_alias": "open-webui"},
                          headers=auth).status_code == 200
        failed = provision()
        assert failed.state == "failed"
        assert "(GET /v1/models: check that LiteLLM accepts Open WebUI's key): answered 401" in failed.detail
        message = failed.failure(inst / "releases" / "0.0.0" / "runbooks" / "litellm.md")
        assert message.startswith("litellm: provisioning failed: step ") and "runbooks/litellm.md, Provisioning" in message
        assert "install again to retry" in message

        # the holder (what `labbuild secrets rotate LITELLM__OPEN_WEBUI_KEY` runs first) puts DIR/.env's value back
        code, out = holder("open-webui", values[APPS["open-webui"]], stale)
        assert code == 0, out
        assert accepted(values[APPS["open-webui"]]) and not accepted(stale)
        assert provision().state == "done"

        # a rotation: the new value replaces the old under the alias; twice; then back (rotate's way back)
        fresh = "sk-" + uuid.uuid4().hex + uuid.uuid4().hex
        old = values[APPS["n8n"]]
        for _ in range(2):
            code, out = holder("n8n", fresh, old)
            assert code == 0 and "the key of n8n is registered" in out, out
            assert accepted(fresh) and not accepted(old) and registered()["n8n"]["key"] == fresh
        code, out = holder("n8n", old, fresh)
        assert code == 0 and accepted(old) and not accepted(fresh), out

        # a new value LiteLLM refuses (too short): exit 1, and the old one is back under the alias
        code, out = holder("jupyter", "sk-short", values[APPS["jupyter"]])
        assert code == 1 and "generate: 400" in out and "the old key of jupyter is back in place" in out, out
        assert registered()["jupyter"]["key"] == values[APPS["jupyter"]] and accepted(values[APPS["jupyter"]])
        assert "Traceback" not in out

        everything = "\n".join(said) + failed.detail + (inst / "audit.log").read_text("utf-8")
        for key in (master, stale, *(values[k] for k in APPS.values())):
            assert key not in everything
        entries = [e for line in (inst / "audit.log").read_text("utf-8").splitlines()
                   if (e := json.loads(line))["command"] == "provision"]
        assert set(entries[0]["keys"]) == {MASTER, *APPS.values()}
        assert [e["outcome"] for e in entries] == ["ok", "ok", "failed", "ok"]
    finally:
        c.remove(force=True)
        net.remove()


def test_the_real_litellm_without_its_database_refuses_keys_and_install_says_which_step_and_what_to_do(
        docker_engine, litellm_image, release):
    """The real proxy (tests/apps litellm, v1.97.0 from PyPI) with the shipped command and config.yaml,
    no DATABASE_URL (its database mode cannot run here)."""
    ri, manifest, inst = release
    values = env_values((inst / ".env").read_text())
    master = values[MASTER]
    bp = ri.lab.services["litellm"]
    env = {k: v for k, v in bp.effective_env(ri.services).items() if "${secret:" not in v and k != "DATABASE_URL"}
    env["LITELLM_MASTER_KEY"] = master
    env.pop("LANGFUSE_HOST", None)                   # no Langfuse here (its keys are secrets, dropped above)
    config = next(f for f in bp.files if f.name == "config.yaml")    # without Langfuse's callback (not in the image)
    (inst / "config.yaml").write_text(config.content, "utf-8")
    c, ip, net = _run(docker_engine, litellm_image, inst, env, command=list(bp.command),
                      volumes={str(inst / "config.yaml"): {"bind": "/app/config.yaml", "mode": "ro"}})
    said: list[str] = []
    try:
        result = provision_services(inst, manifest, {"litellm"}, said.append, address=lambda svc: ip,
                                    retry_for=3)["litellm"]
        assert result.state == "failed"
        assert result.detail.startswith("step 1 (POST /key/generate: register Dify's own key (alias dify)): answered 500")
        assert "DB not connected" in result.detail, result.detail
        message = result.failure(inst / "releases" / "0.0.0" / "runbooks" / "litellm.md")
        assert "runbooks/litellm.md, Provisioning" in message and "install again to retry" in message
        for text in (message, "\n".join(said), (inst / "audit.log").read_text("utf-8")):
            assert master not in text and values[APPS["dify"]] not in text

        app_key = values[APPS["open-webui"]]
        refused = httpx.get(f"http://{ip}:4000/v1/models", headers={"Authorization": f"Bearer {app_key}"})
        assert refused.status_code == 400 and "No connected db" in refused.text     # no key store: not accepted
        listed = httpx.get(f"http://{ip}:4000/v1/models", headers={"Authorization": f"Bearer {master}"})
        assert listed.status_code == 200 and "ollama/*" in listed.text              # the operator's key works

        code, out = run_exec(docker_engine, c.id, manifest.services["litellm"].rotation[APPS["n8n"]].holder,
                             {"LAB_SECRET_NEW": "sk-" + uuid.uuid4().hex * 2, "LAB_SECRET_OLD": values[APPS["n8n"]]},
                             timeout=120)
        assert code == 1 and "generate: 500" in out and "DB not connected" in out, out
        assert "NOT back: install again" in out and "Traceback" not in out
    finally:
        c.remove(force=True)
        net.remove()


# An HTTP call from inside a container with its own Python: prints the status, then the body.
CALL = """
import os, sys, urllib.error, urllib.request
url, key = sys.argv[1], os.environ.get(sys.argv[2], sys.argv[2])
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + key} if key else {})
try:
    with urllib.request.urlopen(req, timeout=30) as resp:
        print(resp.status); print(resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
"""

STANDIN_DOCKERFILE = """\
# A PROTOCOL STAND-IN FOR LITELLM'S KEY API, NOT LITELLM (tests/support/litellm_keys.py), in the
# tests/apps litellm image: its Python, its paths (/app), the shipped command's arguments ignored.
FROM {base}
COPY litellm_keys.py /standin/litellm_keys.py
ENV LITELLM_STANDIN_STATE=/standin-state/keys.json
LABEL org.local-ai-lab.test.stand-in="litellm: its virtual-key API only, not LiteLLM"
ENTRYPOINT ["/opt/litellm/bin/python3", "/standin/litellm_keys.py"]
"""


@pytest.mark.slow
def test_rotating_an_apps_key_re_registers_it_and_the_real_jupyterlab_calls_with_the_new_one(apps_lab, capsys):
    """An installed test lab of the shipped blueprints: the real litellm-db (PostgreSQL) and the real
    JupyterLab (tests/apps), and "litellm" served by the stand-in of LiteLLM's key API (its key table
    on a volume the test adds, where LiteLLM keeps it in litellm-db). `labbuild install` registers
    JupyterLab's own key (the only app of the profile) and JupyterLab calls LiteLLM with it; then
    `labbuild secrets rotate LITELLM__JUPYTER_KEY` runs the shipped holder in the litellm container,
    recreates litellm and jupyter, and JupyterLab calls with the new key while the old one is refused."""
    from apps.base import BuiltImage
    from apps.build import push_image
    from apps.images import build_and_push
    from apps.testlab import lock_services, make_test_lab
    from builder.bundle.release import build_release
    from builder.cli import main
    from builder.install.apply import install_bundle

    lab = apps_lab
    built = build_and_push(lab.registry.host, only=["postgres", "base-notebook"], engine=lab.engine, log=say,
                           storage=lab.registry.storage)
    base = recipe_image(lab.engine, "litellm", say)
    ctx = lab.tmp / "standin"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(STANDIN_DOCKERFILE.format(base=base.ref))
    (ctx / "litellm_keys.py").write_bytes(STANDIN.read_bytes())
    tag = f"labbuild-test/litellm-keys-standin:{uuid.uuid4().hex[:12]}"
    image, _ = lab.engine.images.build(path=str(ctx), tag=tag, rm=True, labels={"org.local-ai-lab.test": "app-keys"})
    try:
        ref = push_image(lab.engine, BuiltImage(tag, image.id, "", built=True), lab.registry.host)
    finally:
        lab.engine.images.remove(tag, noprune=True)
    lab.refs.append(ref.split("@")[0])
    services = {"litellm": ref, "litellm-db": built.images["litellm-db"], "jupyter": built.images["jupyter"]}
    root = make_test_lab(lab.tmp / "lab", services, lab_name=lab.project, profile=(PROFILE, ["litellm", "jupyter"]))
    bp = root / "blueprints" / "services" / "litellm.toml"        # the stand-in's key table survives a restart
    bp.write_text(bp.read_text() + '\n[[volumes]]\nname = "standin"\ntarget = "/standin-state"\n')
    lock_services(root, list(services))
    lab.bundle = Path(build_release(root, "1.0.0", profile=PROFILE, with_images=True, out_dir=lab.tmp / "dist",
                                    progress=False).bundle)
    lab.registry.stop()
    wait_ports_free(root, list(services))
    lab.target = lab.tmp / "inst"
    installed = install_bundle(lab.bundle, lab.target, timeout=240)
    assert installed.ok, installed.failure
    assert installed.provisioned["litellm"].state == "done", installed.provisioned
    assert "/key/generate: done; /v1/models: done" == installed.provisioned["litellm"].detail

    def from_jupyter(key_var: str = "OPENAI_API_KEY") -> tuple[int, str]:
        code, out = lab.run("jupyter", "python3", "-c", CALL, "http://litellm:4000/v1/models", key_var)
        assert code == 0, out
        status, _, body = out.partition("\n")
        return int(status), body

    def keys() -> dict:
        code, out = lab.run("litellm", "python3", "-c", CALL, "http://127.0.0.1:4000/standin/keys", "")
        return json.loads(out.partition("\n")[2])

    old, master = lab.env("LITELLM__JUPYTER_KEY"), lab.env(MASTER)
    env = dict(e.split("=", 1) for e in lab.container("jupyter").attrs["Config"]["Env"])
    assert env["OPENAI_API_KEY"] == old != master and master not in env.values()
    assert {a: k["key"] for a, k in keys().items()} == {"jupyter": old}      # only the app of this profile
    assert from_jupyter()[0] == 200                                           # JupyterLab's own key works

    code = main(["--json", "secrets", "rotate", "--dir", str(lab.target), "LITELLM__JUPYTER_KEY"])
    out = capsys.readouterr()
    assert code == 0, out.err
    new = lab.env("LITELLM__JUPYTER_KEY")
    assert new != old and new.startswith("sk-") and new not in out.out + out.err
    env = dict(e.split("=", 1) for e in lab.container("jupyter").attrs["Config"]["Env"])
    assert env["OPENAI_API_KEY"] == new                                       # jupyter was recreated
    assert {a: k["key"] for a, k in keys().items()} == {"jupyter": new}       # re-registered, the old one gone
    assert from_jupyter()[0] == 200
    with_old = lab.run("jupyter", "python3", "-c", CALL, "http://litellm:4000/v1/models", "OLD",
                       env={"OLD": old})[1]
    assert with_old.startswith("401"), with_old
