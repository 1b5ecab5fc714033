"""An upgrade and `rollback --restore-data` on the real PostgreSQL of the real-application test images
(tests/apps): litellm-db's rows as they were before the upgrade come back through the snapshot install
took with the shipped [backup] (pg_dumpall while the server runs) and its restore (psql).

What makes the rollback one way is the catalog's own: the shipped litellm blueprint declares
``[upgrade] migrations = "one-way"`` with ``data_in = ["litellm-db"]`` (LiteLLM migrates its Postgres
schema with Prisma at start, forwards only). So the test lab is litellm-db and litellm, both from the
shipped blueprints with only ``[image]`` substituted, and release 1.1.0 differs from 1.0.0 in litellm's
image alone -- an upgrade of LiteLLM, the case an operator meets.

LiteLLM itself cannot be that service here. Its database mode needs Prisma's query and schema engines,
downloaded from binaries.prisma.sh, which is no registry reachable here (tests/apps/recipes/litellm); with
the shipped DATABASE_URL the real proxy's workers die at start, one after the other, so it never answers its
[health]. "litellm" is therefore served by a STAND-IN FOR LITELLM, NOT LITELLM (``litellm_stand_in``): the
shared base image of tests/apps with perl answering the one call labbuild makes of it, GET
/health/liveliness on the port the shipped command names. It writes nothing to the database. The rows --
LiteLLM's tables, its ``_prisma_migrations`` and what a newer LiteLLM's migration changes -- are written
with the real ``psql`` inside litellm-db, in the database the shipped DATABASE_URL names (``postgres``).

The shipped restore command on its own, in the real PostgreSQL (the second test): over a running server with
other sessions open on two of its databases it ends them and gives exactly the dump's rows back (before, one
open session kept its database, the dump's rows were appended to it and psql still exited 0), keeps a row
whose text is a line the command leaves out of the dump's roles part, and stops at an error, failing the
restore through labbuild's own feeding of the command (``builder.backups.restore._feed``).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from apps.base import BuiltImage, ensure_base
from apps.build import push_image, recipe_image
from apps.images import REPO, build_and_push
from apps.testlab import LOCK, lock_services, make_test_lab, substitute_image
from builder.blueprint import load_lab
from builder.bundle.release import build_release
from builder.install.apply import install_bundle

from support.dockerenv import require_tool
from test_apps import DB, PROFILE, AppsLab, apps_lab, cli, psql, say, shipped_ports, wait_ports_free  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LITELLM = "litellm"

# The stand-in's server: perl of the base image (Debian's perl-base), one connection at a time. The shipped
# command (--config ... --port 4000 --num_workers 2) arrives as its arguments; it answers GET
# /health/liveliness as LiteLLM does (200, "I'm alive!") and 404 to anything else.
STAND_IN = r"""
use strict; use IO::Socket::INET;
my %arg = @ARGV % 2 ? () : @ARGV;
my $port = $arg{'--port'} || 4000;
$SIG{TERM} = sub { exit 0 };
my $server = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $port, Listen => 64, ReuseAddr => 1)
    or die "litellm stand-in: cannot listen on $port: $!\n";
