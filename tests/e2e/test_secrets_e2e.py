"""`labbuild secrets rotate|set` and the audit log on the real engine (issue 24).

The lab is labkit's two busybox services: ``web`` owns ``API_TOKEN`` and a volume; its *holder*
is a busybox shell command (a stand-in for a database's ``ALTER ROLE``) that writes
``$LAB_SECRET_NEW`` into the file /data/holder of that volume. web's start script removes its
/healthz when the file and its own ``API_TOKEN`` differ, so web is healthy only when the holder
and DIR/.env agree — what a database and its clients need. ``api`` reads the key through
``${secret:web.API_TOKEN}``: a consumer that must be recreated. Files in the volume steer the
holder: ``fail-holder`` (it exits 3), ``skew`` (it writes another value once), ``sleep`` (it waits
that many seconds first: a window for kill -9).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from builder.cli import main
from builder.install.apply import install_bundle

from labkit import REPO, Service, free_port, http_get, path_with_venv

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BB = "/bin/busybox"
HOLDER = (f'if [ -e /data/fail-holder ]; then echo "refusing the change"; exit 3; fi; '
          f'{BB} sleep "$({BB} cat /data/sleep 2>/dev/null || echo 0)"; '
          f'if [ -e /data/skew ]; then {BB} rm /data/skew; printf x > /data/holder; '
          f'else printf %s "$LAB_SECRET_NEW" > /data/holder; fi')
WEB_SECRETS = f'''
[secrets.API_TOKEN]
generate = "token"
length = 24
rotate = true
rotate_days = 30
[secrets.API_TOKEN.holder]
exec = ["/bin/sh", "-c", {json.dumps(HOLDER)}]

[secrets.DATA_KEY]
generate = "hex"
rotate = false
rotate_reason = "the data in the volume is encrypted with it"

[secrets.PLAIN]
generate = "password"
'''
# web serves /healthz only while the holder's file (when there is one) equals its own API_TOKEN
PRELUDE = (f'if [ -f /data/holder ] && [ "$({BB} cat /data/holder)" != "$API_TOKEN" ]; '
           f'then {BB} rm -f /www/healthz; fi')


def container(engine, lab: str, service: str):
    (c,) = engine.containers.list(all=True, filters={"label": [f"com.docker.compose.project={lab}",
                                                                f"com.docker.compose.service={service}"]})
    return c


def env_of(engine, lab: str, service: str) -> dict[str, str]:
    return dict(e.split("=", 1) for e in container(engine, lab, service).attrs["Config"]["Env"])


def holder_value(engine, lab: str) -> str | None:
    code, out = container(engine, lab, "web").exec_run([BB, "cat", "/data/holder"])
    return out.decode() if code == 0 else None


def touch(engine, lab: str, name: str, content: str = "") -> None:
    code, out = container(engine, lab, "web").exec_run(["/bin/sh", "-c", f"printf %s '{content}' > /data/{name}"])
    assert code == 0, out


def dotenv(target: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (target / ".env").read_text().splitlines() if "=" in line)


def installed(airgap, engine, tmp_path: Path):
    lab = airgap
    lab.salt = lab.name
    lab.services = {
        "web": Service("web", free_port(), volume=True, extra=WEB_SECRETS, prelude=PRELUDE),
        "api": Service("api", free_port(), depends_on=("web",),
                       extra='\n[env]\nWEB_TOKEN = "${secret:web.API_TOKEN}"\n'),
    }
    lab.update()
    bundle = lab.release("1.0.0")
    lab.offline(engine)
    target = tmp_path / "inst"
    assert install_bundle(bundle, target, timeout=60).ok
    return lab, target


def cli(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["--json", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def assert_consistent(engine, lab, target: Path) -> str:
    """The holder, DIR/.env and both services' environments hold one value; web answers."""
    value = dotenv(target)["WEB__API_TOKEN"]
    assert holder_value(engine, lab.name) in (None, value)
    assert env_of(engine, lab.name, "web")["API_TOKEN"] == value
    assert env_of(engine, lab.name, "api")["WEB_TOKEN"] == value
    assert http_get(lab.services["web"].port, "/healthz")[0] == 200
    assert not (target / ".secrets-journal.json").exists()
    return value


def audit_log_holds_no_value(target: Path, values) -> None:
    log = (target / "audit.log").read_text()
    for value in values:
        assert value not in log, "a secret value reached audit.log"


