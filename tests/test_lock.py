"""`labbuild lock` on a temporary lab whose images live in a real registry,
reached through the fault proxy (which also counts requests)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.blueprint import Image, load_lab
from builder.cli import main
from builder.lock import diff_locks, plan_lock, rewrite_digest, unverified_record
from builder.lockfile import Lock, inputs_hash, read_lock
from support import oci
from support.dockerenv import require_tool
from support.faultproxy import FaultProxy
from support.registry import free_port, start_registry

REPO = Path(__file__).resolve().parents[1]
MISSING = "sha256:" + "e" * 64


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A registry with a Docker schema2 image, an OCI image, an OCI index (3 platforms), and a v2 of one."""
    require_tool("docker-registry")
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    ns = SimpleNamespace(
        reg=reg,
        docker=oci.make_image([{"a": b"docker"}, {"b": b"second"}], docker=True, platform="linux/amd64"),
        oci=oci.make_image([{"a": b"oci"}], platform="linux/arm64"),
        index=oci.make_index([oci.make_image([{"p": p.encode()}], platform=p)
                              for p in ("linux/amd64", "linux/arm64", "linux/arm/v7")]),
        docker_v2=oci.make_image([{"a": b"docker"}, {"b": b"changed"}], docker=True, platform="linux/amd64"),
    )
    with reg.client() as c:
        oci.push_image(c, "lab/web", "v1", ns.docker)
        oci.push_image(c, "lab/web", "v2", ns.docker_v2)
        oci.push_image(c, "lab/db", "v1", ns.oci)
        oci.push_index(c, "lab/multi", "v1", ns.index)
    yield ns
    reg.stop()


@pytest.fixture
def proxy(images):
    p = FaultProxy(images.reg.host)
    yield p
    p.close()


def blueprint(name: str, image: str, tag: str, digest: str) -> str:
    return (f'# {name}: a test service\n[service]\nname = "{name}"\ndescription = "test {name}"\n'
            f'phase = 0\ncategory = "app"\n\n[image]\nname = "{image}"  # where it lives\n'
            f'tag = "{tag}"\n# the pin, moved by `labbuild lock --update`\n'
            f'digest = "{digest}"    # keep me\n\n[env]\nMODE = "test"\n')


def make_lab(root: Path, services: dict[str, tuple[str, str, str]], platforms: list[str] | None = None) -> Path:
    (root / "blueprints" / "services").mkdir(parents=True, exist_ok=True)
    plat = f"platforms = {json.dumps(platforms)}\n" if platforms else ""
    (root / "blueprints" / "lab.toml").write_text(
        f'[lab]\nname = "test-lab"\ndefault_profile = "all"\n{plat}\n'
        f'[profiles.all]\nservices = {json.dumps(sorted(services))}\n')
    for name, (image, tag, digest) in services.items():
        (root / "blueprints" / "services" / f"{name}.toml").write_text(blueprint(name, image, tag, digest))
    return root


@pytest.fixture
def lab(tmp_path, images, proxy):
    """A lab of three services pinned to the proxy's address."""
    h = proxy.host
    return make_lab(tmp_path / "lab", {
        "web": (f"{h}/lab/web", "v1", images.docker.digest),
        "db": (f"{h}/lab/db", "v1", images.oci.digest),
        "multi": (f"{h}/lab/multi", "v1", images.index.digest),
    })


def run(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--root", str(root), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def lock_json(root: Path) -> dict:
    return json.loads((root / "lockfiles" / "lab.lock.json").read_text())


def skopeo_raw(ref: str) -> bytes:
    require_tool("skopeo")
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          check=True, capture_output=True, timeout=60).stdout


# --------------------------------------------------------------------------- resolving

