"""Delta bundles with the real engine, registry and compose: `release --since`, `install DELTA [--base]`.

One layer of one image (web's app layer) changes between 1.0.0 and 1.1.0; the
delta must carry exactly that layer, web's new config and manifest, and the
small files; it installs offline onto 1.0.0, is refused on a host lacking the
base (unless --base fills the gap), and names the image a base lost.
"""

from __future__ import annotations

import json
import tarfile

import pytest

from builder.format.files import IMAGE_BLOBS_PREFIX
from builder.format.manifest import Manifest
from builder.format.record import Record
from builder.cli import main
from builder.errors import InstallError
from builder.fsutil import sha256_file
from builder.install.apply import install_bundle, rollback
from builder.signing import generate_keypair

from labkit import http_get, two_service_lab
from support.race import race
from test_airgap import exec_in, running_image_ids

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _members(bundle) -> dict[str, int]:
    with tarfile.open(bundle) as tar:
        return {m.name.split("/", 1)[1]: m.size for m in tar.getmembers() if m.isfile()}


def _manifest(bundle) -> Manifest:
    with tarfile.open(bundle) as tar:
        top = tar.getmembers()[0].name
        return Manifest.loads(tar.extractfile(f"{top}/manifest.json").read())


def _two_releases(lab):
    """1.0.0 full; web changes its app layer; 1.1.0 as a delta since 1.0.0 (and the lock of 1.1.0)."""
    lab.salt = lab.name     # image IDs of this test only: what the engine holds is what the test put there
    two_service_lab(lab, multiarch_web=False)
    v1 = lab.release("1.0.0")
    lock1 = json.loads((lab.root / "lockfiles" / "lab.lock.json").read_text())
    lab.services["web"].version = "2"
    lab.push(lab.services["web"])
    lab.write()
    lab.lock()
    delta = lab.release("1.1.0", since="1.0.0")
    lock2 = json.loads((lab.root / "lockfiles" / "lab.lock.json").read_text())
    return v1, delta, lock1, lock2