def test_rotate_changes_holder_env_and_consumers_refuses_undecided_and_never_logs_a_value(
        airgap, docker_engine, tmp_path, capsys):
    lab, target = installed(airgap, docker_engine, tmp_path)
    before = dotenv(target)
    seen = set(before.values())

    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target), "WEB__API_TOKEN")
    assert code == 0, err
    assert out["outcome"] == "ok" and out["keys"] == ["WEB__API_TOKEN"] and out["services"] == ["api", "web"]
    new = assert_consistent(docker_engine, lab, target)
    assert new != before["WEB__API_TOKEN"] and holder_value(docker_engine, lab.name) == new and len(new) == 24
    assert {k: v for k, v in dotenv(target).items() if k != "WEB__API_TOKEN"} == {
        k: v for k, v in before.items() if k != "WEB__API_TOKEN"}
    seen.add(new)

    for key, words in (("WEB__DATA_KEY", "must never change: the data in the volume is encrypted with it"),
                       ("WEB__PLAIN", "has no rotation decision"), ("WEB__NOPE", "not a secret of")):
        code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target), key)
        assert code == 1 and words in out["error"] and "Traceback" not in err, (key, out)
    assert dotenv(target)["WEB__DATA_KEY"] == before["WEB__DATA_KEY"]

    code, out, _ = cli(capsys, "secrets", "list", "--dir", str(target))
    token = next(s for s in out["secrets"] if s["key"] == "WEB__API_TOKEN")
    assert (token["set_by"], token["due"], token["services"]) == ("secrets rotate", False, ["api", "web"])
    assert out["due"] == []

    # --due picks exactly the due keys: an install from before the audit log, its .env 40 days old
    os.replace(target / "audit.log", tmp_path / "audit.log.saved")
    old = time.time() - 40 * 86400
    os.utime(target / ".env", (old, old))
    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target), "--due")
    assert code == 0 and out["keys"] == ["WEB__API_TOKEN"], err
    seen.add(assert_consistent(docker_engine, lab, target))
    code, out, _ = cli(capsys, "secrets", "rotate", "--dir", str(target), "--due")
    assert code == 0 and out["keys"] == []                     # nothing is due any more

    entries = [json.loads(line) for line in (tmp_path / "audit.log.saved").read_text().splitlines()]
    assert [(e["command"], e["outcome"]) for e in entries] == [("install", "ok"), ("secrets rotate", "ok")]
    assert entries[1]["keys"] == ["WEB__API_TOKEN"] and entries[1]["services"] == ["api", "web"]
    for log in (tmp_path / "audit.log.saved", target / "audit.log"):
        text = log.read_text()
        assert not [v for v in seen if v in text]


def test_a_failing_holder_leaves_the_old_value_everywhere(airgap, docker_engine, tmp_path, capsys):
    lab, target = installed(airgap, docker_engine, tmp_path)
    env_before = (target / ".env").read_bytes()
    touch(docker_engine, lab.name, "fail-holder")
    web_id = container(docker_engine, lab.name, "web").id

    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target), "WEB__API_TOKEN")
    assert code == 1 and out["outcome"] == "rolled-back", err
    assert "holder command of WEB__API_TOKEN in web exited 3: refusing the change" in out["error"]
    assert "nothing was changed" in out["error"]
    assert (target / ".env").read_bytes() == env_before
    assert container(docker_engine, lab.name, "web").id == web_id            # nothing was recreated
    assert holder_value(docker_engine, lab.name) is None
    assert_consistent(docker_engine, lab, target)
    last = json.loads((target / "audit.log").read_text().splitlines()[-1])
    assert (last["command"], last["outcome"]) == ("secrets rotate", "rolled-back") and "exited 3" in last["detail"]


def test_an_unhealthy_consumer_after_the_change_puts_the_old_value_back(airgap, docker_engine, tmp_path, capsys):
    lab, target = installed(airgap, docker_engine, tmp_path)
    old = dotenv(target)["WEB__API_TOKEN"]
    touch(docker_engine, lab.name, "skew")           # the holder keeps another value than .env, once

    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target), "--timeout", "8", "WEB__API_TOKEN")
    assert code == 1 and out["outcome"] == "rolled-back", err
    assert "web is not healthy after it was recreated" in out["error"]
    assert dotenv(target)["WEB__API_TOKEN"] == old
    assert holder_value(docker_engine, lab.name) == old                      # the holder got the old value back
    assert assert_consistent(docker_engine, lab, target) == old


