"""Faults of an air-gapped install: each one a clear error, nothing left running unannounced."""

from __future__ import annotations

import json
import socket
import subprocess
import tarfile

import pytest

from builder.cli import main
from builder.errors import LabbuildError
from builder.install.apply import install_bundle

from labkit import Service, free_port, two_service_lab

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def lab_containers(engine, lab: str) -> list:
    return engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={lab}"})


def unpacked(bundle, dest):
    dest.mkdir()
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()
    return top


def corrupt_first_layer(bundle, out):
    """Copy ``bundle`` to ``out`` with one byte flipped inside the biggest blob."""
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        blob = max((m for m in tar.getmembers() if "/images/blobs/" in m.name), key=lambda m: m.size)
    data[blob.offset_data + blob.size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return blob.name.rsplit("/", 1)[1]


def test_corrupted_blob_is_refused_before_anything_is_touched(airgap, docker_engine, tmp_path, capsys):
    lab = two_service_lab(airgap, multiarch_web=False)
    good = lab.release("1.0.0")
    lab.offline(docker_engine)
    bad = tmp_path / good.name
    hexd = corrupt_first_layer(good, bad)
    target = tmp_path / "inst"
    assert main(["install", str(bad), "--dir", str(target)]) == 1
    err = capsys.readouterr().err
    assert hexd in err and "sha256" in err
    assert not target.exists()                       # nothing touched
    assert not lab_containers(docker_engine, lab.name)
    for ref in lab.refs:                             # the load streamed alongside was aborted
        assert not docker_engine.images.list(name=ref)

    # install.sh refuses the same bundle, and says why
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    with tarfile.open(bad) as tar:
        tar.extractall(unpack, filter="data")
    (top,) = unpack.iterdir()
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target)], capture_output=True, text=True)
    assert p.returncode == 1
    assert "FAILED" in p.stderr and hexd in p.stderr and "nothing was installed" in p.stderr
    assert not target.exists()


def test_missing_image_online_bundle_offline_host(airgap, docker_engine, tmp_path, capsys):
    """A bundle without images on a host without the images or a registry: compose cannot pull."""
    from builder.bundle.release import build_release
    lab = two_service_lab(airgap, multiarch_web=False)
    online = build_release(lab.root, "1.0.0", out_dir=tmp_path / "dist", progress=False).bundle
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert main(["install", str(online), "--dir", str(target), "--timeout", "20"]) == 1
    err = capsys.readouterr().err
    # pulling is its own step before `up` (issue 11): it fails naming the image, nothing starts
    assert "pulling" in err and (lab.image_name("api") in err or lab.image_name("web") in err)
    assert "--with-images" in err
    assert not [c for c in lab_containers(docker_engine, lab.name) if c.status == "running"]


