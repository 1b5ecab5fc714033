"""Issue 15 wired into bundles: signatures other tools check, provenance in every bundle,
SBOMs in image bundles — checked with openssl, labbuild verify/sbom/diff and install.sh."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.format.files import PROVENANCE, SIGSTORE
from builder.bundle.release import build_release
from builder.bundle.verify import verify_bundle
from builder.cli import main
from builder.signing import generate_keypair
from labkit import AirgapLab, Service, free_port
from support.oci import BUSYBOX, make_image, push_image

DPKG_STATUS = b"""Package: libfoo1
Status: install ok installed
Architecture: amd64
Version: {version}

"""
METADATA = b"Metadata-Version: 2.1\nName: requests\nVersion: 2.32.3\n"


def _pkg_image(version: str):
    base = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755), "bin/sh": "->busybox"}
    pkgs = {"var/lib/dpkg/status": DPKG_STATUS.replace(b"{version}", version.encode()),
            "usr/lib/python3/dist-packages/requests-2.32.3.dist-info/METADATA": METADATA,
            "etc/os-release": b'ID=debian\nVERSION_ID="12"\n'}
    return make_image([base, pkgs], cmd=["/bin/sh", "-c", "sleep 3600"], label=version)


def _lab(airgap: AirgapLab, version: str) -> AirgapLab:
    svc = Service("pkgs", free_port(), version=version)
    img = _pkg_image(version)
    with airgap.registry.client() as client:
        svc.digest = push_image(client, airgap.repo("pkgs"), version, img)
    svc.image_id = img.image_id
    airgap.refs.add(f"{airgap.image_name('pkgs')}:{version}")
    airgap.services = {"pkgs": svc}
    airgap.write()
    airgap.lock()
    return airgap


def _member(bundle: Path, rel: str) -> bytes:
    with tarfile.open(bundle) as tar:
        top = tar.getmembers()[0].name
        return tar.extractfile(f"{top}/{rel}").read()


def _replace_member(bundle: Path, out: Path, rel: str, data: bytes) -> Path:
    raw = io.BytesIO()
    with tarfile.open(bundle) as src, tarfile.open(fileobj=raw, mode="w") as dst:
        for m in src.getmembers():
            body = src.extractfile(m).read() if m.isreg() else None
            if m.name.endswith("/" + rel):
                body = data
                m.size = len(body)
            dst.addfile(m, io.BytesIO(body) if body is not None else None)
    out.write_bytes(raw.getvalue())
    return out


def _signed_and_unpacked(airgap: AirgapLab, keys, tmp_path: Path) -> tuple[AirgapLab, Path, Path]:
    """The lab released as 1.0.0 signed with ``keys``, and its top directory unpacked by tar."""
    lab = _lab(airgap, "1.0")
    bundle = lab.release("1.0.0", sign_key=keys[0])
    top = tmp_path / "x"
    top.mkdir()
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(top)], check=True)
    return lab, bundle, next(top.iterdir())


@pytest.fixture
def keys(tmp_path):
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    return tmp_path / "k.key", tmp_path / "k.pub"


def test_a_signed_image_bundle_is_checkable_by_openssl_and_carries_sboms_and_provenance(airgap, keys, tmp_path,
                                                                                        capsys):
    lab, bundle, root = _signed_and_unpacked(airgap, keys, tmp_path)
    (tmp_path / "sig.der").write_bytes(base64.b64decode((root / "manifest.json.sig").read_bytes()))
    proc = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(keys[1]), "-signature",
                           str(tmp_path / "sig.der"), str(root / "manifest.json")], capture_output=True, text=True)
    assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stderr
    manifest = json.loads((root / "manifest.json").read_text())
    sboms = [f for f in manifest["files"] if f.startswith("sbom/")]
    assert sboms == ["sbom/pkgs_linux_amd64.cdx.json"]
    result = verify_bundle(bundle, keys[1])
    assert result.ok and result.signature_checked and result.provenance == "signed", result.errors
    statement = json.loads(base64.b64decode(json.loads(_member(bundle, PROVENANCE))["payload"]))
    subjects = {s["name"] for s in statement["subject"]}
    assert "manifest.json" in subjects and f"{lab.image_name('pkgs')}:1.0" in subjects
    assert main(["--json", "sbom", str(bundle)]) == 0
    listed = json.loads(capsys.readouterr().out)["images"][0]["components"]
    assert {(c["name"], c["version"]) for c in listed} >= {("libfoo1", "1.0"), ("requests", "2.32.3")}


@pytest.mark.parametrize("rel", [PROVENANCE, SIGSTORE, "sbom/pkgs_linux_amd64.cdx.json"])
def test_tampering_with_any_trust_file_fails_verify_naming_it(airgap, keys, tmp_path, rel):
    lab = _lab(airgap, "1.0")
    bundle = lab.release("1.0.0", sign_key=keys[0])
    data = _member(bundle, rel)
    if rel == SIGSTORE:      # another valid-looking signature
        doc = json.loads(data)
        sig = bytearray(base64.b64decode(doc["messageSignature"]["signature"]))
        sig[-1] ^= 1
        doc["messageSignature"]["signature"] = base64.b64encode(bytes(sig)).decode()
        tampered = json.dumps(doc).encode()
    else:                    # a package or subject claim changed
        tampered = data.replace(b"1.0", b"1.1", 1)
        if rel == PROVENANCE:
            env = json.loads(data)
            env["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b"1.0", b"1.1", 1)).decode()
            tampered = json.dumps(env).encode()
    assert tampered != data
    bad = _replace_member(bundle, tmp_path / "bad.tar", rel, tampered)
    result = verify_bundle(bad, keys[1])
    assert not result.ok and rel in {e.file for e in result.errors}, [e.render() for e in result.errors]


def test_sbom_and_provenance_bytes_are_reproducible_and_diff_shows_package_changes(airgap, tmp_path, capsys):
    lab = _lab(airgap, "1.0")
    first = lab.release("1.0.0")
    again = build_release(lab.root, "1.0.0", with_images=True, out_dir=tmp_path / "again", progress=False)
    assert again.noop
    (lab.root / "lockfiles" / "releases" / "all-1.0.0.json").rename(tmp_path / "record.json")
    third = build_release(lab.root, "1.0.0", with_images=True, out_dir=tmp_path / "third", progress=False).bundle
    for rel in (PROVENANCE, "sbom/pkgs_linux_amd64.cdx.json"):
        assert _member(first, rel) == _member(third, rel)
    assert verify_bundle(first).provenance == "unsigned"
    lab2 = _lab(airgap, "2.0")
    second = lab2.release("2.0.0")
    assert main(["--json", "diff", str(first), str(second)]) == 0
    packages = json.loads(capsys.readouterr().out)["packages"]
    assert {"service": "pkgs", "package": "pkg:deb/debian/libfoo1", "before": "1.0", "after": "2.0"} in packages \
        or any(p["before"] == "1.0" and p["after"] == "2.0" for p in packages), packages


def test_install_sh_checks_the_signature_with_openssl(airgap, keys, tmp_path):
    _, _, root = _signed_and_unpacked(airgap, keys, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    generate_keypair(other / "o.key", other / "o.pub")
    target = tmp_path / "inst"
    proc = subprocess.run(["dash", str(root / "install.sh"), "--dir", str(target), "--key", str(other / "o.pub"),
                           "--no-start"], capture_output=True, text=True)
    assert proc.returncode == 1 and "does not verify" in proc.stderr and not target.exists(), proc.stderr
    proc = subprocess.run(["dash", str(root / "install.sh"), "--dir", str(target), "--key", str(keys[1]),
                           "--no-start"], capture_output=True, text=True)
    assert "signature of manifest.json verified" in proc.stderr, proc.stderr


def test_provenance_stripped_from_a_signed_bundle_is_refused_by_verify_and_install(airgap, keys, tmp_path, capsys,
                                                                                   docker_engine):
    """The review's attack: the provenance file and its (unsigned) SHA256SUMS line removed, the
    archive packed again. manifest.json (signed) says labbuild 0.2.x made it: provenance is required."""
    lab, bundle, root = _signed_and_unpacked(airgap, keys, tmp_path)
    (root / PROVENANCE).unlink()
    sums = (root / "SHA256SUMS").read_text().splitlines(keepends=True)
    (root / "SHA256SUMS").write_text("".join(line for line in sums if not line.endswith(f"  {PROVENANCE}\n")))
    stripped = tmp_path / bundle.name
    subprocess.run(["tar", "-cf", str(stripped), "-C", str(root.parent), root.name], check=True)
    for args in (["verify", str(stripped), "--key", str(keys[1])], ["verify", str(stripped)],
                 ["verify", str(root)]):
        assert main(args) == 1
        captured = capsys.readouterr()
        assert f"{PROVENANCE}: missing" in captured.err and "OK" not in captured.out, captured
    lab.offline(docker_engine)
    target = tmp_path / "inst"
    assert main(["install", str(stripped), "--dir", str(target), "--key", str(keys[1])]) == 1
    err = capsys.readouterr().err
    assert f"{PROVENANCE}: missing" in err and "Traceback" not in err, err
    assert not (target / "current").exists()
