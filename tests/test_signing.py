"""Signing: keygen (ECDSA P-256 by default), release --sign, verify --key (good, wrong key,
tampered, unsigned), cross-checked with openssl; old Ed25519 bundles still verify."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from builder.bundle.release import build_release, rebuild_release
from builder.bundle.verify import safe_extract, verify_bundle
from builder.errors import BundleError
from builder.format.files import PROVENANCE, SIGNATURE, SIGSTORE, must_carry_provenance
from builder.format.manifest import Manifest
from builder.signing import (ECDSA_P256, ED25519, fingerprint, generate_keypair, key_type_of, load_private_key,
                             load_public_key, public_key_der, raw_signature, sign, signature_valid)
from test_bundle_release import LABBUILD, run_labbuild
from test_render import make_lab
from test_bundle_verify import TOP, flipped, read_members, regular, write_members


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


def test_a_key_from_a_pipe_still_verifies(signed, keys):
    """`--key <(vault read ...)` hands over a pipe: read (to MAX_KEY_BYTES), not refused as no regular file."""
    proc = subprocess.run([LABBUILD, "verify", str(signed), "--key", "/dev/stdin"], input=keys[1].read_bytes(),
                          capture_output=True, timeout=120)
    assert proc.returncode == 0 and b"signature valid" in proc.stdout, proc.stderr


def _openssl() -> str:
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is not installed: the cross-check with an independent tool is skipped")
    return openssl


def openssl_dgst_verifies(pub: Path, sig_b64_file: Path, data_file: Path, tmp_path: Path) -> bool:
    """`openssl dgst -sha256 -verify PUB -signature <(base64 -d SIG) DATA`, as the issue spells it."""
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(sig_b64_file.read_bytes()))
    proc = subprocess.run([_openssl(), "dgst", "-sha256", "-verify", str(pub), "-signature", str(der),
                           str(data_file)], capture_output=True, text=True)
    return proc.returncode == 0 and "Verified OK" in proc.stdout


def test_keygen_makes_ecdsa_p256_keys_by_default(keys):
    private, public, _ = keys
    assert key_type_of(load_private_key(private)) == ECDSA_P256 == key_type_of(load_public_key(public))
    proc = subprocess.run([_openssl(), "pkey", "-pubin", "-in", str(public), "-noout", "-text"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "prime256v1" in proc.stdout, proc.stdout + proc.stderr


def test_openssl_agrees_with_the_signature(signed, keys, tmp_path):
    dest = safe_extract(signed, tmp_path / "x", key=keys[1])
    assert openssl_dgst_verifies(keys[1], dest / "manifest.json.sig", dest / "manifest.json", tmp_path)
    (dest / "manifest.json").write_bytes((dest / "manifest.json").read_bytes() + b" ")
    assert not openssl_dgst_verifies(keys[1], dest / "manifest.json.sig", dest / "manifest.json", tmp_path)


def test_labbuild_accepts_a_signature_openssl_made(keys, tmp_path):
    data = tmp_path / "manifest.json"
    data.write_bytes(b'{"made": "by openssl"}\n')
    der = tmp_path / "sig.der"
    proc = subprocess.run([_openssl(), "dgst", "-sha256", "-sign", str(keys[0]), "-out", str(der), str(data)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pub = load_public_key(keys[1])
    assert signature_valid(pub, base64.b64encode(der.read_bytes()), data.read_bytes())
    assert signature_valid(pub, der.read_bytes(), data.read_bytes())  # DER as is, too
    assert not signature_valid(pub, base64.b64encode(der.read_bytes()), data.read_bytes() + b"x")


def test_ecdsa_signatures_are_deterministic_base64_der(keys):
    key = load_private_key(keys[0])
    first, again = sign(key, b"manifest bytes"), sign(key, b"manifest bytes")
    assert first == again and first != sign(key, b"other bytes")
    assert base64.b64decode(first, validate=True)[0] == 0x30  # a DER SEQUENCE
    assert not first.endswith(b"\n")


def test_fingerprints_are_stable_definitions(keys, old_pub):
    import hashlib
    pub = load_public_key(keys[1])
    assert fingerprint(pub) == "sha256:" + hashlib.sha256(public_key_der(pub)).hexdigest()
    assert fingerprint(load_public_key(old_pub)) == OLD_FINGERPRINT  # Ed25519: the raw key, as before


# Written by the Ed25519-only labbuild (before ECDSA): its key, a message, its signature, its fingerprint.
OLD_PUB_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAeFZHSi3DyTxHVN+4DNz8wW/HoXeTrkc3RPCjpoENS/I=
-----END PUBLIC KEY-----
"""
OLD_MESSAGE = b'{"name": "testlab-full-1.0.0"}\n'
OLD_SIGNATURE = base64.b64decode("3FPz0+J35J7aNdtR7QRgx8yEzV7wbZcDZMTVtvMrbAf+UNMNsvnaC4xPR/ZifanbyaZG0ck77pbkInjfhph8CQ==")
OLD_FINGERPRINT = "sha256:d30646189e2705ab266bfb51b1a5cad91adadbffccc0f46cf03ebe10450e0c3e"


