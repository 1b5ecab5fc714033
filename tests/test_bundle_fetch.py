"""images/ of a bundle: one OCI layout plus docker-load manifests, fetched from a real registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import replace

import pytest

from builder.blobcache import BlobCache
from builder.blueprint import load_lab
from builder.errors import BundleError
from builder.bundle.fetch import BLOB_ORDER, PendingBlob, image_files, layout_metadata, plan_images, wait_for_downloads
from builder.platforms import platform_file
from builder.lockfile import read_lock

from e2e.labkit import AirgapLab, images_lab, one_service_lab


@pytest.fixture
def locked_lab(tmp_path, registry, monkeypatch):
    """web (amd64+arm64 index) and api (amd64), sharing the busybox base layer; locked."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = images_lab(AirgapLab(root=tmp_path / "lab", registry=registry, name=f"img-{uuid.uuid4().hex[:8]}"))
    return lab, load_lab(lab.root), read_lock(lab.root / "lockfiles" / "lab.lock.json")


def write_files(files, dest):
    for f in files:
        path = dest / f.arcname
        path.parent.mkdir(parents=True, exist_ok=True)
        with f.open() as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out)


def test_layout_holds_every_blob_once_blobs_first(locked_lab, tmp_path):
    lab, model, lock = locked_lab
    files = image_files(model, lock, ["api", "web"], progress=False)
    assert any(isinstance(f, PendingBlob) for f in files)   # layers download while the bundle packs
    wait_for_downloads(files)
    names = [f.arcname for f in files]
    assert len(names) == len(set(names))
    blobs = [f for f in files if "/blobs/" in f.arcname]
    meta = [f for f in files if "/blobs/" not in f.arcname]
    assert {f.order for f in blobs} == {BLOB_ORDER} and {f.order for f in meta} == {0} and BLOB_ORDER < 0
    for f in blobs:   # the hint is the real content hash, so SHA256SUMS can trust it
        assert f.sha256_hint == f.arcname.rsplit("/", 1)[1]
        assert f.sha256_hint == __import__("hashlib").sha256(f.source.read_bytes()).hexdigest()
    expected = set()
    for svc in ("api", "web"):
        rec = lock.services[svc]
        expected.add(rec.digest)
        for p in rec.platforms.values():
            expected |= {p.manifest, p.config, *(l.digest for l in p.layers)}
    assert {"sha256:" + f.sha256_hint for f in blobs} == expected
    # the busybox base layer is shared by both images and both platforms: stored once
    web_base = lock.services["web"].platforms["linux/amd64"].layers[0].digest
    assert web_base == lock.services["api"].platforms["linux/amd64"].layers[0].digest
    assert sum(1 for f in blobs if f.sha256_hint == web_base.split(":")[1]) == 1

    by_name = {f.arcname: f.data for f in meta}
    assert json.loads(by_name["images/oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(by_name["images/index.json"])
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    assert set(refs) == {lock.services["api"].reference, lock.services["web"].reference}
    for ref, m in refs.items():
        assert m["annotations"]["io.containerd.image.name"] == ref
    assert refs[lock.services["web"].reference]["digest"] == lock.services["web"].digest
    amd = json.loads(by_name["images/docker-load/linux_amd64.json"])
    arm = json.loads(by_name["images/docker-load/linux_arm64.json"])
    assert json.loads(by_name["images/manifest.json"]) == amd
    assert {e["RepoTags"][0] for e in amd} == set(refs)
    assert [e["RepoTags"][0] for e in arm] == [lock.services["web"].reference]   # api has no arm64
    web_amd = next(e for e in amd if e["RepoTags"][0] == lock.services["web"].reference)
    assert web_amd["Config"] == "blobs/sha256/" + lock.services["web"].platforms["linux/amd64"].config.split(":")[1]


def test_skopeo_reads_the_layout(locked_lab, tmp_path):
    skopeo = shutil.which("skopeo")
    if not skopeo:
        pytest.skip("skopeo is not installed")
    lab, model, lock = locked_lab
    files = image_files(model, lock, ["api", "web"], platforms=["linux/amd64"], progress=False)
    write_files(files, tmp_path / "bundle")
    layout = tmp_path / "bundle" / "images"
    rec = lock.services["api"]
    out = subprocess.run([skopeo, "inspect", "--config", f"oci:{layout}:{rec.reference}"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    raw = (layout / "blobs" / "sha256" / rec.platforms["linux/amd64"].config.split(":")[1]).read_bytes()
    assert json.loads(out.stdout) == json.loads(raw)


def test_second_release_needs_no_registry(locked_lab):
    lab, model, lock = locked_lab
    first = image_files(model, lock, ["api", "web"], progress=False)
    wait_for_downloads(first)
    lab.registry.stop()
    second = image_files(model, lock, ["api", "web"], progress=False)
    assert not any(isinstance(f, PendingBlob) for f in second)
    assert [(f.arcname, f.sha256()) for f in first] == [(f.arcname, f.sha256()) for f in second]


def test_cached_blob_is_reused_and_a_damaged_registry_blob_never_enters(locked_lab, tmp_path):
    lab, model, lock = locked_lab
    cache = BlobCache(tmp_path / "own-cache")
    wait_for_downloads(image_files(model, lock, ["api"], platforms=["linux/amd64"], progress=False, cache=cache))
    layer = lock.services["api"].platforms["linux/amd64"].layers[1].digest
    assert cache.has(layer)
    # the registry now serves garbage for a layer not yet cached: refused after retries
    web_layer = lock.services["web"].platforms["linux/arm64"].layers[1].digest
    data = next(lab.registry.storage.rglob(f"blobs/sha256/{web_layer[7:9]}/{web_layer[7:]}/data"))
    data.write_bytes(b"tampered" + data.read_bytes()[8:])
    from builder.errors import RegistryError
    with pytest.raises(RegistryError) as exc:
        wait_for_downloads(image_files(model, lock, ["web"], progress=False, cache=cache))
    assert web_layer in exc.value.message
    assert not cache.has(web_layer)


def test_unverified_lock_entries_are_refused(locked_lab):
    _, model, lock = locked_lab
    pins_only = replace(lock, services={**lock.services,
                                        "api": replace(lock.services["api"], verified=False, platforms={})})
    with pytest.raises(BundleError) as exc:
        plan_images(pins_only, ["api", "web"], ["linux/amd64"])
    assert "unverified" in exc.value.message and "labbuild lock" in exc.value.hint


def test_missing_platform_is_refused(locked_lab):
    _, _, lock = locked_lab
    with pytest.raises(BundleError) as exc:
        plan_images(lock, ["api"], ["linux/arm64"])
    assert "linux/arm64" in exc.value.message and "linux/amd64" in exc.value.hint


def test_platform_file_and_arm64_variant_matching(locked_lab):
    _, _, lock = locked_lab
    assert platform_file("linux/arm64/v8") == "linux_arm64_v8"
    plans = plan_images(lock, ["web"], ["linux/arm64"])
    files = layout_metadata(plans, ["linux/arm64"])
    assert "docker-load/linux_arm64.json" in files and files["manifest.json"] == files["docker-load/linux_arm64.json"]


def test_release_fails_atomically_when_a_background_download_fails(locked_lab, tmp_path):
    """The writer packs while layers download; a layer that never hashes right aborts the release."""
    from builder.bundle.release import build_release
    from builder.errors import RegistryError
    lab, _, lock = locked_lab
    layer = lock.services["api"].platforms["linux/amd64"].layers[1].digest
    data = next(lab.registry.storage.rglob(f"blobs/sha256/{layer[7:9]}/{layer[7:]}/data"))
    data.write_bytes(b"tampered" + data.read_bytes()[8:])
    out = tmp_path / "dist"
    with pytest.raises(RegistryError) as exc:
        build_release(lab.root, "1.0.0", with_images=True, out_dir=out, progress=False)
    assert layer in exc.value.message
    name = f"{lab.name}-all-1.0.0.tar"
    # no bundle: only the hidden partial archive and its journal, which the next run resumes
    assert sorted(p.name for p in out.iterdir()) == sorted([f".{name}.journal", f".{name}.partial"])


def test_a_layer_that_arrives_wrong_is_fetched_again_and_packed_right(tmp_path, registry, monkeypatch):
    """The release packs each layer as its bytes arrive. A layer that hashes wrong (one byte flipped
    by a proxy in front of the real registry) is fetched again and its archive member written
    again: the bundle is byte for byte what a clean fetch makes."""
    from types import SimpleNamespace
    from builder.bundle.release import build_release
    from support.faultproxy import FaultProxy
    proxy = FaultProxy(registry.host)
    try:
        via = SimpleNamespace(host=proxy.host, client=registry.client, stop=registry.stop)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        lab = one_service_lab(AirgapLab(root=tmp_path / "lab", registry=via, name=f"img-{uuid.uuid4().hex[:8]}"))
        layers = read_lock(lab.root / "lockfiles" / "lab.lock.json").services["web"].platforms["linux/amd64"].layers
        biggest = max(layers, key=lambda layer: layer.size)
        fault = proxy.add("alter", f"/blobs/{biggest.digest}")
        first = build_release(lab.root, "1.0.0", with_images=True, out_dir=tmp_path / "a", progress=False).bundle
        assert fault.times == 0                                   # the flipped byte was served
        assert sum(1 for m, p in proxy.requests if biggest.digest in p and m == "GET") == 2
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "clean-cache"))
        again = build_release(lab.root, "1.0.0", with_images=True, out_dir=tmp_path / "b", progress=False).bundle
        assert first.read_bytes() == again.read_bytes()
    finally:
        proxy.close()
