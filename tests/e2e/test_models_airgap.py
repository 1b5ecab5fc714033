"""Models shipped like images, with the real registry, engine and compose.

A test registry serves tiny Ollama-format models (GGUF-headed weights,
template, params; Docker schema2 manifests). The lab locks and releases them
with its images, goes offline (registry stopped, local images removed), and
installs: the service's volume must then hold Ollama's layout exactly, read
back through the engine.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from types import SimpleNamespace

import pytest
from labkit import Service
from support.registry import free_port

from builder.errors import LabbuildError
from builder.install.apply import install_bundle, rollback
from builder.lockfile import read_lock
from builder.operate.status import status

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def service_container(engine, lab: str, service: str):
    (c,) = engine.containers.list(all=True, filters={"label": [f"com.docker.compose.project={lab}",
                                                                 f"com.docker.compose.service={service}"]})
    return c


def read_file(container, path: str) -> bytes:
    """One file of the container (its volume), through the engine's archive API."""
    chunks, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        (member,) = [m for m in tar.getmembers() if m.isreg()]
        return tar.extractfile(member).read()


def files_under(container, path: str) -> dict[str, bytes]:
    chunks, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}


def assert_placed(container, model: dict, root: str = "/data/models") -> None:
    """The exact manifest bytes at manifests/<host>/<ns>/<model>/<tag>, every blob at sha256-<hex>."""
    image = model["image"]
    host_ns_model = model["name"]
    manifest = read_file(container, f"{root}/manifests/{host_ns_model}/{model['tag']}")
    assert manifest == image.manifest.data
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == model["digest"]
    for blob in image.blobs():
        data = read_file(container, f"{root}/blobs/sha256-{blob.digest.removeprefix('sha256:')}")
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
        assert data == blob.data


def model_lab(airgap, models: list[dict]):
    airgap.services = {"llm": Service("llm", free_port(), volume=True,
                                      models=[{k: v for k, v in m.items() if k != "image"} for m in models])}
    airgap.push(airgap.services["llm"])
    airgap.write()
    airgap.lock()
    return airgap