$| = 1;
print "A STAND-IN FOR LITELLM, NOT LITELLM ($ENV{STAND_IN_RELEASE}): GET /health/liveliness on $port\n";
while (1) {
    my $c = $server->accept or next;
    eval {
        local $SIG{ALRM} = sub { die "slow client\n" };
        alarm 5;
        my $line = <$c> // '';
        while (defined(my $h = <$c>)) { last if $h =~ /^\r?\n\z/ }
        my ($method, $path) = $line =~ m{^(\S+) (\S+)};
        my ($status, $body) = (($method // '') eq 'GET' && ($path // '') eq '/health/liveliness')
            ? ('200 OK', q("I'm alive!")) : ('404 Not Found', q({"detail":"Not Found"}));
        print $c "HTTP/1.1 $status\r\nContent-Type: application/json\r\nContent-Length: " . length($body)
            . "\r\nConnection: close\r\n\r\n$body";
        alarm 0;
    };
    close $c;
}
"""


def litellm_stand_in(engine, base: BuiltImage, tag: str, release: str) -> BuiltImage:
    """The stand-in image ``labbuild-test/litellm-standin:<tag>`` FROM the base: no layer of its own
    (its bundle carries one config more), ``release`` in its label and env, so that two releases are
    two images as two LiteLLM versions would be."""
    dockerfile = "\n".join([
        f"FROM {base.ref}",
        f"ENV STAND_IN_RELEASE={release}",
        'LABEL org.local-ai-lab.test.stand-in="litellm: answers GET /health/liveliness only; not LiteLLM"',
        "EXPOSE 4000/tcp",
        "ENTRYPOINT " + json.dumps(["perl", "-e", STAND_IN, "--"]),
        "CMD []",
        ""])
    ref = f"labbuild-test/litellm-standin:{tag}"
    image, _ = engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True, pull=False)
    return BuiltImage(ref, image.id, release, built=True)


# LiteLLM's tables as its first start would leave them (names from litellm/proxy/schema.prisma), with rows
FIRST_START = """
CREATE TABLE "_prisma_migrations" (id varchar(36) PRIMARY KEY, migration_name varchar(255) NOT NULL,
                                   finished_at timestamptz);
INSERT INTO "_prisma_migrations" VALUES ('m-1', '20250326162113_baseline', now());
CREATE TABLE "LiteLLM_VerificationToken" (token text PRIMARY KEY, key_alias text, spend double precision DEFAULT 0);
INSERT INTO "LiteLLM_VerificationToken" SELECT md5('key' || g), 'key-' || g, 0 FROM generate_series(1, 20) g;
CREATE TABLE "LiteLLM_SpendLogs" (request_id text PRIMARY KEY, api_key text NOT NULL,
                                  spend double precision NOT NULL, "startTime" timestamp(3) NOT NULL);
INSERT INTO "LiteLLM_SpendLogs" SELECT 'req-' || g, md5('key' || (g % 20 + 1)), g * 0.001,
                                       timestamp '2026-12-01' + g * interval '1 minute'
                                FROM generate_series(1, 500) g;
UPDATE "LiteLLM_VerificationToken" t SET spend = s.total
  FROM (SELECT api_key, sum(spend) AS total FROM "LiteLLM_SpendLogs" GROUP BY api_key) s WHERE s.api_key = t.token;
"""
# What the newer LiteLLM's migration does at its first start (a column, a table, its migration row),
# then traffic through the upgraded proxy
MIGRATE_AND_USE = """
INSERT INTO "_prisma_migrations" VALUES ('m-2', '20261201000000_spend_logs_model_id', now());
ALTER TABLE "LiteLLM_SpendLogs" ADD COLUMN model_id text;
CREATE TABLE "LiteLLM_HealthCheckTable" (health_check_id text PRIMARY KEY, model_name text NOT NULL);
INSERT INTO "LiteLLM_SpendLogs" SELECT 'req-' || g, md5('key1'), 0.5, now(), 'ollama/qwen2.5:0.5b'
                                FROM generate_series(501, 600) g;
DELETE FROM "LiteLLM_SpendLogs" WHERE request_id IN ('req-1', 'req-2');
UPDATE "LiteLLM_VerificationToken" SET spend = spend + 50, key_alias = 'renamed' WHERE key_alias = 'key-1';
"""
# The state compared: every column of the public schema, then each table's rows as one digest
STATE = [
    "SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ', ' "
    "ORDER BY table_name, ordinal_position) FROM information_schema.columns WHERE table_schema = 'public'",
    "SELECT string_agg(id || '=' || migration_name, ', ' ORDER BY id) FROM \"_prisma_migrations\"",
    "SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY token)) FROM \"LiteLLM_VerificationToken\" t",
    "SELECT count(*) || ' ' || round(sum(spend)::numeric, 3) || ' ' || md5(string_agg(s::text, ',' ORDER BY request_id)) "
    "FROM \"LiteLLM_SpendLogs\" s",
]


def state(lab: AppsLab) -> list[str]:
    return [psql(lab, q) for q in STATE]


def test_an_upgrade_of_litellm_rolls_back_only_with_the_real_postgres_rows_of_before_it(apps_lab, capsys):
    lab = apps_lab
    start = time.monotonic()
    built = build_and_push(lab.registry.host, only=["postgres"], engine=lab.engine, log=say,
                           storage=lab.registry.storage)
    assert DB in built.images, built.unbuilt
    base = ensure_base(lab.engine, say)
    tag = lab.project
    stand_ins = [litellm_stand_in(lab.engine, base, f"{tag}-{n}", n) for n in ("1.0.0", "1.1.0")]
    refs = [push_image(lab.engine, s, lab.registry.host) for s in stand_ins]
    lab.refs += [built.images[DB].split("@")[0]] + [r.split("@")[0] for r in refs] + [s.ref for s in stand_ins]
    root = make_test_lab(lab.tmp / "lab", {DB: built.images[DB], LITELLM: refs[0]}, lab_name=lab.project,
                         profile=(PROFILE, [DB, LITELLM]))
    lock_services(root, [DB, LITELLM])
    v1 = Path(build_release(root, "1.0.0", profile=PROFILE, with_images=True, out_dir=lab.tmp / "dist",
                            progress=False).bundle)
    # 1.1.0: LiteLLM's image changes (the stand-in of "another version"), nothing else
    litellm_toml = root / "blueprints" / "services" / f"{LITELLM}.toml"
    litellm_toml.write_text(substitute_image(litellm_toml.read_text("utf-8"), refs[1]), "utf-8")
    lock_services(root, [LITELLM])
    v2 = Path(build_release(root, "1.1.0", profile=PROFILE, with_images=True, out_dir=lab.tmp / "dist",
                            progress=False, since="1.0.0").bundle)
    assert json.loads((root / LOCK).read_text())["services"][DB]["digest"] == built.images[DB].split("@")[1]
    lab.timings["build+release"] = time.monotonic() - start
    lab.registry.stop()                                   # offline from here: the bundles are the only source
    wait_ports_free(root, [DB, LITELLM])

    lab.target = lab.tmp / "inst"
    start = time.monotonic()
    installed = install_bundle(v1, lab.target, timeout=120)
    assert installed.ok, installed.failure
    assert installed.services[LITELLM].state == "healthy"          # the stand-in's /health/liveliness
    lab.wait_healthy(DB)                                           # the shipped pg_isready
    psql(lab, FIRST_START)
    before = state(lab)
    assert before[3].startswith("500 125.250 ") and before[2].startswith("20 ")
    db_id = lab.container(DB).id

    code, out, err = cli(capsys, "install", str(v2), "--dir", str(lab.target), "--timeout", "120")
    assert code == 0, err
    # litellm is one way and holds its data in litellm-db: that is what the snapshot holds, dumped while it ran
    assert "snapshot before upgrading 1.0.0 -> 1.1.0: litellm-db" in err
    assert lab.container(DB).id == db_id                           # its image did not change: not recreated
    assert lab.container(LITELLM).image.id == stand_ins[1].image_id
    psql(lab, MIGRATE_AND_USE)
    after = state(lab)
    assert after[3].startswith("598 175.247 ") and "model_id" in after[0] and after != before
    code, out, _ = cli(capsys, "backups", "--dir", str(lab.target))
    (snap,) = out["backups"]
    assert (snap["kind"], snap["version"], snap["upgrade_to"], snap["services"]) == (
        "snapshot", "1.0.0", "1.1.0", [DB])

    code, out, _ = cli(capsys, "rollback", "--dir", str(lab.target), "--timeout", "60")
    assert code == 1
    assert "cannot roll back litellm from 1.1.0 to 1.0.0 without its data" in out["error"]
    assert "--restore-data" in out["hint"] and Path(snap["path"]).name in out["hint"]
    assert (lab.target / "current").resolve().name == "1.1.0"       # nothing changed
    assert state(lab) == after and lab.container(DB).id == db_id

    code, out, err = cli(capsys, "rollback", "--dir", str(lab.target), "--restore-data", "--timeout", "120")
    assert code == 0, err
    assert f"restoring the data of {DB} from {Path(snap['path']).name}" in err
    assert f"stopping {LITELLM} while {DB} is restored" in err      # no client while psql drops and recreates
    assert out["version"] == "1.0.0" and out["services"] == {DB: "healthy", LITELLM: "healthy"}
    lab.wait_healthy(DB)
    assert lab.container(LITELLM).image.id == stand_ins[0].image_id
    assert state(lab) == before                                    # every column and row of before the upgrade
    assert psql(lab, "SELECT count(*) FROM pg_tables WHERE tablename = 'LiteLLM_HealthCheckTable'") == "0"
    lab.timings["install+upgrade+rollback"] = time.monotonic() - start


def test_the_shipped_postgres_restore_ends_other_sessions_gives_the_dump_back_exactly_and_stops_at_an_error(
        docker_engine):
    from builder.backups.restore import _feed
    from builder.errors import BackupError

    require_tool("debootstrap")          # the base image's root filesystem (tests/apps/base.py)
    image = recipe_image(docker_engine, "postgres", say)
    bp = load_lab(REPO).services[DB]
    c = docker_engine.containers.run(image.ref, environment={**bp.env, "POSTGRES_PASSWORD": "x"}, detach=True,
                                     labels={"org.local-ai-lab.test": "apps"})

    def sql(text: str, db: str = "postgres") -> str:
        code, out = c.exec_run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", db, "-At",
                                "-c", text])
        assert code == 0, out.decode(errors="replace")
        return out.decode().strip()

    try:
        deadline = time.monotonic() + 90          # past the entrypoint's first-start server, then pg_isready
        while b"init process complete" not in c.logs() or c.exec_run(list(bp.healthcheck.test[1:]))[0] != 0:
            c.reload()
            assert c.status == "running" and time.monotonic() < deadline, c.logs(tail=20).decode(errors="replace")
            time.sleep(0.5)
        sql("CREATE TABLE t (id int)")
        sql("INSERT INTO t VALUES (1), (2)")
        sql("CREATE DATABASE other")
        sql("CREATE ROLE reader LOGIN PASSWORD 'r'")
        sql("CREATE TABLE o (line text); INSERT INTO o VALUES ('CREATE ROLE postgres;')", db="other")
        code, (dump, err) = c.exec_run(list(bp.backup.dump), demux=True)
        assert code == 0, err
        assert b"\nCREATE ROLE postgres;\n" in dump and b"\nDROP ROLE IF EXISTS postgres;\n" in dump

        sql("INSERT INTO t VALUES (3); CREATE TABLE newer (a int)")
        for db in ("postgres", "other"):           # someone's sessions, left open
            c.exec_run(["psql", "-X", "-U", "postgres", "-d", db, "-c", "SELECT pg_sleep(120)"], detach=True)
        deadline = time.monotonic() + 20
        while sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'") != "2":
            assert time.monotonic() < deadline, "the sessions never started"
            time.sleep(0.2)

        _feed(docker_engine, c, DB, bp.backup.restore, io.BytesIO(dump), 60, say)
        assert sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "1,2"
        assert sql("SELECT count(*) FROM pg_tables WHERE tablename = 'newer'") == "0"
        assert sql("SELECT line FROM o", db="other") == "CREATE ROLE postgres;"
        assert sql("SELECT rolname FROM pg_roles WHERE rolname = 'reader'") == "reader"
        assert sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%'") == "0"

        sql("INSERT INTO t VALUES (4)")
        with pytest.raises(BackupError, match=r"restore command exited 3: .*no_such_function"):
            _feed(docker_engine, c, DB, bp.backup.restore, io.BytesIO(dump + b"SELECT no_such_function();\n"), 60, say)
        assert sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "1,2"   # all before the error went in
    finally:
        c.remove(force=True)
