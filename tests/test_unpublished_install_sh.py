"""install.sh keeps a provisioned service unpublished exactly as `labbuild install` does (issue 23: no
window for a first visitor): the same services (builder/install/unpublished.py pending_claims, from the
same DIR/audit.log), the same DIR/unpublished.yaml and DIR/compose.yaml bytes, and `--claimed SERVICE`
records what labbuild's reader then counts as claimed — under dash and busybox sh. The unpublished
block of install.sh runs on its own here; the mechanism on the real engine: tests/e2e/test_unpublished_until_claimed.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_install_sh import SCRIPT, SHELLS, awk_program

from builder.format.manifest import Manifest, ManifestProvision
from builder.host.auditlog import record
from builder.host.compose import render_unpublished, render_wrapper, wrapper_unpublished
from builder.install.provision import provisioned_before
from builder.install.unpublished import pending_claims

BLOCK = re.search(r"\n(# unpublished: begin.*?\n)# ---------------------------------------------------------------- 4c",
                  SCRIPT, re.S).group(1)
HELPERS = "\n".join(re.search(rf"\n({name}\(\) \{{.*?\n}})\n", SCRIPT, re.S).group(1)
                    for name in ("valid", "json_str", "json_list", "audit_check", "audit_append"))
ONE_LINERS = "\n".join(re.search(rf"\n({name}\(\) \{{.*?}}\n)", SCRIPT).group(1).strip() for name in ("mget", "mlist"))


def step(host_port, container_port=3000) -> dict:
    return ManifestProvision(description="claim", method="POST", host_port=host_port, path="/setup", body="{}",
                             keys=("APP__PW",), status=(200,), container_port=container_port).to_json()


def manifest(tmp_path) -> Manifest:
    def svc(provision: list) -> dict:
        return {"image": "x/y:1", "digest": "sha256:" + "0" * 64, "verified": True, "config_digests": {},
                "ports": [], "health": None, "depends_on": [], "volumes": [], "secrets": [], "runbook": "r.md",
                **({"provision": provision} if provision else {})}
    data = {"format": 1, "lab": "lab-x", "name": "lab-x-all-1.0.0", "version": "1.0.0", "profile": "all",
            "inputs": "i", "labbuild": "t", "offline": False, "platforms": ["linux/amd64"], "files": {},
            "services": {"app": svc([step(3002)]), "dify": svc([step(8088, 80), step(8088, 80)]),
                         "door-ui": svc([step(None)]), "plain": svc([]), "old": svc([step(5678, None)])}}
    (tmp_path / "manifest.json").write_text(json.dumps(data, sort_keys=True, indent=2))
    return Manifest.loads((tmp_path / "manifest.json").read_bytes())


def run(shell, tmp_path, target, *claimed: str, gpu: str = "0"):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    flat = subprocess.run(["awk", awk_program('"$1"'), str(tmp_path / "manifest.json")], capture_output=True,
                          text=True, check=True).stdout
    (work / "manifest.flat").write_text(flat)
    prog = ('set -eu\ndie() { printf "error: %s\\nhint: %s\\n" "$1" "$2" >&2; exit 1; }\n'
            'say() { printf "%s\\n" "$*" >&2; }\n'
            f"{ONE_LINERS}\n{HELPERS}\nGRAMMAR_NAME='[a-z][a-z0-9]*(-[a-z0-9]+)*'\n"
            'GPU_MARK="# labbuild: gpu=on"\nDIR="$1"\nWORK="$2"\nAUDIT="$DIR/audit.log"\nLAB=lab-x\nVERSION=1.0.0\nRELEASE=r\n'
            f'GPU={gpu}\nSERVICES="app dify door-ui old plain"\nCLAIMED="{" ".join(claimed)}"\n{BLOCK}')
    return subprocess.run([shutil.which(shell[0]), *shell[1:], "-c", prog, "sh", str(target), str(work)],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[-1])
def test_install_sh_keeps_the_same_services_unpublished_as_labbuild(shell, tmp_path):
    m = manifest(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    p = run(shell, tmp_path, target)
    assert p.returncode == 0, p.stderr
    expected = pending_claims(target, m)
    assert expected == ("app", "dify")        # not the door's (no host port) nor an old bundle's (no container port)
    assert (target / "unpublished.yaml").read_text() == render_unpublished(expected)
    assert (target / "compose.yaml").read_text() == render_wrapper("lab-x", "releases/1.0.0", False, expected)
    assert wrapper_unpublished(target) == expected
    assert "app, dify: no host port until install has claimed the admin" in p.stderr

    # labbuild claimed app before (its audit entry); the volumes of an earlier lab were deleted since an
    # older claim of dify: only app counts
    record(target, "provision", ["DIFY__PW"], ["dify"], detail="dify: done: /setup: done")
    record(target, "uninstall --volumes", [], [], detail="x")
    record(target, "provision", ["APP__PW"], ["app"], detail="app: done: /setup: done")
    record(target, "provision", ["APP__PW"], ["dify"], outcome="failed", detail="dify: failed: step 1")
    p = run(shell, tmp_path, target, gpu="1")
    assert p.returncode == 0, p.stderr
    assert pending_claims(target, m) == ("dify",)
    assert (target / "unpublished.yaml").read_text() == render_unpublished(("dify",))
    assert (target / "compose.yaml").read_text() == render_wrapper("lab-x", "releases/1.0.0", True, ("dify",))

    # the operator made dify's calls: --claimed records it, and both installers publish it from now on
    p = run(shell, tmp_path, target, "dify")
    assert p.returncode == 0, p.stderr
    assert provisioned_before(target) == {"app", "dify"} and pending_claims(target, m) == ()
    assert not (target / "unpublished.yaml").exists()
    assert (target / "compose.yaml").read_text() == render_wrapper("lab-x", "releases/1.0.0", False)
    last = json.loads((target / "audit.log").read_text().splitlines()[-1])
    assert (last["command"], last["services"], last["keys"], last["outcome"]) == ("provision", ["dify"],
                                                                                ["APP__PW"], "ok")

    for bad, words in (("plain", "has no provisioning calls"), ("Nope;rm", "not a service name")):
        p = run(shell, tmp_path, target, bad)
        assert p.returncode == 1 and words in p.stderr, p.stderr