def test_models_lock_release_install_upgrade_rollback(airgap, docker_engine, tmp_path):
    first = airgap.push_model("tinyllm", "q4", b"weights-one" * 1000)
    second = airgap.push_model("tinyembed", "v1", b"weights-two" * 500)
    lab = model_lab(airgap, [first])

    # lock: the manifest re-hashed, config and every layer recorded
    rec = read_lock(lab.root / "lockfiles" / "lab.lock.json").services["llm"]
    (m,) = rec.models
    assert m.verified and m.digest == first["digest"] and m.reference == f"{first['name']}:q4"
    assert m.config.digest == first["image"].config.digest
    assert [(l.digest, l.size, l.media_type) for l in m.layers] == [
        (b.digest, b.size, b.media_type) for b in first["image"].layers]
    assert m.layers[0].media_type == "application/vnd.ollama.image.model"
    v1 = lab.release("1.0.0")

    lab.services["llm"].models.append({k: v for k, v in second.items() if k != "image"})
    lab.write()
    lab.lock()
    v2 = lab.release("1.1.0")
    lab.offline(docker_engine)

    target = tmp_path / "inst"
    r1 = install_bundle(v1, target, timeout=60)
    assert r1.ok, r1.failure
    assert r1.models["llm"].models == [f"{first['name']}:q4"]
    c = service_container(docker_engine, lab.name, "llm")
    assert_placed(c, first)
    # the host part keeps the registry's port: a literal colon in the directory name
    assert ":" in first["name"].split("/")[0]
    assert read_file(c, "/data/models/blobs/.labbuild-incoming") == b""   # the temp name holds nothing

    # the operator pulls a model by hand (Ollama's layout, through the engine)
    hand = io.BytesIO()
    with tarfile.open(fileobj=hand, mode="w") as tar:
        for name, data in {"models/manifests/registry.ollama.ai/library/handmade/1": b'{"hand":1}',
                           "models/blobs/sha256-" + "ab" * 32: b"operator weights"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    c.put_archive("/data", hand.getvalue())

    # upgrade: adds the second model, keeps the first and the hand-made one; known blobs are skipped
    r2 = install_bundle(v2, target, timeout=60)
    assert r2.ok, r2.failure
    placed = r2.models["llm"]
    assert sorted(placed.models) == sorted([f"{first['name']}:q4", f"{second['name']}:v1"])
    assert set(placed.skipped) == {b.digest for b in first["image"].blobs()}
    assert set(placed.written) == {b.digest for b in second["image"].blobs()} - set(placed.skipped)
    c = service_container(docker_engine, lab.name, "llm")
    assert_placed(c, first)
    assert_placed(c, second)
    assert read_file(c, "/data/models/manifests/registry.ollama.ai/library/handmade/1") == b'{"hand":1}'

    st = status(target)
    assert st.services["llm"].models == sorted([
        f"{first['name']}:q4", f"{second['name']}:v1", "registry.ollama.ai/library/handmade:1"])
    assert st.to_json()["services"]["llm"]["models"] == st.services["llm"].models

    # rollback to 1.0.0: nothing is removed from the volume
    rb = rollback(target, timeout=60)
    assert rb.ok, rb.failure
    c = service_container(docker_engine, lab.name, "llm")
    assert_placed(c, first)
    assert_placed(c, second)
    assert read_file(c, "/data/models/blobs/sha256-" + "ab" * 32) == b"operator weights"


def corrupt_member(bundle, rel_suffix: str) -> None:
    """Flip one byte inside the archive member whose name ends with ``rel_suffix``."""
    with tarfile.open(bundle) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith(rel_suffix)]
        offset = member.offset_data + member.size // 2
    with open(bundle, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_model_blob_aborts_before_anything_is_placed(airgap, docker_engine, tmp_path):
    model = airgap.push_model("tinyllm", "q4", b"weights" * 4000)
    lab = model_lab(airgap, [model])
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    weights = model["image"].layers[0].digest.removeprefix("sha256:")
    corrupt_member(bundle, f"images/blobs/sha256/{weights}")

    target = tmp_path / "inst"
    with pytest.raises(LabbuildError) as err:
        install_bundle(bundle, target, timeout=60)
    assert weights in json.dumps(err.value.to_json()) or "verification" in err.value.message
    label = f"com.docker.compose.project={lab.name}"
    assert docker_engine.containers.list(all=True, filters={"label": label}) == []
    assert docker_engine.volumes.list(filters={"label": label}) == []
    assert not (target / "current").exists()


# --------------------------------------------------------------------------- placement alone

@pytest.fixture
def model_bundle(tmp_path, docker_engine):
    """An image-bundle-shaped tar (and its manifest) holding one tiny model, plus a created
    container of a local busybox image with a fresh volume on /data."""
    import docker as docker_sdk
    from support.oci import ollama_model

    from builder.format.manifest import Manifest

    m = ollama_model(b"placement weights" * 300)
    blobs = [m.manifest, *m.blobs()]
    bundle = tmp_path / "b.tar"
    with tarfile.open(bundle, "w") as tar:
        for b in blobs:
            info = tarfile.TarInfo(f"mlab-base-1.0.0/images/blobs/sha256/{b.digest.removeprefix('sha256:')}")
            info.size = b.size
            tar.addfile(info, io.BytesIO(b.data))
    model = {"name": "127.0.0.1:5000/library/tiny", "tag": "q4", "digest": m.digest, "format": "ollama",
             "volume": "data", "path": "models", "role": None, "media_type": m.manifest.media_type,
             "size": m.manifest.size,
             "blobs": [{"digest": b.digest, "size": b.size, "media_type": b.media_type} for b in m.blobs()]}
    manifest = Manifest.from_json({
        "format": 1, "lab": "mlab", "name": "mlab-base-1.0.0", "version": "1.0.0", "profile": "base",
        "inputs": m.digest,
        "labbuild": "0", "offline": True, "platforms": [],
        "files": {f"images/blobs/sha256/{b.digest.removeprefix('sha256:')}": {"sha256": b.digest[7:], "size": b.size}
                  for b in blobs},
        "services": {"llm": {"image": "x/y:1", "digest": m.digest, "verified": True, "config_digests": {}, "ports": [],
                             "health": None, "depends_on": [], "secrets": [], "runbook": "r", "healthcheck": False,
                             "volumes": [{"name": "data", "volume": "v", "target": "/data", "read_only": False}],
                             "models": [model]}}})
    client = docker_sdk.from_env(timeout=120)
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "bin" / "busybox").write_bytes(open("/bin/busybox", "rb").read())
    image_tar = io.BytesIO()
    with tarfile.open(fileobj=image_tar, mode="w") as tar:
        tar.add(root, ".")
    tag = uuid.uuid4().hex[:10]
    ref = f"labbuild-test-models-busybox:{tag}"
    client.api.import_image_from_data(image_tar.getvalue(), repository=ref.split(":")[0], tag=tag)
    volume = client.volumes.create()
    container = client.containers.create(ref, ["/bin/busybox", "true"], volumes={volume.name: {"bind": "/data"}})
    yield SimpleNamespace(client=client, bundle=bundle, manifest=manifest, model=m, container=container)
    container.remove(force=True)
    volume.remove(force=True)
    client.images.remove(ref, force=True)
    client.close()


