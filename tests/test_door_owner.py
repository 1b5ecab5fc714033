"""Who owns the front door's user file (issue 23): the operator who installed, not the provider.

Authelia's official entrypoint (authelia/authelia entrypoint.sh at v4.39.15) runs, when the
container starts as uid 0 with the default command, ``chown -R "${PUID}:${PGID}" /config``
(Dockerfile: ``ENV PUID=0 PGID=0``) before it drops to that uid. A writable host directory under
/config would become root's and a non-root operator's ``labbuild users`` would meet "Permission
denied". The release therefore mounts ``DIR/access`` read-only at ``/access``, outside /config
(``render.door.USERS_TARGET``), and nothing writable from the host under /config.

What runs here: the phase4 compose file as the real ``docker compose config`` resolves it (the
``resolved`` fixture of test_door.py); ``labbuild users`` as a real process under a non-root uid
(this uid, or uid 4242 when the tests run as root; see ``_operator_commands``) on a real install dir; and the state an earlier release left behind (DIR/access owned by root)
made with a real chown, then reported with the way out. The Authelia image itself cannot run here.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import yaml
from test_door import lab, phase4, resolved  # noqa: F401  (fixtures)
from test_users import door_install

from builder.render.door import ACCESS_DIR, USERS_TARGET

REPO = Path(__file__).resolve().parents[1]
LABBUILD = str(Path(sys.executable).with_name("labbuild"))
OPERATOR = 4242                       # a non-root uid with no entry in /etc/passwd, as a plain operator


def test_the_provider_mounts_the_users_read_only_outside_the_config_its_entrypoint_chowns(phase4, resolved) -> None:
    svc = resolved["authelia"]
    mounts = svc["volumes"]
    users = [m for m in mounts if m["target"] == USERS_TARGET]
    assert len(users) == 1 and users[0]["type"] == "bind" and users[0]["read_only"] is True, users
    assert Path(users[0]["source"]).name == "access" and ACCESS_DIR == "../../access"
    assert not (USERS_TARGET == "/config" or USERS_TARGET.startswith("/config/"))
    # nothing of the host under /config can be chowned: every mount there is a read-only bind
    under_config = [m for m in mounts if m["target"] == "/config" or m["target"].startswith("/config/")]
    assert under_config and all(m["type"] == "bind" and m.get("read_only") is True for m in under_config), under_config
    # Authelia runs as the image's default uid 0 (no PUID/PGID, no user:), which reads the operator's 0600 file
    assert "user" not in svc and not {"PUID", "PGID"} & set(svc.get("environment", {}))
    # and the configuration reads the file where it is mounted
    text = phase4["config/authelia/configuration.yml"].replace(
        '{{ secret "/config/keys/oidc-jwks.pem" | mindent 10 "|" | msquote }}', "K")
    assert yaml.safe_load(text)["authentication_backend"]["file"]["path"] == f"{USERS_TARGET}/users_database.yml"


# --------------------------------------------------------------------------- a non-root operator

MAIN = "import sys; from builder.cli import main; sys.exit(main(sys.argv[1:]))"


def _operator_commands() -> list[tuple[list[str], dict[str, str]]]:
    """Ways to start this labbuild as OPERATOR: the venv's console script; else (its interpreter may
    sit under a home directory OPERATOR cannot enter, as /root here) the system's Python of the same
    version on the venv's site-packages and this checkout: the same code and libraries."""
    ways = [([LABBUILD], {})]
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system:
        paths = f"{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}:{REPO}"
        ways.append(([system, "-c", MAIN], {"PYTHONPATH": paths, "PYTHONNOUSERSITE": "1"}))
    return ways


_DROP = {"user": OPERATOR, "group": OPERATOR, "extra_groups": []}