def test_delta_carries_only_the_changed_layer_config_and_manifest(airgap, docker_engine, capsys):
    v1, delta, lock1, lock2 = _two_releases(airgap)
    assert delta.name == f"{airgap.name}-all-1.1.0-since-1.0.0.tar"
    old = lock1["services"]["web"]["platforms"]["linux/amd64"]
    new = lock2["services"]["web"]["platforms"]["linux/amd64"]
    changed = [l for l in new["layers"] if l["digest"] not in {x["digest"] for x in old["layers"]}]
    assert len(changed) == 1 and new["layers"][0] == old["layers"][0]   # busybox layer kept, app layer new
    want = {changed[0]["digest"]: changed[0]["size"], new["config"]: new["config_size"],
            new["manifest"]: new["manifest_size"]}
    members = _members(delta)
    blobs = {"sha256:" + n.rsplit("/", 1)[1]: s for n, s in members.items() if n.startswith(IMAGE_BLOBS_PREFIX)}
    assert blobs == want
    # size: those bytes plus the small files, within 5 % (tar headers: 512 B per member, 10 KiB blocking)
    small = sum(s for n, s in members.items() if not n.startswith(IMAGE_BLOBS_PREFIX))
    payload = sum(want.values()) + small
    overhead = 1536 * (len(members) + 20) + 10240
    assert delta.stat().st_size <= 1.05 * payload + overhead
    assert delta.stat().st_size < v1.stat().st_size / 10

    m = _manifest(delta)
    assert m.since.version == "1.0.0" and m.since.bundle == v1.name and m.name == delta.name[:-4]
    record1 = json.loads((airgap.root / "lockfiles" / "releases" / "all-1.0.0.json").read_text())
    assert m.since.manifest_sha256 == record1["manifest_sha256"]
    assert old["layers"][0]["digest"] in m.since.blobs and old["config"] not in m.since.blobs
    api = lock2["services"]["api"]["platforms"]["linux/amd64"]
    assert api["config"] in m.since.blobs
    relied = {(i.reference.rsplit(":", 1)[0].rsplit("/", 1)[1], i.whole, i.layers) for i in m.since.images}
    # web's bottom (busybox) layer chain is api's too: one base image holds every relied-on chain
    assert relied == {("api", True, len(api["layers"]))}
    # web's docker-load entry stays (its config is carried), api's leaves (nothing of it is carried)
    load = json.loads(tarfile.open(delta).extractfile(f"{m.name}/images/docker-load/linux_amd64.json").read())
    assert [e["RepoTags"] for e in load] == [[f"{airgap.image_name('web')}:2"]]

    # its own record, beside the full one; releasing again is a no-op
    assert (airgap.root / "lockfiles" / "releases" / "delta" / "all-1.1.0-since-1.0.0.json").is_file()
    again = airgap.release("1.1.0", since="1.0.0")
    assert again == delta
    # the base as a bundle file instead of its record: the very same delta (a no-op against the record)
    from builder.bundle.release import build_release
    from_file = build_release(airgap.root, "1.1.0", with_images=True, since=str(v1), out_dir=airgap.root / "dist",
                              progress=False)
    assert from_file.noop and from_file.bundle == delta and from_file.delta.carried == 3
    # a full 1.1.0 does not collide with the delta
    full = airgap.release("1.1.0")
    assert full.name == f"{airgap.name}-all-1.1.0.tar" and full.stat().st_size > delta.stat().st_size * 10
    # rebuilt from its record alone: the same bytes
    from builder.bundle.release import rebuild_release
    rebuilt = rebuild_release(airgap.root, "delta/all-1.1.0-since-1.0.0", out_dir=airgap.root / "rebuilt")
    assert rebuilt.bundle.read_bytes() == delta.read_bytes()

    capsys.readouterr()
    assert main(["verify", str(delta)]) == 0
    out = capsys.readouterr().out
    assert "delta since 1.0.0: carries 3 blob(s)" in out and "relies on" in out
    assert main(["--json", "diff", str(v1), str(delta)]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert "web" in json.dumps(diff)


def test_delta_installs_offline_onto_its_base_and_rolls_back(airgap, docker_engine, tmp_path, capsys):
    v1, delta, lock1, lock2 = _two_releases(airgap)
    airgap.offline(docker_engine)
    target = tmp_path / "inst"
    r1 = install_bundle(v1, target, timeout=60)
    assert r1.ok, r1.failure
    secrets = (target / ".env").read_text()
    exec_in(docker_engine, airgap.name, "web", "echo precious > /data/note")

    capsys.readouterr()
    assert main(["--json", "install", str(delta), "--dir", str(target), "--timeout", "60"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["services"] == {"api": "healthy", "web": "healthy"}
    assert out["delta"]["carried_blobs"] == 3 and out["delta"]["relied_blobs"] >= 3
    assert http_get(airgap.services["web"].port, "/version") == (200, "2\n")
    assert running_image_ids(docker_engine, airgap.name) == {
        s: lock2["services"][s]["platforms"]["linux/amd64"]["config"] for s in ("api", "web")}
    assert exec_in(docker_engine, airgap.name, "web", "cat /data/note").strip() == "precious"
    assert (target / ".env").read_text() == secrets
    assert (target / "current").resolve().name == "1.1.0"

    rb = rollback(target, timeout=60)
    assert rb.ok and rb.version == "1.0.0"
    assert http_get(airgap.services["web"].port, "/version") == (200, "1\n")
    assert running_image_ids(docker_engine, airgap.name) == {
        s: lock1["services"][s]["platforms"]["linux/amd64"]["config"] for s in ("api", "web")}
    assert exec_in(docker_engine, airgap.name, "web", "cat /data/note").strip() == "precious"


def test_delta_without_its_base_is_refused_until_base_fills_the_gap(airgap, docker_engine, tmp_path, capsys):
    v1, delta, lock1, lock2 = _two_releases(airgap)
    airgap.offline(docker_engine)
    ours = {rec["platforms"]["linux/amd64"]["config"] for lock in (lock1, lock2) for rec in lock["services"].values()}

    def our_images() -> list[str]:      # only this lab's: tests running beside this one load theirs
        return sorted(i.id for i in docker_engine.images.list(all=True) if i.id in ours)
    images_before = our_images()
    target = tmp_path / "inst"
    capsys.readouterr()
    assert main(["install", str(delta), "--dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert "delta since" in err and "1.0.0" in err and v1.name in err and "api" in err
    assert not target.exists()
    assert our_images() == images_before

    # --base: the full base bundle supplies the missing images
    r = install_bundle(delta, target, timeout=60, base=v1)
    assert r.ok, r.failure
    assert http_get(airgap.services["web"].port, "/version") == (200, "2\n")
    assert running_image_ids(docker_engine, airgap.name) == {
        s: lock2["services"][s]["platforms"]["linux/amd64"]["config"] for s in ("api", "web")}

    # --base must be the delta's base
    with pytest.raises(InstallError, match="not a delta bundle"):
        install_bundle(v1, tmp_path / "other", base=v1)


def test_delta_refused_when_the_base_lost_an_image(airgap, docker_engine, tmp_path, capsys):
    v1, delta, lock1, lock2 = _two_releases(airgap)
    airgap.offline(docker_engine)
    target = tmp_path / "inst"
    assert install_bundle(v1, target, start=False).ok
    api_ref = f"{airgap.image_name('api')}:1"
    docker_engine.images.remove(api_ref, force=True)
    with pytest.raises(InstallError) as exc:
        install_bundle(delta, target, timeout=60)
    assert api_ref in exc.value.message and "1.0.0" in exc.value.message
    assert (target / "current").resolve().name == "1.0.0"


def test_two_delta_releases_of_one_version_at_once_make_one_bundle_and_one_record(airgap, tmp_path):
    """A signed and an unsigned `release 1.1.0 --since 1.0.0` at once: the first is paused between
    writing its archive and its record, the second starts then. One delta, its record, its bytes."""
    lab = airgap
    lab.salt = lab.name
    two_service_lab(lab, multiarch_web=False)
    lab.release("1.0.0")
    lab.services["web"].version = "2"
    lab.push(lab.services["web"])
    lab.write()
    lab.lock()
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    out = tmp_path / "dist"
    args = ["--root", str(lab.root), "release", "1.1.0", "--with-images", "--since", "1.0.0", "--out", str(out)]
    results = race(args + ["--sign", str(tmp_path / "k.key")], args, seam="builder.bundle.release:make_record",
                   tmp=tmp_path)
    assert results[0][0] == 0 and "released " in results[0][1], results
    code, _, stderr = results[1]
    assert code == 1 and "already exists" in stderr and "signature: recorded" in stderr, results[1]
    records = lab.root / "lockfiles" / "releases" / "delta"
    record = Record.read(records / "all-1.1.0-since-1.0.0.json")
    bundle = out / f"{lab.name}-all-1.1.0-since-1.0.0.tar"
    assert [p.name for p in out.iterdir()] == [bundle.name] and record.signed_by is not None
    assert sha256_file(bundle) == record.sha256
    assert [p.name for p in records.iterdir()] == ["all-1.1.0-since-1.0.0.json"]     # no lock file left