def test_placement_through_the_sdk_stream_writes_the_same_layout(model_bundle, monkeypatch):
    from builder.bundle.reader import file_fingerprint
    from builder.install import models as placing

    monkeypatch.setattr(placing, "unix_socket_path", lambda client: None)   # as with a TCP or SSH engine
    mb = model_bundle
    placed = placing.place_models(mb.client, mb.bundle, mb.manifest, {"llm": mb.container}, lambda _: None,
                                  file_fingerprint(mb.bundle))
    assert placed["llm"].written == sorted(b.digest for b in mb.model.blobs())
    assert read_file(mb.container, "/data/models/manifests/127.0.0.1:5000/library/tiny/q4") == mb.model.manifest.data
    for b in mb.model.blobs():
        assert read_file(mb.container, f"/data/models/blobs/sha256-{b.digest[7:]}") == b.data


@pytest.mark.parametrize("sdk", [False, True], ids=["sendfile", "sdk"])
def test_a_bundle_changed_since_it_verified_places_no_manifest(model_bundle, monkeypatch, sdk):
    from builder.bundle.reader import file_fingerprint
    from builder.install import models as placing

    if sdk:
        monkeypatch.setattr(placing, "unix_socket_path", lambda client: None)
    mb = model_bundle
    verified = file_fingerprint(mb.bundle)
    checks = []
    real = placing._BundleBlobs.check_unchanged

    def touch_after_first_blob(self, digest=None, seen=0, size=0):
        checks.append(digest)
        if len(checks) == 2:          # the first blob streamed: now the file changes under us
            with open(self.bundle, "ab") as fh:
                fh.write(b"\0" * 512)
        return real(self, digest, seen, size)

    monkeypatch.setattr(placing._BundleBlobs, "check_unchanged", touch_after_first_blob)
    with pytest.raises(LabbuildError, match="changed since it verified"):
        placing.place_models(mb.client, mb.bundle, mb.manifest, {"llm": mb.container}, lambda _: None, verified)
    listing = files_under(mb.container, "/data")
    assert not [n for n in listing if "/manifests/" in n]                   # no model became visible
    assert not [n for n in listing if "/blobs/sha256-" in n]                 # the blob never got its name