@pytest.mark.parametrize("moment", ["in-holder", "after-env"])
def test_kill_9_during_a_rotation_then_a_rerun_ends_consistent(airgap, docker_engine, tmp_path, capsys, moment):
    lab, target = installed(airgap, docker_engine, tmp_path)
    old = dotenv(target)["WEB__API_TOKEN"]
    if moment == "in-holder":
        touch(docker_engine, lab.name, "sleep", "4")
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "labbuild"), "secrets", "rotate", "--dir", str(target),
                             "WEB__API_TOKEN"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PATH": path_with_venv()})
    journal = target / ".secrets-journal.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if moment == "in-holder" and journal.exists():
            time.sleep(1.0)                                  # the holder is sleeping in the container
            break
        if moment == "after-env" and dotenv(target)["WEB__API_TOKEN"] != old:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the rotation never reached the moment to kill it")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert journal.exists()
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    if moment == "in-holder":
        touch(docker_engine, lab.name, "sleep", "0")

    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target))    # the re-run
    assert code == 0, err
    assert out["outcome"] == "ok" and out["command"] == "secrets rotate (resumed)" and out["keys"] == ["WEB__API_TOKEN"]
    new = assert_consistent(docker_engine, lab, target)
    assert holder_value(docker_engine, lab.name) == new != old
    last = json.loads((target / "audit.log").read_text().splitlines()[-1])
    assert (last["command"], last["outcome"]) == ("secrets rotate (resumed)", "ok")
    audit_log_holds_no_value(target, (old, new))


def test_set_takes_the_value_from_stdin_quotes_it_and_applies_it_the_same_way(airgap, docker_engine, tmp_path):
    lab, target = installed(airgap, docker_engine, tmp_path)
    value = "operator's token $HOME #1"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "labbuild"), "secrets", "set", "--dir", str(target),
                           "WEB__API_TOKEN"], input=value + "\n", capture_output=True, text=True,
                          env={**os.environ, "PATH": path_with_venv()})
    assert proc.returncode == 0, proc.stderr
    assert value not in proc.stdout + proc.stderr
    assert holder_value(docker_engine, lab.name) == value
    assert env_of(docker_engine, lab.name, "web")["API_TOKEN"] == value
    assert env_of(docker_engine, lab.name, "api")["WEB_TOKEN"] == value
    assert http_get(lab.services["web"].port, "/healthz")[0] == 200
    assert value not in (target / "audit.log").read_text()
    refused = subprocess.run([str(REPO / ".venv" / "bin" / "labbuild"), "secrets", "set", "--dir", str(target),
                              "WEB__DATA_KEY"], input="x\n", capture_output=True, text=True,
                             env={**os.environ, "PATH": path_with_venv()})
    assert refused.returncode == 1 and "must never change" in refused.stderr and "Traceback" not in refused.stderr


def test_rotate_and_set_copy_the_new_value_to_openbao_a_stand_in_here(airgap, docker_engine, tmp_path, capsys,
                                                                        monkeypatch):
    """The install's OpenBao is the STAND-IN of tests/test_openbao_kv.py (OpenBao cannot run here); labbuild
    finds it where it would find port 8200 of the openbao service (``openbao_url``, patched)."""
    import builder.host.kvstore as kvstore
    from test_openbao_kv import ROLE, SECRET, OpenBaoStandIn

    lab, target = installed(airgap, docker_engine, tmp_path)
    bao = OpenBaoStandIn()
    try:
        monkeypatch.setattr(kvstore, "openbao_url", lambda manifest, address=None: bao.url)
        with (target / ".env").open("a") as f:
            f.write(f"{kvstore.ROLE_ID}={ROLE}\n{kvstore.SECRET_ID}={SECRET}\n")
        code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(target), "WEB__API_TOKEN")
        assert code == 0, err
        new = assert_consistent(docker_engine, lab, target)
        assert bao.kv["web"][-1]["WEB__API_TOKEN"] == new and len(bao.kv["web"]) == 1
        assert set(bao.kv) == {"web"}                     # only the owner of the changed key is written
        assert set(bao.kv["web"][-1]) == {"WEB__API_TOKEN", "WEB__DATA_KEY", "WEB__PLAIN"}

        proc_value = "set-by-operator-0123"
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((proc_value + "\n").encode())))
        code, out, err = cli(capsys, "secrets", "set", "--dir", str(target), "WEB__API_TOKEN")
        assert code == 0, err
        assert [v["WEB__API_TOKEN"] for v in bao.kv["web"]] == [new, proc_value]     # versions as history
        entries = [json.loads(line) for line in (target / "audit.log").read_text().splitlines()]
        assert [e["command"] for e in entries if e["command"].startswith("openbao")] == [
            "openbao kv write (secrets rotate)", "openbao kv write (secrets set)"]
        audit_log_holds_no_value(target, (new, proc_value, SECRET))
        assert not bao.unexpected, bao.unexpected
    finally:
        bao.close()