def test_lock_records_the_closure_of_each_manifest_kind(lab, images, proxy, capsys):
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 0, err
    for name in ("web", "db", "multi"):
        assert f"Updated '{name}': (none) -> " in err
    data = lock_json(lab)
    assert data["platforms"] == ["linux/amd64", "linux/arm64"]
    assert data["inputs"] == inputs_hash(load_lab(lab))
    web, db, multi = (data["services"][n] for n in ("web", "db", "multi"))

    # single-platform images: recorded for their own platform, read from the config
    assert list(web["platforms"]) == ["linux/amd64"] and list(db["platforms"]) == ["linux/arm64"]
    rec = web["platforms"]["linux/amd64"]
    assert web["verified"] and web["media_type"] == oci.DOCKER_MANIFEST
    assert rec["manifest"] == images.docker.digest == web["digest"]
    assert rec["config"] == images.docker.image_id
    assert [(l["digest"], l["size"], l["media_type"]) for l in rec["layers"]] == \
        [(b.digest, b.size, oci.DOCKER_LAYER) for b in images.docker.layers]
    assert rec["size"] == images.docker.manifest.size + images.docker.config.size + \
        sum(b.size for b in images.docker.layers)

    # the index: only the lab's platforms, each child cross-checked with skopeo
    assert multi["media_type"] == oci.OCI_INDEX and sorted(multi["platforms"]) == ["linux/amd64", "linux/arm64"]
    index = json.loads(skopeo_raw(f"{images.reg.host}/lab/multi@{images.index.digest}"))
    children = {e["platform"]["architecture"]: e["digest"] for e in index["manifests"]}
    for plat, arch in (("linux/amd64", "amd64"), ("linux/arm64", "arm64")):
        child = multi["platforms"][plat]
        raw = skopeo_raw(f"{images.reg.host}/lab/multi@{children[arch]}")
        assert child["manifest"] == children[arch] == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert child["config"] == json.loads(raw)["config"]["digest"]
    assert (lab / "lockfiles" / "lab.lock.json").read_text() == read_lock(lab / "lockfiles" / "lab.lock.json").dumps()


def test_noop_lock_makes_zero_requests_and_leaves_the_file(lab, proxy, capsys):
    assert run(lab, "lock", capsys=capsys)[0] == 0
    path = lab / "lockfiles" / "lab.lock.json"
    before, stamp, requests = path.read_bytes(), path.stat().st_mtime_ns, proxy.count()
    assert requests > 0
    time.sleep(0.01)
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 0 and "is up to date" in err and "Updated" not in err
    assert proxy.count() == requests
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stamp


def test_a_changed_pin_updates_only_its_entry(lab, images, proxy, capsys):
    assert run(lab, "lock", capsys=capsys)[0] == 0
    old = lock_json(lab)
    bp = lab / "blueprints" / "services" / "web.toml"
    bp.write_text(bp.read_text().replace(images.docker.digest, images.docker_v2.digest))
    requests = proxy.count()
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 0
    assert f"Updated 'web': {proxy.host}/lab/web:v1@{images.docker.digest[:19]} -> " \
           f"{proxy.host}/lab/web:v1@{images.docker_v2.digest[:19]}" in err
    assert "'db'" not in err and "'multi'" not in err
    assert {p for _, p in proxy.requests[requests:]} == {
        f"/v2/lab/web/manifests/{images.docker_v2.digest}", f"/v2/lab/web/blobs/{images.docker_v2.config.digest}"}
    new = lock_json(lab)
    assert new["services"]["db"] == old["services"]["db"] and new["services"]["multi"] == old["services"]["multi"]
    assert new["services"]["web"]["platforms"]["linux/amd64"]["config"] == images.docker_v2.image_id


