"""Releases (builder.bundle): contents, reproducibility, immutability, atomicity."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from builder import __version__
from builder.format.files import bundle_filename
from builder.blueprint import load_lab
from builder.bundle.release import build_release, check_version, next_version, rebuild_release
from builder.bundle.verify import safe_extract
from builder.fsutil import sha256_file as sha256_of
from builder.errors import BlueprintError, BundleError, LockError
from builder.format.record import Record
from builder.fsutil import sha256_file
from builder.lockfile import LOCK_PATH, read_lock
from builder.signing import generate_keypair
from support.race import race
from test_render import SERVICES, compose_config, digest, make_lab, promtool_check_config

REPO = Path(__file__).resolve().parents[1]
LABBUILD = str(REPO / ".venv" / "bin" / "labbuild")


def run_labbuild(*args: str, cwd: Path | None = None, env: dict | None = None, umask: str | None = None):
    cmd = [LABBUILD, *args]
    if umask:
        cmd = ["sh", "-c", f'umask {umask}; exec "$@"', "sh", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_release_writes_every_design_file_and_sha256sum_accepts_it(tmp_path):
    root = make_lab(tmp_path / "lab")
    result = build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "dist")
    assert result.bundle == tmp_path / "dist" / "testlab-full-1.0.0.tar.gz" and not result.noop
    with tarfile.open(result.bundle) as tar:
        names = tar.getnames()
        members = tar.getmembers()
    top = "testlab-full-1.0.0"
    assert names[0] == top and all(n == top or n.startswith(top + "/") for n in names)
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.mtime == 315532800 for m in members)
    rel = {n[len(top) + 1:] for n in names if n != top}
    for f in ("compose.yaml", "lab.env", "secrets.env.example", "lock.json", "manifest.json", "SHA256SUMS",
              "provenance.intoto.json", "install.sh", "runbooks/README.md", "runbooks/web.md", "config/web/web.conf",
              "observability/prometheus/prometheus.yml", "observability/prometheus/rules/lab-alerts.yml",
              "observability/grafana/dashboards/lab-overview.json"):
        assert f in rel, f
    assert not any(n.startswith("images") for n in rel)
    dest = safe_extract(result.bundle, tmp_path / "x")
    proc = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK") == len([n for n in rel if "." in n.rsplit("/", 1)[-1] or n == "SHA256SUMS"]) - 1
    assert os.access(dest / "install.sh", os.X_OK)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["name"] == top and manifest["labbuild"] == __version__
    assert manifest["offline"] is False and manifest["inputs"] == read_lock(root / LOCK_PATH).inputs
    assert set(manifest["files"]) == {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} \
        - {"manifest.json", "SHA256SUMS", "provenance.intoto.json"}
    web = manifest["services"]["web"]
    assert web["image"] == "127.0.0.1:5000/lab/web:1.0" and web["digest"] == digest("web") and web["verified"]
    assert web["config_digests"]["linux/amd64"] == digest(f"{digest('web')}linux/amd64c")
    assert web["health"]["host_port"] == 18080 and web["health"]["path"] == "/healthz"
    assert web["secrets"] == ["WEB__API_TOKEN"] and web["runbook"] == "runbooks/web.md"
    assert manifest["services"]["app"]["depends_on"] == ["db", "web"]
    assert manifest["services"]["db"]["health"] is None
    lock = json.loads((dest / "lock.json").read_text())
    assert sorted(lock["services"]) == sorted(manifest["services"])  # the closure only
    record = json.loads((root / "lockfiles/releases/full-1.0.0.json").read_text())
    assert record["sha256"] == result.sha256 and record["tar_sha256"] == result.tar_sha256
    assert record["with_images"] is False and record["labbuild"] == __version__
    assert record["lock"] == lock and record["platforms"] == ["linux/amd64", "linux/arm64"]
    secrets = {k: "x" for s in manifest["services"].values() for k in s["secrets"]}
    compose_config(dest, secrets, "bt-extracted")


def test_unverified_lock_entries_make_an_online_bundle_and_say_so(tmp_path):
    root = make_lab(tmp_path / "lab", verified=False)
    result = build_release(root, "0.1.0", out_dir=tmp_path / "dist")
    dest = safe_extract(result.bundle, tmp_path / "x")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["services"]["web"]["verified"] is False and manifest["services"]["web"]["config_digests"] == {}
    assert "pin only" in (dest / "runbooks/web.md").read_text()


def _release_in_subprocess(src: Path, root: Path, out: Path, cwd: Path, env_extra: dict, umask: str) -> bytes:
    shutil.copytree(src, root)
    cwd.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], **env_extra}
    proc = run_labbuild("--root", str(root), "release", "2.0.0", "--profile", "full", "--out", str(out),
                        cwd=cwd, env=env, umask=umask)
    assert proc.returncode == 0, proc.stderr
    return (out / "testlab-full-2.0.0.tar.gz").read_bytes()


def test_release_bytes_do_not_depend_on_time_zone_umask_locale_home_cwd_or_root(tmp_path):
    src = make_lab(tmp_path / "src")
    a = _release_in_subprocess(src, tmp_path / "one" / "lab", tmp_path / "out1", tmp_path / "cwd1",
                               {"TZ": "UTC", "LC_ALL": "C", "HOME": str(tmp_path / "h1")}, "022")
    b = _release_in_subprocess(src, tmp_path / "deeper" / "path" / "two", tmp_path / "out2", tmp_path / "c" / "w",
                               {"TZ": "Pacific/Kiritimati", "LC_ALL": "C.UTF-8", "HOME": str(tmp_path / "h2"),
                                "LANG": "de_DE.UTF-8", "USER": "nobody"}, "077")
    assert a == b
    assert a[:2] == b"\x1f\x8b" and a[4:8] == b"\0\0\0\0"  # gzip header: no mtime


def test_source_date_epoch_sets_the_member_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    result = build_release(make_lab(tmp_path / "lab"), "1.0.0", out_dir=tmp_path / "d")
    with tarfile.open(result.bundle) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    again = rebuild_release(tmp_path / "lab", "base-1.0.0", out_dir=tmp_path / "r")
    assert again.sha256 == result.sha256  # the record keeps the mtime


def test_same_version_same_content_is_a_noop_that_says_so(tmp_path):
    root = make_lab(tmp_path / "lab")
    first = run_labbuild("--root", str(root), "--json", "release", "1.0.0")
    assert first.returncode == 0, first.stderr
    bundle = Path(json.loads(first.stdout)["bundle"])
    stat = bundle.stat()
    again = run_labbuild("--root", str(root), "--json", "release", "1.0.0")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["noop"] is True and data["sha256"] == json.loads(first.stdout)["sha256"]
    assert "identical content" in again.stderr
    assert bundle.stat().st_mtime_ns == stat.st_mtime_ns  # not rewritten
    bundle.unlink()  # dist/ cleaned: the no-op restores the archive, byte for byte
    restored = build_release(root, "1.0.0")
    assert restored.noop and restored.restored and restored.sha256 == data["sha256"]


def test_same_version_different_content_is_refused_naming_the_change_and_next_version(tmp_path):
    root = make_lab(tmp_path / "lab")
    build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "d")
    build_release(root, "1.0.1", profile="full", out_dir=tmp_path / "d")
    web = root / "blueprints/services/web.toml"
    web.write_text(web.read_text().replace('PLAIN = "true"', 'PLAIN = "false"'))
    proc = run_labbuild("--root", str(root), "release", "1.0.0", "--profile", "full", "--out", str(tmp_path / "d"))
    assert proc.returncode == 1
    assert "file changed: lab.env" in proc.stderr and "already exists" in proc.stderr
    assert "labbuild release 1.0.2" in proc.stderr and "Traceback" not in proc.stderr
    # the archive of the recorded release is untouched
    assert rebuild_release(root, "full-1.0.0", out_dir=tmp_path / "r").sha256 == \
        json.loads((root / "lockfiles/releases/full-1.0.0.json").read_text())["sha256"]


def test_track_and_group_lines_leave_a_recorded_release_as_it_is_other_edits_do_not(tmp_path):
    root = make_lab(tmp_path / "lab")
    first = build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "d")
    web = root / "blueprints/services/web.toml"
    original = web.read_text()
    web.write_text(original.replace('tag = "1.0"\n', "tag = \"1.0\"\ntrack = '^1\\.(\\d+)$'  # minors only\n"
                                                     'group = "front"\n'))
    assert load_lab(root).services["web"].image.group == "front"
    again = build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "e")
    assert again.noop and again.sha256 == first.sha256 == sha256_of(again.bundle)
    web.write_text(web.read_text() + "# a comment is a change of the source the provenance names\n")
    with pytest.raises(BundleError, match="different content") as exc:
        build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "f")
    assert [p.message for p in exc.value.problems] == ["source changed: blueprints/services/web.toml"]


def test_rebuild_reproduces_a_past_release_after_the_blueprints_moved_on(tmp_path):
    root = make_lab(tmp_path / "lab")
    first = build_release(root, "1.0.0", profile="full", out_dir=tmp_path / "d")
    make_lab(root, web=SERVICES["web"].replace('tag = "1.0"', 'tag = "1.1"'))  # new pin, new lock
    assert build_release(root, "1.1.0", profile="full", out_dir=tmp_path / "d").sha256 != first.sha256
    original = first.bundle.read_bytes()
    shutil.rmtree(tmp_path / "d")
    proc = run_labbuild("--root", str(root), "--json", "release", "--rebuild", "full-1.0.0", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sha256"] == first.sha256
    assert (tmp_path / "r" / first.bundle.name).read_bytes() == original
    proc = run_labbuild("--root", str(root), "release", "--rebuild", "full-9.9.9")
    assert proc.returncode == 1 and "full-1.0.0" in proc.stderr  # names the known records


def test_rebuild_refuses_a_tampered_record(tmp_path):
    root = make_lab(tmp_path / "lab")
    build_release(root, "1.0.0", out_dir=tmp_path / "d")
    rpath = root / "lockfiles/releases/base-1.0.0.json"
    record = json.loads(rpath.read_text())
    record["sources"]["blueprints/services/web.toml"] = record["sources"]["blueprints/services/web.toml"].replace(
        "18080", "18081")
    rpath.write_text(json.dumps(record))
    with pytest.raises(BundleError) as err:
        rebuild_release(root, "base-1.0.0", out_dir=tmp_path / "r")
    assert "cannot be reproduced" in err.value.message
    assert any("compose.yaml" in p.message for p in err.value.problems)
    assert not (tmp_path / "r" / "testlab-base-1.0.0.tar.gz").exists()


def test_stale_lock_bad_version_and_unknown_profile_are_refused_with_the_fix(tmp_path):
    root = make_lab(tmp_path / "lab")
    web = root / "blueprints/services/web.toml"
    web.write_text(web.read_text().replace(digest("web"), digest("web2")))
    proc = run_labbuild("--root", str(root), "release", "1.0.0")
    assert proc.returncode == 1 and "labbuild lock" in proc.stderr and "web" in proc.stderr
    assert not (root / "dist").exists()
    make_lab(root)
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-", "latest"):
        with pytest.raises(BundleError, match="SemVer"):
            build_release(root, bad)
    with pytest.raises(BlueprintError, match="unknown profile"):
        build_release(root, "1.0.0", profile="nope")
    (root / LOCK_PATH).unlink()
    with pytest.raises(LockError, match="no lockfile"):
        build_release(root, "1.0.0")


def test_versions_and_names():
    for good in ("0.1.0", "1.2.3-rc.1", "1.0.0+build.5", "10.20.30-alpha.beta"):
        assert check_version(good) == good
    assert next_version("0.1.0") == "0.1.1"
    assert next_version("0.1.0", ["0.1.0", "0.1.4"]) == "0.1.5"
    assert next_version("0.1.0", ["0.1.4", "0.2.0-rc.1"]) == "0.2.0-rc.2"
    assert next_version("1.0.0-rc.1") == "1.0.0-rc.2"
    assert bundle_filename("lab", "phase1", "1.0.0", False) == "lab-phase1-1.0.0.tar.gz"
    assert bundle_filename("lab", "phase1", "1.0.0", True) == "lab-phase1-1.0.0.tar"


INTERRUPT = textwrap.dedent('''
    import os, sys, time
    import builder.bundle.pack as pack
    import builder.bundle.release as release
    real = pack.write_tar
    def slow(out, top, files, **kw):
        out.write(b"x" * 65536)
        out.flush()
        open(sys.argv[3], "w").close()
        time.sleep(60)
    pack.write_tar = slow
    release.build_release(sys.argv[1], "1.0.0", out_dir=sys.argv[2])
''')


def test_interrupted_release_leaves_nothing_at_the_final_path_and_the_next_run_succeeds(tmp_path):
    root = make_lab(tmp_path / "lab")
    out, ready = tmp_path / "dist", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPT, str(root), str(out), str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "release never started writing"
            time.sleep(0.02)
        assert any(out.iterdir())  # the partial temp file exists now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    final = out / "testlab-base-1.0.0.tar.gz"
    assert not final.exists()
    assert not (root / "lockfiles/releases/base-1.0.0.json").exists()
    result = build_release(root, "1.0.0", out_dir=out)
    assert final.exists() and not result.noop
    assert run_labbuild("verify", str(final)).returncode == 0


@pytest.mark.parametrize("signing", [("signed", "unsigned"), ("unsigned", "unsigned")], ids=["differ", "identical"])
def test_two_releases_of_one_version_at_once_make_one_bundle_and_one_record(tmp_path, signing):
    """The first is paused while it writes its archive; the second starts then. Exactly one
    creates the release; the other finds its record: identical, nothing to do; else refused."""
    root, out = make_lab(tmp_path / "lab"), tmp_path / "dist"
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    args = [["--root", str(root), "release", "1.0.0", "--out", str(out)]
            + (["--sign", str(tmp_path / "k.key")] if s == "signed" else []) for s in signing]
    results = race(*args, seam="builder.bundle.pack:write_tar", tmp=tmp_path)
    assert [r[0] == 0 and "released " in r[1] for r in results] == [True, False], results
    code, stdout, stderr = results[1]
    if signing[0] == signing[1]:
        assert code == 0 and "already recorded with identical content" in stdout, results[1]
    else:
        assert code == 1 and "already exists" in stderr and "signature: recorded" in stderr, results[1]
        assert "Traceback" not in stderr
    record = Record.read(root / "lockfiles/releases/base-1.0.0.json")
    assert sorted(p.name for p in out.iterdir()) == ["testlab-base-1.0.0.tar.gz"]
    assert sha256_file(out / "testlab-base-1.0.0.tar.gz") == record.sha256
    assert (record.signed_by is not None) == (signing[0] == "signed")
    assert [p.name for p in (root / "lockfiles/releases").iterdir()] == ["base-1.0.0.json"]  # no lock file left


def test_read_only_records_still_say_identical_and_refuse_the_rest(tmp_path, monkeypatch):
    import builder.bundle.record as record_module
    root = make_lab(tmp_path / "lab")
    first = build_release(root, "1.0.0", out_dir=tmp_path / "d")
    real_open = os.open

    def read_only(path, *args, **kw):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(record_module.os, "open", read_only)
    again = build_release(root, "1.0.0", out_dir=tmp_path / "d")
    assert again.noop and again.sha256 == first.sha256
    with pytest.raises(BundleError, match="cannot open"):    # a new release needs the lock
        build_release(root, "1.0.1", out_dir=tmp_path / "d")


def test_with_images_problems_are_errors_not_tracebacks(tmp_path):
    root = make_lab(tmp_path / "lab", verified=False)
    proc = run_labbuild("--root", str(root), "release", "1.0.0", "--with-images", "--platform", "linux/s390x")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "linux/s390x" in proc.stderr


def test_release_with_images_from_a_real_registry_is_offline_verified_and_reproducible(tmp_path, registry):
    from support.oci import busybox_httpd_image, make_index, push_index
    index = make_index([busybox_httpd_image(8080, platform=p) for p in ("linux/amd64", "linux/arm64")])
    with registry.client() as client:
        pushed = push_index(client, "lab/web", "1.0", index)
    root = tmp_path / "lab"
    (root / "blueprints" / "services").mkdir(parents=True)
    (root / "blueprints" / "lab.toml").write_text(textwrap.dedent(f'''
        [lab]
        name = "imglab"
        default_profile = "base"
        insecure_registries = ["{registry.host}"]
        [profiles.base]
        services = ["web"]
    '''))
    (root / "blueprints" / "services" / "web.toml").write_text(textwrap.dedent(f'''
        [service]
        name = "web"
        description = "busybox httpd"
        phase = 0
        category = "app"
        [image]
        name = "{registry.host}/lab/web"
        tag = "1.0"
        digest = "{pushed}"
        [[ports]]
        name = "http"
        container = 8080
        host = 18090
    '''))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([LABBUILD, "--root", str(root), "lock"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([LABBUILD, "--root", str(root), "--json", "release", "1.0.0", "--with-images",
                           "--out", str(tmp_path / "d")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    bundle = Path(json.loads(proc.stdout)["bundle"])
    assert bundle.name == "imglab-base-1.0.0.tar" and bundle.read_bytes()[257:262] == b"ustar"
    with tarfile.open(bundle) as tar:           # blobs lead (written while they download), then the rest
        order = [m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name]
    blobs = [i for i, n in enumerate(order) if n.startswith("images/blobs/sha256/")]
    assert blobs == list(range(3, 3 + len(blobs))) and order[:3] == ["images", "images/blobs", "images/blobs/sha256"]
    dest = safe_extract(bundle, tmp_path / "x")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["offline"] is True
    assert (dest / "images" / "oci-layout").is_file() and (dest / "images" / "index.json").is_file()
    for img in index.images:
        for blob in img.blobs():
            assert f"images/blobs/sha256/{blob.digest.split(':')[1]}" in manifest["files"]
    web = compose_config(dest, {}, "bt-images")["services"]["web"]
    assert web["image"] == f"{registry.host}/lab/web:1.0" and web["pull_policy"] == "never"
    record = json.loads((root / "lockfiles/releases/base-1.0.0.json").read_text())
    assert record["with_images"] is True
    registry.stop()  # a rebuild needs nothing from the network once the blobs are cached
    proc = subprocess.run([LABBUILD, "--root", str(root), "release", "--rebuild", "base-1.0.0",
                           "--out", str(tmp_path / "r")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / bundle.name).read_bytes() == bundle.read_bytes()


def test_every_profile_of_the_shipped_lab_releases_offline_and_real_tools_accept_it(lab_copy, tmp_path):
    """The project's main job, on a copy of the shipped catalog (no network: an
    unverified lock is made with `lock --offline` when none is committed yet)."""
    import tomllib
    if not (lab_copy / LOCK_PATH).exists():
        proc = run_labbuild("--root", str(lab_copy), "lock", "--offline")
        assert proc.returncode == 0, proc.stderr
    profiles = tomllib.loads((lab_copy / "blueprints/lab.toml").read_text())["profiles"]
    promtool = shutil.which("promtool")
    for profile in sorted(profiles):
        # a version no release record holds: this checks the catalog, not a recorded release
        result = build_release(lab_copy, "0.0.1-check", profile=profile, out_dir=tmp_path / "dist")
        dest = safe_extract(result.bundle, tmp_path / "x" / profile)
        manifest = json.loads((dest / "manifest.json").read_text())
        secrets = {k: "fake" for s in manifest["services"].values() for k in s["secrets"]}
        compose_config(dest, secrets, f"shipped-{profile}")
        if promtool:
            proc = promtool_check_config(promtool, dest / "observability/prometheus")
            assert proc.returncode == 0, proc.stdout + proc.stderr
        for page in (dest / "observability/grafana/dashboards").glob("*.json"):
            doc = json.loads(page.read_text())
            assert doc["title"] and doc["uid"] and doc["panels"]
        assert set(manifest["services"]) == {p.stem for p in (dest / "runbooks").glob("*.md")} - {"README"}
        # the offline variant (image: name:tag, pull_policy: never) of the same profile
        from builder.blueprint import load_lab
        from builder.render import ReleaseInput, render_text_files
        ri = ReleaseInput(lab=load_lab(lab_copy), lock=read_lock(lab_copy / LOCK_PATH), profile=profile,
                          version="0.1.0", labbuild_version=__version__, offline=True)
        offline = tmp_path / "offline" / profile
        for name, text in render_text_files(ri).items():
            (offline / name).parent.mkdir(parents=True, exist_ok=True)
            (offline / name).write_text(text)
        services = compose_config(offline, secrets, f"shipped-off-{profile}")["services"]
        assert all(s["pull_policy"] == "never" and "@" not in s["image"] for s in services.values())


def test_reuse_from_asks_for_images_on_the_command_line_and_its_env_setting_leaves_other_releases_alone(tmp_path):
    root = make_lab(tmp_path / "lab")
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    refused = run_labbuild("--root", str(root), "release", "1.0.0", "--reuse-from", str(shelf))
    assert refused.returncode == 2 and "--reuse-from reuses image blobs: add --with-images" in refused.stderr
    env = {**os.environ, "LABBUILD_REUSE_FROM": str(shelf)}
    done = run_labbuild("--root", str(root), "release", "1.0.0", "--out", str(tmp_path / "dist"), env=env)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "dist").iterdir()] == [f"testlab-{load_lab(root).default_profile}-1.0.0.tar.gz"]


def test_a_bundle_naming_a_blob_by_another_digest_fails_verify_and_is_not_reused(tmp_path, monkeypatch):
    """A bundle whose maker put other bytes under a blob's name, with SHA256SUMS and manifest.json
    agreeing with those bytes: `labbuild verify` (without --key nothing else would notice) names the
    blob and fails, and reuse (release --reuse-from, which takes a blob by its name) refuses the
    bundle. The same bundle with the right bytes under that name verifies and is noted."""
    from builder.bundle.archive import BundleFile
    from builder.bundle.located import locate
    from builder.bundle.pack import plan_bundle, write_archive
    from builder.bundle.reuse import index_directories
    from builder.bundle.verify import verify_bundle
    from builder.render import ReleaseInput

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = make_lab(tmp_path / "lab")
    lab = load_lab(root)
    ri = ReleaseInput(lab=lab, lock=read_lock(root / LOCK_PATH), profile=lab.default_profile, version="1.0.0",
                      labbuild_version=__version__, offline=True)
    blob = b"the bytes of a layer\n"
    right = hashlib.sha256(blob).hexdigest()
    wrong = hashlib.sha256(b"another layer\n").hexdigest()
    for name, where in ((wrong, "bad"), (right, "good")):
        plan = plan_bundle(ri, platforms=("linux/amd64",),
                           image_members=[BundleFile(f"images/blobs/sha256/{name}", data=blob)])
        (tmp_path / where).mkdir()
        write_archive(plan, tmp_path / where / plan.filename, mtime=315532800)
    bad = tmp_path / "bad" / plan.filename
    result = verify_bundle(bad)
    assert not result.ok and [(e.file, e.message) for e in result.errors] == [
        (f"images/blobs/sha256/{wrong}", f"its bytes hash to sha256:{right}, not to the digest its name says")]
    assert verify_bundle(tmp_path / "good" / plan.filename).ok
    cli = run_labbuild("verify", str(bad))
    assert cli.returncode == 1 and f"sha256/{wrong}" in cli.stdout + cli.stderr and "Traceback" not in cli.stderr
    count, warnings = index_directories([tmp_path / "bad"], progress=False)
    assert count == 0 and len(warnings) == 1 and f"images/blobs/sha256/{wrong}: its bytes hash to sha256:{right}" \
        in warnings[0] and str(tmp_path / "bad") in warnings[0], warnings
    assert locate(["sha256:" + wrong]) == {}
    assert index_directories([tmp_path / "good"], progress=False) == (1, [])
    (where,) = locate(["sha256:" + right]).values()
    with open(where.path, "rb") as fh:
        fh.seek(where.offset)
        assert fh.read(where.size) == blob
