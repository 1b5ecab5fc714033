"""Issue 24 on the real PostgreSQL of the real-application test images (tests/apps): a rotation of
litellm-db's password killed with SIGKILL at two moments, then run again, ends consistent — the
password the database accepts is the one in DIR/.env, and the other one is refused.

The consumer LiteLLM is not in these labs: its database mode needs Prisma's engines, which cannot be
fetched here (test_apps.test_the_real_litellm_proxy_answers_its_shipped_health_and_metrics_without_its_database).
The kill -9 tests recreate only the owner litellm-db; the last test adds a real client in its place: psql of
the same image, logging in with LiteLLM's DATABASE_URL, recreated by the rotation and healthy only with the
new password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from test_apps import DB, KEY, apps_lab, cli, password_login, psql, shipped_ports  # noqa: F401 (fixtures)

from labkit import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Locks the row of role postgres in pg_authid for a while without changing it: the holder's ALTER ROLE
# waits for it, then goes through (a blocker that updated the row would make it fail instead, with
# "tuple concurrently updated").
BLOCKER = "BEGIN; SELECT 1 FROM pg_authid WHERE rolname = 'postgres' FOR UPDATE; SELECT pg_sleep({s}); COMMIT;"


def _waiting_alter_role(lab) -> bool:
    return psql(lab, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND query ILIKE 'ALTER ROLE%PASSWORD%'") == "1"


@pytest.mark.parametrize("moment", ["holder-waiting", "after-env"])
def test_kill_9_during_a_rotation_of_the_real_postgres_password_then_a_rerun_ends_consistent(
        apps_lab, capsys, moment):
    lab = apps_lab
    lab.install("postgres", DB)
    old = lab.env(KEY)
    journal = lab.target / ".secrets-journal.json"
    if moment == "holder-waiting":
        lab.container(DB).exec_run(["psql", "-X", "-U", "postgres", "-d", "postgres", "-c", BLOCKER.format(s=8)],
                                   detach=True)
        deadline = time.monotonic() + 20
        while psql(lab, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; SELECT 1 FROM pg_authid%'") != "1":
            assert time.monotonic() < deadline, "the blocking session never started"
            time.sleep(0.2)
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "labbuild"), "secrets", "rotate", "--dir",
                             str(lab.target), KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    deadline = time.monotonic() + 60
    while True:
        if moment == "holder-waiting" and journal.exists() and _waiting_alter_role(lab):
            break
        if moment == "after-env" and lab.env(KEY) != old:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the rotation never reached the moment to kill it"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    new = json.loads(journal.read_bytes())["changes"][0]["new"]
    assert oct(journal.stat().st_mode & 0o777) == "0o600" and new != old
    if moment == "holder-waiting":
        # the killed command's exec goes on in the container: once the blocker commits, the database
        # has the new password while DIR/.env still has the old one -- the state the re-run must mend
        deadline = time.monotonic() + 30
        while password_login(lab, new)[0] != 0:
            assert time.monotonic() < deadline, "the orphaned holder never finished"
            time.sleep(0.5)
        assert lab.env(KEY) == old and password_login(lab, old)[0] != 0

    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(lab.target))      # the re-run
    assert code == 0, err
    assert (out["outcome"], out["command"], out["keys"]) == ("ok", "secrets rotate (resumed)", [KEY])
    assert lab.env(KEY) == new and not journal.exists()
    lab.wait_healthy(DB)
    assert password_login(lab, new) == (0, "postgres\n")                 # the database == DIR/.env
    assert password_login(lab, old)[0] != 0
    assert lab.container(DB).attrs["Config"]["Env"].count(f"POSTGRES_PASSWORD={new}") == 1
    audit = (lab.target / "audit.log").read_text()
    assert old not in audit and new not in audit
    last = json.loads(audit.splitlines()[-1])
    assert (last["command"], last["outcome"], last["keys"]) == ("secrets rotate (resumed)", "ok", [KEY])


# LiteLLM's database mode cannot run here (Prisma's engines), so the consumer of litellm-db's password is
# psql of the same real PostgreSQL image, given LiteLLM's DATABASE_URL verbatim (the shipped litellm.toml's
# [env]) and healthy only while it logs in with it: a real client whose credential is the rotated secret.
CONSUMER = "pg-client"


def _consumer_blueprint(ref: str) -> str:
    from apps.testlab import split_reference
    from builder.blueprint import load_lab
    from test_apps import REPO as ROOT

    url = load_lab(ROOT).services["litellm"].env["DATABASE_URL"]
    assert "${secret:litellm-db.POSTGRES_PASSWORD}" in url
    image = split_reference(ref)
    return f'''[service]
name = "{CONSUMER}"
description = "test consumer of litellm-db: psql logging in with LiteLLM's DATABASE_URL"
phase = 2
category = "data"
depends_on = ["litellm-db"]
command = ["sleep", "infinity"]

[image]
name = "{image['name']}"
tag = "{image['tag']}"
digest = "{image['digest']}"

[env]
DATABASE_URL = {json.dumps(url)}

[healthcheck]
test = ["CMD-SHELL", "psql \\"$DATABASE_URL\\" -X -At -c 'select 1'"]
interval = "2s"
timeout = "5s"
retries = 3
start_period = "5s"
'''


def test_rotation_recreates_a_real_consumer_that_then_logs_in_with_the_new_password(apps_lab, capsys):
    from apps.images import build_and_push
    from apps.testlab import lock_services, make_test_lab
    from builder.bundle.release import build_release
    from builder.install.apply import install_bundle
    from test_apps import PROFILE, say, wait_ports_free

    lab = apps_lab
    built = build_and_push(lab.registry.host, only=["postgres"], engine=lab.engine, log=say,
                           storage=lab.registry.storage)
    ref = built.images[DB]
    lab.refs.append(ref.split("@")[0])
    root = make_test_lab(lab.tmp / "lab", {DB: ref}, lab_name=lab.project, profile=(PROFILE, [DB, CONSUMER]))
    (root / "blueprints" / "services" / f"{CONSUMER}.toml").write_text(_consumer_blueprint(ref))
    lock_services(root, [DB, CONSUMER])
    bundle = build_release(root, "1.0.0", profile=PROFILE, with_images=True, out_dir=lab.tmp / "dist",
                           progress=False).bundle
    lab.registry.stop()
    wait_ports_free(root, [DB])
    lab.target = lab.tmp / "inst"
    installed = install_bundle(bundle, lab.target, timeout=120)
    assert installed.ok, installed.failure
    lab.wait_healthy(DB)
    lab.wait_healthy(CONSUMER)
    old = lab.env(KEY)
    consumer_id = lab.container(CONSUMER).id

    code, out, err = cli(capsys, "secrets", "rotate", "--dir", str(lab.target), KEY)
    assert code == 0, err
    assert out["services"] == sorted([CONSUMER, DB])                  # the owner and its consumer, recreated
    new = lab.env(KEY)
    assert new != old and lab.container(CONSUMER).id != consumer_id
    lab.wait_healthy(CONSUMER)                                         # it logs in with the new password
    env = dict(e.split("=", 1) for e in lab.container(CONSUMER).attrs["Config"]["Env"])
    assert f":{new}@litellm-db:" in env["DATABASE_URL"]
    code, output = lab.run(CONSUMER, "sh", "-c", "psql \"$DATABASE_URL\" -X -At -c 'select current_user'")
    assert (code, output) == (0, "postgres\n")
    assert password_login(lab, old)[0] != 0