def test_json_output_names_lockfile_and_services(lab, capsys):
    code = main(["--root", str(lab), "--json", "lock"])
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["lockfile"] == "lockfiles/lab.lock.json"
    assert set(data["services"]) == {"web", "db", "multi"}
    assert data["services"]["multi"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert data["services"]["web"]["status"] == "added" and data["services"]["web"]["verified"] is True


# --------------------------------------------------------------------------- failures

def test_missing_pin_names_service_registry_and_digest_and_keeps_the_lock(lab, proxy, capsys):
    assert run(lab, "lock", capsys=capsys)[0] == 0
    path = lab / "lockfiles" / "lab.lock.json"
    before = path.read_bytes()
    bp = lab / "blueprints" / "services" / "db.toml"
    bp.write_text(bp.read_text().replace(lock_json(lab)["services"]["db"]["digest"], MISSING))
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 1
    assert "blueprints/services/db.toml:12: image.digest: service 'db'" in err
    assert proxy.host in err and MISSING in err and "not found" in err
    assert "the lockfile was not changed" in err
    assert path.read_bytes() == before
    assert run(lab, "lock", "--check", capsys=capsys)[0] == 1


def test_altered_bytes_fail_the_lock_and_write_nothing(lab, proxy, capsys):
    proxy.add("alter", "/lab/multi/manifests/", times=100)
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 1 and "hash to" in err and "service 'multi'" in err
    assert not (lab / "lockfiles" / "lab.lock.json").exists()
    assert not list(lab.glob("lockfiles/*"))    # no temp file left behind either
    assert proxy.count("GET", "/lab/multi/manifests/") == 1   # refused, never retried


@pytest.mark.parametrize("fault", [dict(kind="status", code=500), dict(kind="status", code=429, retry_after="0"),
                                   dict(kind="reset"), dict(kind="truncate"), dict(kind="delay", seconds=0.3)])
def test_transient_faults_during_lock_are_retried(lab, images, proxy, fault, capsys):
    proxy.add(path="/lab/", times=2, **fault)
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 0, err
    assert lock_json(lab)["services"]["multi"]["digest"] == images.index.digest


def test_unreachable_registry_fails_clearly_within_60s(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    root = make_lab(tmp_path / "lab", {"gone": (f"{dead}/lab/gone", "v1", MISSING)})
    start = time.monotonic()
    proc = subprocess.run([str(Path(sys.executable).parent / "labbuild"), "--root", str(root), "lock"],
                          capture_output=True, text=True, timeout=90, cwd=REPO)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1 and elapsed < 60
    assert "Traceback" not in proc.stderr
    assert "unreachable" in proc.stderr and dead in proc.stderr and "service 'gone'" in proc.stderr
    assert not (root / "lockfiles" / "lab.lock.json").exists()


def test_index_without_the_labs_platforms_is_an_error(tmp_path, images, proxy, capsys):
    root = make_lab(tmp_path / "lab", {"multi": (f"{proxy.host}/lab/multi", "v1", images.index.digest)},
                    platforms=["linux/s390x"])
    code, _, err = run(root, "lock", capsys=capsys)
    assert code == 1 and "none of the lab's platforms linux/s390x" in err and "linux/arm/v7" in err


# --------------------------------------------------------------------------- --check, --update, --offline

def test_check_is_offline_and_reports_fresh_stale_and_missing(lab, images, proxy, capsys):
    code, _, err = run(lab, "lock", "--check", capsys=capsys)
    assert code == 1 and "missing" in err and "labbuild lock" in err
    assert run(lab, "lock", capsys=capsys)[0] == 0
    requests = proxy.count()
    code, _, err = run(lab, "lock", "--check", capsys=capsys)
    assert code == 0 and "up to date" in err
    bp = lab / "blueprints" / "services" / "web.toml"
    bp.write_text(bp.read_text().replace(images.docker.digest, images.docker_v2.digest))
    code = main(["--root", str(lab), "--json", "lock", "--check"])
    data = json.loads(capsys.readouterr()[0])
    assert code == 1 and data["ok"] is False and list(data["services"]) == ["web"]
    assert "labbuild lock" in data["hint"]
    code, _, err = run(lab, "lock", "--check", capsys=capsys)
    assert code == 1 and "stale: 'web'" in err and "run `labbuild lock`" in err
    assert proxy.count() == requests


def test_update_moves_the_pin_rewriting_only_the_digest_line(lab, images, proxy, capsys):
    assert run(lab, "lock", capsys=capsys)[0] == 0
    bp = lab / "blueprints" / "services" / "web.toml"
    before = bp.read_text()
    with images.reg.client() as c:     # the tag moves upstream
        oci.push_manifest(c, "lab/web", "v1", images.docker_v2.manifest)
    try:
        code, _, err = run(lab, "lock", "--update", "web", capsys=capsys)
    finally:
        with images.reg.client() as c:
            oci.push_manifest(c, "lab/web", "v1", images.docker.manifest)
    assert code == 0, err
    after = bp.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [(f'digest = "{images.docker.digest}"    # keep me',
                        f'digest = "{images.docker_v2.digest}"    # keep me')]
    assert len(before.splitlines()) == len(after.splitlines())
    assert "Updated 'web'" in err and "Moved pin of 'web'" in err
    assert lock_json(lab)["services"]["web"]["digest"] == images.docker_v2.digest
    assert run(lab, "lock", "--check", capsys=capsys)[0] == 0


def test_update_of_an_unknown_service_is_refused(lab, capsys):
    code, _, err = run(lab, "lock", "--update", "nope", capsys=capsys)
    assert code == 1 and "unknown service(s) nope" in err


def test_offline_records_pins_unverified_without_network(tmp_path, capsys):
    dead = f"127.0.0.1:{free_port()}"
    root = make_lab(tmp_path / "lab", {"aa": (f"{dead}/x/a", "1.0", "sha256:" + "a" * 64),
                                       "bb": ("docker.io/x/b", "2.0", "sha256:" + "b" * 64)})
    start = time.monotonic()
    code, _, err = run(root, "lock", "--offline", capsys=capsys)
    assert code == 0 and time.monotonic() - start < 5, err
    assert "(unverified)" in err
    data = lock_json(root)
    assert data["services"]["bb"] == {"reference": "docker.io/x/b:2.0", "digest": "sha256:" + "b" * 64,
                                     "media_type": None, "verified": False, "platforms": {}, "size": 0}
    assert run(root, "lock", "--check", capsys=capsys)[0] == 0
    stamp = (root / "lockfiles" / "lab.lock.json").stat().st_mtime_ns
    code, _, err = run(root, "lock", "--offline", capsys=capsys)
    assert code == 0 and "up to date" in err
    assert (root / "lockfiles" / "lab.lock.json").stat().st_mtime_ns == stamp


def test_online_lock_verifies_entries_recorded_offline(lab, images, proxy, capsys):
    assert run(lab, "lock", "--offline", capsys=capsys)[0] == 0
    assert proxy.count() == 0
    code, _, err = run(lab, "lock", capsys=capsys)
    assert code == 0 and "(unverified) -> " in err
    assert all(s["verified"] for s in lock_json(lab)["services"].values())


def test_usage_errors_exit_2(lab, capsys):
    assert main(["--root", str(lab), "lock", "--check", "--offline"]) == 2
    assert main(["--root", str(lab), "lock", "web"]) == 2


# --------------------------------------------------------------------------- pure core

def test_plan_lock_resolves_only_new_changed_or_unverified_entries(lab, images):
    model = load_lab(lab)
    assert plan_lock(model, None) == ["db", "multi", "web"]
    recs = {n: unverified_record(bp.image) for n, bp in model.services.items()}
    offline = Lock(lab=model.name, inputs=inputs_hash(model), platforms=model.platforms, services=recs)
    assert plan_lock(model, offline, offline=True) == []
    assert plan_lock(model, offline) == ["db", "multi", "web"]
    verified = Lock(lab=model.name, inputs=inputs_hash(model), platforms=model.platforms,
                    services={n: r.__class__(**{**r.__dict__, "verified": True}) for n, r in recs.items()})
    assert plan_lock(model, verified) == []
    assert plan_lock(model, verified, refresh=True) == ["db", "multi", "web"]
    fewer = Lock(lab=model.name, inputs="x", platforms=("linux/amd64",), services=verified.services)
    assert plan_lock(model, fewer) == ["db", "multi", "web"]
    moved = dict(verified.services)
    moved["web"] = unverified_record(Image(model.services["web"].image.name, "v1", images.docker_v2.digest))
    assert plan_lock(model, Lock(model.name, "x", model.platforms, moved)) == ["web"]
    assert [c.service for c in diff_locks(verified, Lock(model.name, "x", model.platforms, moved))] == ["web"]


def test_rewrite_digest_keeps_every_other_byte():
    text = blueprint("svc", "127.0.0.1:5000/a/b", "v1", "sha256:" + "1" * 64).replace("\n[env]", "\n\n[env]")
    out = rewrite_digest(text, "sha256:" + "2" * 64)
    assert out == text.replace("1" * 64, "2" * 64)
    literal = text.replace(f'"sha256:{"1" * 64}"', f"'sha256:{'1' * 64}'")
    assert rewrite_digest(literal, "sha256:" + "3" * 64) == literal.replace("1" * 64, "3" * 64)


def test_update_changes_no_file_when_the_new_pin_fails_to_resolve(lab, images, proxy, capsys):
    assert run(lab, "lock", capsys=capsys)[0] == 0
    bp = lab / "blueprints" / "services" / "web.toml"
    before_bp, before_lock = bp.read_bytes(), (lab / "lockfiles" / "lab.lock.json").read_bytes()
    proxy.add("alter", f"/lab/web/manifests/{images.docker_v2.digest}", times=100)
    with images.reg.client() as c:
        oci.push_manifest(c, "lab/web", "v1", images.docker_v2.manifest)
    try:
        code, _, err = run(lab, "lock", "--update", capsys=capsys)
    finally:
        with images.reg.client() as c:
            oci.push_manifest(c, "lab/web", "v1", images.docker.manifest)
    assert code == 1 and "service 'web'" in err and "hash to" in err
    assert bp.read_bytes() == before_bp
    assert (lab / "lockfiles" / "lab.lock.json").read_bytes() == before_lock


def test_json_failure_is_one_object_naming_the_failed_services(lab, proxy, capsys):
    proxy.add("status", "/lab/db/", code=404, times=100)
    code = main(["--root", str(lab), "--json", "lock"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["lockfile"] == "lockfiles/lab.lock.json"
    assert list(data["services"]) == ["db"] and "not found" in data["services"]["db"]
    assert data["errors"][0]["file"] == "blueprints/services/db.toml" and "Traceback" not in err


def _non_loopback_address() -> str | None:
    """An IPv4 address of this host outside 127.0.0.0/8, when it has one."""
    import ipaddress
    import socket
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for addr in out:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        if ip.version == 4 and not ip.is_loopback:
            with socket.socket() as s:
                try:
                    s.bind((addr, 0))
                    return addr
                except OSError:
                    continue
    return None


def test_plain_http_to_a_non_loopback_registry_needs_insecure_registry(tmp_path, images, capsys):
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    remote = FaultProxy(images.reg.host, bind=addr)
    try:
        root = make_lab(tmp_path / "lab", {"db": (f"{remote.host}/lab/db", "v1", images.oci.digest)})
        start = time.monotonic()
        code, _, err = run(root, "lock", capsys=capsys)
        assert code == 1 and "TLS" in err and "--insecure-registry" in err
        assert time.monotonic() - start < 5       # a TLS failure is not retried
        code, _, err = run(root, "lock", "--insecure-registry", remote.host, capsys=capsys)
        assert code == 0, err
        assert lock_json(root)["services"]["db"]["verified"] is True
        (root / "blueprints" / "lab.toml").write_text(
            (root / "blueprints" / "lab.toml").read_text().replace(
                'default_profile = "all"', f'default_profile = "all"\ninsecure_registries = ["{remote.host}"]'))
        code, _, err = run(root, "lock", "--refresh", capsys=capsys)
        assert code == 0, err
    finally:
        remote.close()


def test_a_hanging_registry_fails_every_service_within_the_deadline(lab, proxy):
    import functools
    from builder.errors import LockError
    from builder.lock import make_lock
    from builder.registry import RegistryClient

    proxy.add("delay", "/v2/", seconds=20, times=1000)
    factory = functools.partial(RegistryClient, timeout=0.5, deadline=2, credentials={})
    start = time.monotonic()
    with pytest.raises(LockError) as err:
        make_lock(lab, client_factory=factory)
    assert time.monotonic() - start < 6
    assert sorted(err.value.services) == ["db", "multi", "web"]
    assert all("unreachable" in m for m in err.value.services.values())
    assert not (lab / "lockfiles" / "lab.lock.json").exists()