def test_image_with_the_locked_tag_but_another_id_stops_the_install(airgap, docker_engine, tmp_path):
    """Someone tagged a different image as name:tag: install names it and starts nothing."""
    from builder.bundle.release import build_release
    lab = two_service_lab(airgap, multiarch_web=False)
    online = build_release(lab.root, "1.0.0", out_dir=tmp_path / "dist", progress=False).bundle
    impostor = tmp_path / "impostor.tar"
    offline = lab.release("9.0.0")   # take a real image from a bundle and tag it as web:1's impostor
    with tarfile.open(offline) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    lab.offline(docker_engine)
    (top,) = (tmp_path / "x").iterdir()
    entries = json.loads((top / "images" / "manifest.json").read_text())
    api = next(e for e in entries if "/api:" in e["RepoTags"][0])
    web_ref = f"{lab.image_name('web')}:1"
    api["RepoTags"] = [web_ref]
    with tarfile.open(impostor, "w") as tar:
        manifest = json.dumps([api]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        import io
        tar.addfile(info, io.BytesIO(manifest))
        for rel in [api["Config"], *api["Layers"]]:
            tar.add(top / "images" / rel, rel)
    with open(impostor, "rb") as fh:
        docker_engine.images.load(fh.read())
    target = tmp_path / "inst"
    with pytest.raises(LabbuildError) as exc:
        install_bundle(online, target, timeout=20)
    assert "web" in exc.value.message and web_ref in exc.value.message and "lock says" in exc.value.message
    assert not lab_containers(docker_engine, lab.name)


def test_port_already_taken(airgap, docker_engine, tmp_path):
    lab = two_service_lab(airgap, multiarch_web=False)
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", lab.services["api"].port))
        squatter.listen()
        with pytest.raises(LabbuildError) as exc:
            install_bundle(bundle, tmp_path / "inst", timeout=20)
    text = exc.value.render()
    # the doctor preflight names the port and stops before anything is touched (issue 11)
    assert str(lab.services["api"].port) in text and "nothing was changed" in text
    assert "stop what listens on" in text and "labbuild doctor" in (exc.value.hint or "")
    assert not lab_containers(docker_engine, lab.name) and not (tmp_path / "inst").exists()

    # install.sh: the same clear failure, before anything is touched; a socket on another
    # address of the same port does not count, nor one on another port
    lab.cleanup(docker_engine)
    top = unpacked(bundle, tmp_path / "unpack")
    port = lab.services["api"].port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(tmp_path / "inst-sh"), "--timeout", "5"],
                           capture_output=True, text=True)
    assert p.returncode == 1
    assert f"port api/http: 127.0.0.1:{port}/tcp is in use by another program" in p.stderr
    assert "nothing was installed" in p.stderr and "ss -ltnup" in p.stderr
    assert not lab_containers(docker_engine, lab.name) and not (tmp_path / "inst-sh").exists()
    with socket.socket() as elsewhere, socket.socket() as bound_only:
        elsewhere.bind(("127.0.0.2", port))        # the same port on another address
        elsewhere.listen()
        bound_only.bind(("127.0.0.1", 0))          # listening elsewhere
        bound_only.listen()
        p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(tmp_path / "inst-sh"), "--timeout", "30"],
                           capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_service_that_never_gets_healthy(airgap, docker_engine, tmp_path, capsys):
    lab = airgap
    lab.services = {"sick": Service("sick", free_port(), broken=True)}
    for svc in lab.services.values():
        lab.push(svc)
    lab.write()
    lab.lock()
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert main(["--json", "install", str(bundle), "--dir", str(target), "--timeout", "3"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["ok"] is False and out["services"] == {"sick": "unhealthy"}
    err = captured.err
    assert "sick is not healthy" in err and "404" in err
    assert "last log lines of sick" in err
    assert str(target / "releases" / "1.0.0" / "runbooks" / "sick.md") in err
    assert "left running" in err and "labbuild uninstall" in err

    # install.sh: the same failure, the same facts
    assert main(["uninstall", "--dir", str(target), "--volumes"]) == 0
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    with tarfile.open(bundle) as tar:
        tar.extractall(unpack, filter="data")
    (top,) = unpack.iterdir()
    p = subprocess.run(["dash", str(top / "install.sh"), "--dir", str(target), "--timeout", "3"],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert "sick did not become healthy" in p.stderr and "runbooks/sick.md" in p.stderr
    assert "left running" in p.stderr


def test_signed_bundle_installs_only_with_its_key(airgap, docker_engine, tmp_path, capsys):
    from builder.signing import generate_keypair
    lab = two_service_lab(airgap, multiarch_web=False)
    generate_keypair(tmp_path / "lab.key", tmp_path / "lab.pub")
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    bundle = lab.release("1.0.0", sign_key=tmp_path / "lab.key")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert main(["install", str(bundle), "--dir", str(target), "--key", str(tmp_path / "other.pub")]) == 1
    assert "signature does not match" in capsys.readouterr().err
    assert not target.exists()
    for ref in lab.refs:
        assert not docker_engine.images.list(name=ref)
    assert main(["install", str(bundle), "--dir", str(target), "--key", str(tmp_path / "lab.pub"),
                 "--timeout", "30"]) == 0


def test_another_lab_in_the_same_dir_is_refused(airgap, docker_engine, tmp_path):
    lab = two_service_lab(airgap, multiarch_web=False)
    bundle = lab.release("1.0.0")
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert install_bundle(bundle, target, start=False).ok
    installed = target / "releases" / "1.0.0" / "manifest.json"
    installed.write_text(installed.read_text().replace(f'"lab": "{lab.name}"', '"lab": "someone-else"')
                         .replace(f'"name": "{lab.name}-', '"name": "someone-else-'))
    with pytest.raises(LabbuildError) as exc:
        install_bundle(bundle, target, start=False)
    assert "someone-else" in exc.value.message and "own --dir" in exc.value.hint
    assert sorted(p.name for p in (target / "releases").iterdir()) == ["1.0.0"]
