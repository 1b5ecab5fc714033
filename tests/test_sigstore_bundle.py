"""manifest.json.sigstore.json: a Sigstore bundle v0.3 (message signature + key hint) that
@sigstore/verify accepts offline with the .pub, and that labbuild parses and checks itself."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from builder.errors import BundleError
from builder.signing import ED25519, generate_keypair, load_private_key, load_public_key, public_key_der, sign
from builder.sigstore_bundle import (MEDIA_TYPE, parse_message_bundle, public_key_hint, render_message_bundle,
                                     verify_message_bundle)
from support.sigstore_js import install_sigstore_js, sigstore_js_verify

MANIFEST = b'{\n  "name": "testlab-full-1.0.0",\n  "version": "1.0.0"\n}\n'


@pytest.fixture(scope="module")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("keys")
    generate_keypair(tmp / "release.key", tmp / "release.pub")
    generate_keypair(tmp / "other.key", tmp / "other.pub")
    return tmp / "release.key", tmp / "release.pub"


@pytest.fixture(scope="module")
def sigstore_js():
    return install_sigstore_js()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def test_the_bundle_has_the_v03_fields_and_the_same_signature_as_manifest_sig(keypair):
    key = load_private_key(keypair[0])
    doc = json.loads(render_message_bundle(key, MANIFEST))
    assert doc["mediaType"] == MEDIA_TYPE == "application/vnd.dev.sigstore.bundle.v0.3+json"
    hint = doc["verificationMaterial"]["publicKey"]["hint"]
    assert base64.b64decode(hint) == hashlib.sha256(public_key_der(key.public_key())).digest()
    digest = doc["messageSignature"]["messageDigest"]
    assert digest == {"algorithm": "SHA2_256", "digest": base64.b64encode(hashlib.sha256(MANIFEST).digest()).decode()}
    assert doc["messageSignature"]["signature"].encode() == sign(key, MANIFEST)  # = manifest.json.sig's content


def test_the_bundle_bytes_are_reproducible(keypair):
    key = load_private_key(keypair[0])
    assert render_message_bundle(key, MANIFEST) == render_message_bundle(key, MANIFEST)


def test_sigstore_js_verifies_the_bundle_offline_with_the_public_key(keypair, sigstore_js, tmp_path):
    bundle = write(tmp_path, "manifest.json.sigstore.json", render_message_bundle(load_private_key(keypair[0]), MANIFEST))
    manifest = write(tmp_path, "manifest.json", MANIFEST)
    proc = sigstore_js_verify(sigstore_js, bundle, manifest, keypair[1])
    assert proc.returncode == 0 and "verified" in proc.stdout, proc.stdout + proc.stderr


def test_sigstore_js_refuses_an_altered_manifest_and_another_key(keypair, sigstore_js, tmp_path):
    bundle = write(tmp_path, "b.json", render_message_bundle(load_private_key(keypair[0]), MANIFEST))
    altered = write(tmp_path, "manifest.json", MANIFEST.replace(b"1.0.0", b"1.0.1"))
    proc = sigstore_js_verify(sigstore_js, bundle, altered, keypair[1])
    assert proc.returncode == 1 and "SIGNATURE_ERROR" in proc.stderr, proc.stdout + proc.stderr
    manifest = write(tmp_path, "m.json", MANIFEST)
    proc = sigstore_js_verify(sigstore_js, bundle, manifest, keypair[1].with_name("other.pub"))
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_labbuild_verifies_its_bundle_and_names_what_is_wrong(keypair, tmp_path):
    key = load_private_key(keypair[0])
    pub, other = load_public_key(keypair[1]), load_public_key(keypair[1].with_name("other.pub"))
    raw = render_message_bundle(key, MANIFEST)
    assert verify_message_bundle(raw, MANIFEST, pub).hint == public_key_hint(pub)
    with pytest.raises(BundleError, match="messageDigest is not the sha256"):
        verify_message_bundle(raw, MANIFEST + b" ", pub)
    with pytest.raises(BundleError, match="does not verify with this key") as err:
        verify_message_bundle(raw, MANIFEST, other)
    assert "another key" in err.value.hint
    doc = json.loads(raw)
    doc["messageSignature"]["signature"] = base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()
    with pytest.raises(BundleError, match="does not verify"):
        verify_message_bundle(json.dumps(doc).encode(), MANIFEST, pub)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.2"), "mediaType"),
    (lambda d: d["verificationMaterial"].pop("publicKey"), "publicKey.hint"),
    (lambda d: d["messageSignature"]["messageDigest"].update(algorithm="SHA2_512"), "algorithm"),
    (lambda d: d["messageSignature"].update(signature="***"), "not base64"),
    (lambda d: d.pop("messageSignature"), "messageDigest is missing"),
])
def test_malformed_bundles_are_clear_errors(keypair, mutate, message):
    doc = json.loads(render_message_bundle(load_private_key(keypair[0]), MANIFEST))
    mutate(doc)
    with pytest.raises(BundleError, match=message):
        parse_message_bundle(json.dumps(doc).encode())
    with pytest.raises(BundleError, match="not JSON"):
        parse_message_bundle(b"{")


def test_an_ed25519_key_makes_a_bundle_labbuild_verifies(tmp_path):
    generate_keypair(tmp_path / "ed.key", tmp_path / "ed.pub", key_type=ED25519)
    raw = render_message_bundle(load_private_key(tmp_path / "ed.key"), MANIFEST)
    assert len(parse_message_bundle(raw).signature) == 64
    verify_message_bundle(raw, MANIFEST, load_public_key(tmp_path / "ed.pub"))