@pytest.fixture
def old_pub(tmp_path) -> Path:
    path = tmp_path / "old.pub"
    path.write_bytes(OLD_PUB_PEM)
    return path


def test_old_ed25519_signatures_still_verify(old_pub):
    pub = load_public_key(old_pub)
    assert key_type_of(pub) == ED25519
    assert signature_valid(pub, OLD_SIGNATURE, OLD_MESSAGE)
    assert signature_valid(pub, base64.b64encode(OLD_SIGNATURE), OLD_MESSAGE)  # cosign's base64 form
    assert not signature_valid(pub, OLD_SIGNATURE, OLD_MESSAGE + b" ")


def test_an_ed25519_signed_bundle_verifies_and_keeps_the_old_raw_signature(tmp_path, old_pub):
    private, public = tmp_path / "ed.key", tmp_path / "ed.pub"
    generate_keypair(private, public, key_type=ED25519)
    key = load_private_key(private)
    assert len(sign(key, b"x")) == 64 and sign(key, b"x") == raw_signature(key, b"x")
    result = build_release(make_lab(tmp_path / "lab"), "1.0.0", out_dir=tmp_path / "d", sign_key=private)
    check = verify_bundle(result.bundle, public)
    assert check.ok and check.signature_checked
    dest = safe_extract(result.bundle, tmp_path / "x", key=public)
    proc = subprocess.run([_openssl(), "pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin",
                           "-in", str(dest / "manifest.json"), "-sigfile", str(dest / "manifest.json.sig")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr
    assert not verify_bundle(result.bundle, old_pub).ok  # another Ed25519 key


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


# --------------------------------------------------------------------------- what is reported as signed
# The signature and SHA256SUMS are not signed: whatever can be removed or added with them must not
# decide the trust state. Whether provenance is required comes from manifest.json (hashed, signed).

def _rewritten(bundle: Path, out: Path, *, drop: tuple[str, ...] = (), files: dict[str, bytes] | None = None,
               resum: bool = False) -> Path:
    """``bundle`` without ``drop`` and their SHA256SUMS lines, with ``files`` replaced or added
    (``resum``: SHA256SUMS made to match the replaced files, as a forger would)."""
    files = dict(files or {})
    members = [(info, files.pop(info.name.split("/", 1)[-1], data)) for info, data in read_members(bundle)
               if info.name.split("/", 1)[-1] not in drop]
    members += [regular(f"{TOP}/{rel}", data) for rel, data in files.items()]
    now = {info.name.split("/", 1)[-1]: data for info, data in members}
    lines = []
    for line in now["SHA256SUMS"].decode().splitlines():
        digest, rel = line.split("  ", 1)
        if rel not in drop:
            lines.append(f"{hashlib.sha256(now[rel]).hexdigest() if resum else digest}  {rel}\n")
    members = [(info, "".join(lines).encode() if info.name == f"{TOP}/SHA256SUMS" else data)
               for info, data in members]
    for info, data in members:
        info.size = len(data) if data is not None else 0
    return write_members(out, members)


def _member(bundle: Path, rel: str) -> bytes:
    return dict((i.name, d) for i, d in read_members(bundle))[f"{TOP}/{rel}"]


def test_provenance_stripped_from_a_signed_bundle_is_refused_with_and_without_a_key(signed, keys, tmp_path):
    stripped = _rewritten(signed, tmp_path / "stripped.tar.gz", drop=(PROVENANCE,))
    for key in (keys[1], None):
        result = verify_bundle(stripped, key)
        assert not result.ok and [e.file for e in result.errors] == [PROVENANCE], [e.render() for e in result.errors]
        assert "labbuild 0.2" in result.errors[0].message
    for args in (["verify", str(stripped), "--key", str(keys[1])], ["verify", str(stripped)]):
        proc = run_labbuild(*args)
        assert proc.returncode == 1 and "provenance.intoto.json: missing" in proc.stderr, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr and "OK" not in proc.stdout
    data = json.loads(run_labbuild("--json", "verify", str(stripped)).stdout)
    assert data["ok"] is False and data["provenance"] == "absent" and data["errors"][0]["file"] == PROVENANCE
    with pytest.raises(BundleError, match="failed verification"):    # what install and diff read through
        safe_extract(stripped, tmp_path / "x", key=keys[1])
    assert not (tmp_path / "x").exists()


def test_a_bundle_made_before_provenance_still_verifies_and_says_which_labbuild_made_it(tmp_path):
    unsigned = build_release(make_lab(tmp_path / "lab"), "1.0.0", profile="full", out_dir=tmp_path / "d").bundle
    old = replace(Manifest.loads(_member(unsigned, "manifest.json")), labbuild="0.1.0").dumps()
    bundle = _rewritten(unsigned, tmp_path / "old.tar.gz", drop=(PROVENANCE,), files={"manifest.json": old}, resum=True)
    proc = run_labbuild("verify", str(bundle))
    assert proc.returncode == 0 and "no provenance (made by labbuild 0.1.0, before 0.2.0)" in proc.stdout, proc.stderr
    assert not must_carry_provenance("0.1.9") and not must_carry_provenance("0.2.0-rc.1")
    assert must_carry_provenance("0.2.0") and must_carry_provenance("1.0.0") and must_carry_provenance("garbage")


@pytest.mark.parametrize("content", [b"", b"\n", b"bm90IGEgc2lnbmF0dXJl\n", b"\x00" * 63],
                         ids=["empty", "blank", "base64-not-der", "63-bytes"])
def test_an_empty_or_garbled_signature_file_is_damage_never_signed(signed, keys, tmp_path, content):
    bad = _rewritten(signed, tmp_path / "bad.tar.gz", files={SIGNATURE: content})
    for key in (None, keys[1]):
        result = verify_bundle(bad, key)
        assert not result.ok and not result.signed and not result.signature_checked
        assert SIGNATURE in {e.file for e in result.errors}, [e.render() for e in result.errors]
    data = json.loads(run_labbuild("--json", "verify", str(bad)).stdout)
    assert data["ok"] is False and data["signed"] is False
    for args in (["verify", str(bad)], ["verify", str(bad), "--key", str(keys[1])]):
        proc = run_labbuild(*args)
        assert proc.returncode == 1 and "manifest.json.sig: " in proc.stderr and "Traceback" not in proc.stderr
        assert "signed (pass --key" not in proc.stdout + proc.stderr


def test_signature_and_provenance_must_agree_on_being_signed(signed, keys, tmp_path):
    # the signatures stripped from a signed bundle: its provenance still says it was signed
    unsigned_now = _rewritten(_rewritten(signed, tmp_path / "a.tar.gz", drop=(SIGNATURE,)), tmp_path / "b.tar.gz",
                              drop=(SIGSTORE,))
    result = verify_bundle(unsigned_now)
    assert not result.ok and [(e.file, e.message) for e in result.errors] == [
        (PROVENANCE, "signed, but the bundle carries no signature (manifest.json.sig)")]
    # a signature of the right form added to an unsigned bundle: its provenance says it was not
    plain = build_release(make_lab(tmp_path / "lab"), "1.0.0", profile="full", out_dir=tmp_path / "d").bundle
    forged = _rewritten(plain, tmp_path / "forged.tar.gz", files={SIGNATURE: _member(signed, SIGNATURE)})
    result = verify_bundle(forged)
    assert not result.ok and [(e.file, e.message) for e in result.errors] == [
        (PROVENANCE, "unsigned, but the bundle is signed (manifest.json.sig)")]