@pytest.fixture(scope="module")
def operator_labbuild() -> list[tuple[list[str], dict[str, str]]]:
    """How the operator runs labbuild: as this uid when not root, else as OPERATOR."""
    if os.geteuid() != 0:
        return [([LABBUILD], {})]
    why = []
    for argv, env in _operator_commands():
        try:
            probe = subprocess.run([*argv, "--version"], cwd="/", capture_output=True, text=True, timeout=60,
                                   env={**os.environ, **env}, **_DROP)
        except OSError as exc:
            why.append(f"{argv[0]}: {exc.strerror}")
            continue
        if probe.returncode == 0:
            return [(argv, env)]
        why.append(f"{argv[0]}: {probe.stderr.strip()[-200:]}")
    pytest.skip(f"uid {OPERATOR} can start no labbuild here ({'; '.join(why)}): running as root is the only option")


def _as_operator(way, *args: str) -> subprocess.CompletedProcess:
    (argv, env), = way
    drop = _DROP if os.geteuid() == 0 else {}
    return subprocess.run([*argv, *args], cwd="/", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": "/nonexistent", **env}, **drop)


@pytest.fixture
def operator_install():
    """A door install dir owned by the operator, in a directory the operator can reach."""
    top = Path(tempfile.mkdtemp(prefix="labbuild-test-owner-"))
    try:
        os.chmod(top, 0o755)
        inst = door_install(top)
        if os.geteuid() == 0:
            for path in [inst, *inst.rglob("*")]:
                os.lchown(path, OPERATOR, OPERATOR)
        yield inst
    finally:
        shutil.rmtree(top)


def test_a_non_root_operator_manages_the_users_and_keeps_owning_the_file(operator_install, operator_labbuild) -> None:
    inst, way = operator_install, operator_labbuild
    uid = os.geteuid() if os.geteuid() != 0 else OPERATOR
    proc = _as_operator(way, "users", "add", "ada", "--role", "admin", "--dir", str(inst))
    assert proc.returncode == 0, proc.stderr
    proc = _as_operator(way, "users", "add", "bo", "--role", "analyst", "--project", "default", "--dir", str(inst))
    assert proc.returncode == 0, proc.stderr
    for path, mode in ((inst / "access", 0o700), (inst / "access" / "users_database.yml", 0o600)):
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, mode), path
    proc = _as_operator(way, "--json", "users", "list", "--dir", str(inst))
    assert proc.returncode == 0, proc.stderr
    assert [u["name"] for u in json.loads(proc.stdout)["users"]] == ["ada", "bo"]


def test_a_users_dir_an_earlier_release_gave_to_root_is_reported_with_the_way_back(operator_install,
                                                                                    operator_labbuild) -> None:
    if os.geteuid() != 0:
        pytest.skip("making DIR/access root's (what an earlier release's provider did) needs root")
    inst, way = operator_install, operator_labbuild
    assert _as_operator(way, "users", "add", "ada", "--role", "admin", "--dir", str(inst)).returncode == 0
    access, users = inst / "access", inst / "access" / "users_database.yml"
    before = users.read_bytes()
    for path in (access, users):            # the state `chown -R 0:0 /config` left when the dir was mounted there
        os.chown(path, 0, 0)
    for args in (("users", "list"), ("users", "add", "bo", "--role", "user")):
        proc = _as_operator(way, *args, "--dir", str(inst))
        assert proc.returncode == 1, proc
        assert "Traceback" not in proc.stderr and "Permission denied" in proc.stderr, proc.stderr
        assert f"{access} belongs to uid 0, not to you (uid {OPERATOR})" in proc.stderr, proc.stderr
        assert f"sudo chown -R {OPERATOR}:{OPERATOR} {shlex.quote(str(access))}" in proc.stderr, proc.stderr
    assert users.read_bytes() == before
    # the hint's command (as root already, without sudo) gives it back; the operator goes on
    command = proc.stderr.split("sudo ", 1)[1].split(" (or run", 1)[0]
    subprocess.run(["sh", "-c", command], check=True)
    proc = _as_operator(way, "users", "add", "bo", "--role", "user", "--dir", str(inst))
    assert proc.returncode == 0, proc.stderr
    assert users.stat().st_uid == OPERATOR
