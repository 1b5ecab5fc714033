"""Ed25519 signing: keygen, release --sign, verify --key (good, wrong key, tampered, unsigned)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from builder.bundle.release import build_release, rebuild_release
from builder.bundle.verify import safe_extract, verify_bundle
from builder.errors import BundleError
from builder.signing import generate_keypair, load_private_key
from test_bundle_release import run_labbuild
from test_render import make_lab
from test_bundle_verify import TOP, flipped


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("keys")
    proc = run_labbuild("--json", "keygen", "--out", str(tmp / "release.key"))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["fingerprint"].startswith("sha256:")
    generate_keypair(tmp / "other.key", tmp / "other.pub")
    return tmp / "release.key", tmp / "release.pub", tmp / "other.pub"


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys) -> Path:
    tmp = tmp_path_factory.mktemp("signed")
    root = make_lab(tmp / "lab")
    proc = run_labbuild("--root", str(root), "release", "1.0.0", "--profile", "full", "--sign", str(keys[0]),
                        "--out", str(tmp / "dist"))
    assert proc.returncode == 0, proc.stderr
    return tmp / "dist" / f"{TOP}.tar.gz"


def test_keygen_writes_a_private_key_only_the_owner_can_read_and_refuses_to_overwrite(keys):
    private, public, _ = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes() and b"BEGIN PUBLIC KEY" in public.read_bytes()
    proc = run_labbuild("keygen", "--out", str(private))
    assert proc.returncode == 1 and "already exists" in proc.stderr


def test_good_signature_verifies(signed, keys):
    result = verify_bundle(signed, keys[1])
    assert result.ok and result.signed and result.signature_checked
    proc = run_labbuild("verify", str(signed), "--key", str(keys[1]))
    assert proc.returncode == 0 and "signature valid" in proc.stdout
    unchecked = verify_bundle(signed)
    assert unchecked.ok and unchecked.signed and not unchecked.signature_checked


def test_openssl_agrees_with_the_signature(signed, keys, tmp_path):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed: the cross-check with an independent tool is skipped")
    dest = safe_extract(signed, tmp_path / "x", key=keys[1])
    proc = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(keys[1]), "-rawin",
                           "-in", str(dest / "manifest.json"), "-sigfile", str(dest / "manifest.json.sig")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr


def test_wrong_key_fails(signed, keys):
    result = verify_bundle(signed, keys[2])
    assert not result.ok and result.errors[0].file == "manifest.json.sig"
    proc = run_labbuild("verify", str(signed), "--key", str(keys[2]))
    assert proc.returncode == 1 and "another key" in proc.stderr


@pytest.mark.parametrize("rel", ["manifest.json.sig", "manifest.json", "compose.yaml", "SHA256SUMS"])
def test_tampered_signed_bundle_fails(signed, keys, tmp_path, rel):
    bad = flipped(signed, tmp_path / "bad.tar.gz", rel, offset=-1)
    result = verify_bundle(bad, keys[1])
    assert not result.ok
    if rel in ("manifest.json.sig", "manifest.json"):
        assert "manifest.json.sig" in {e.file for e in result.errors}


def test_unsigned_bundle_fails_when_a_key_is_required(tmp_path, keys):
    result = build_release(make_lab(tmp_path / "lab"), "1.0.0", out_dir=tmp_path / "d")
    check = verify_bundle(result.bundle, keys[1])
    assert not check.ok and "not signed" in check.errors[0].message
    with pytest.raises(BundleError):
        safe_extract(result.bundle, tmp_path / "x", key=keys[1])
    assert not (tmp_path / "x").exists()


def test_signed_releases_are_reproducible_and_immutable(tmp_path, keys):
    root = make_lab(tmp_path / "lab")
    first = build_release(root, "1.0.0", out_dir=tmp_path / "d", sign_key=keys[0])
    again = build_release(root, "1.0.0", out_dir=tmp_path / "d", sign_key=keys[0])
    assert again.noop and again.sha256 == first.sha256
    with pytest.raises(BundleError) as err:
        build_release(root, "1.0.0", out_dir=tmp_path / "d")  # unsigned now: different content
    assert any("signature" in p.message for p in err.value.problems)
    with pytest.raises(BundleError, match="signed by"):
        rebuild_release(root, "base-1.0.0", out_dir=tmp_path / "r")
    assert rebuild_release(root, "base-1.0.0", out_dir=tmp_path / "r", sign_key=keys[0]).sha256 == first.sha256


def test_bad_key_files_are_clear_errors(tmp_path, keys):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(BundleError, match="not an unencrypted PEM private key"):
        load_private_key(junk)
    proc = run_labbuild("verify", "whatever.tar.gz", "--key", str(junk))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = run_labbuild("verify", "whatever.tar.gz", "--key", str(keys[0]))  # a private key is not a public key
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
