"""DSSE envelopes: the PAE, signatures openssl and securesystemslib accept, unsigned envelopes, tampering."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.dsse import IN_TOTO_PAYLOAD_TYPE, pae, parse_envelope, sign_envelope, unsigned_envelope, verified_signature
from builder.errors import BundleError
from builder.signing import ED25519, fingerprint, key_type_of, generate_keypair, load_private_key, load_public_key

PAYLOAD = b'{"_type": "https://in-toto.io/Statement/v1"}\n'


@pytest.fixture(scope="module", params=["ecdsa-p256", ED25519])
def keypair(request, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("keys")
    generate_keypair(tmp / "k.key", tmp / "k.pub", key_type=request.param)
    return tmp / "k.key", tmp / "k.pub"


def openssl() -> str:
    path = shutil.which("openssl")
    if not path:
        pytest.skip("openssl is not installed: the cross-check with an independent tool is skipped")
    return path


def test_pae_is_the_dsse_v1_encoding():
    # The example of the DSSE protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("t", b"") == b"DSSEv1 1 t 0 "
    assert pae("\u00e9", b"x") == b"DSSEv1 2 \xc3\xa9 1 x"  # lengths count bytes, not characters


def test_openssl_verifies_the_signature_over_the_pae(keypair, tmp_path):
    env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, load_private_key(keypair[0]))
    parsed = parse_envelope(env.render())
    (tmp_path / "pae.bin").write_bytes(pae(parsed.payload_type, parsed.payload))
    (tmp_path / "sig.bin").write_bytes(parsed.signatures[0].sig)
    if key_type_of(load_public_key(keypair[1])) == ED25519:
        cmd = [openssl(), "pkeyutl", "-verify", "-pubin", "-inkey", str(keypair[1]), "-rawin",
               "-in", str(tmp_path / "pae.bin"), "-sigfile", str(tmp_path / "sig.bin")]
    else:
        cmd = [openssl(), "dgst", "-sha256", "-verify", str(keypair[1]), "-signature", str(tmp_path / "sig.bin"),
               str(tmp_path / "pae.bin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / "pae.bin").write_bytes(pae(parsed.payload_type, parsed.payload + b" "))
    assert subprocess.run(cmd, capture_output=True).returncode != 0


def sslib_key(pub_path: Path):
    from securesystemslib.signer import SSlibKey
    pub = load_public_key(pub_path)
    return SSlibKey.from_crypto(pub, keyid=fingerprint(pub))


def test_securesystemslib_parses_and_verifies_the_envelope(keypair):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    rendered = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, load_private_key(keypair[0])).render()
    env = Envelope.from_dict(json.loads(rendered))
    assert env.payload == PAYLOAD and env.payload_type == IN_TOTO_PAYLOAD_TYPE
    assert list(env.verify([sslib_key(keypair[1])], 1)) == [fingerprint(load_public_key(keypair[1]))]
    tampered = Envelope.from_dict(json.loads(rendered))
    tampered.payload = PAYLOAD.replace(b"v1", b"v2")
    with pytest.raises(VerificationError):
        tampered.verify([sslib_key(keypair[1])], 1)


def test_signed_envelopes_are_reproducible_and_verify_here(keypair):
    key = load_private_key(keypair[0])
    first = sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, key).render()
    assert first == sign_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD, key).render()
    assert first.endswith(b"}\n") and json.loads(first)["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    pub = load_public_key(keypair[1])
    assert verified_signature(parse_envelope(first), pub).keyid == fingerprint(pub)
    forged = parse_envelope(first.replace(b'"payloadType": "application/vnd.in-toto+json"',
                                          b'"payloadType": "application/json"'))
    assert verified_signature(forged, pub) is None  # the type is signed too


def test_an_unsigned_envelope_has_no_signature_securesystemslib_accepts(keypair):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    rendered = unsigned_envelope(IN_TOTO_PAYLOAD_TYPE, PAYLOAD).render()
    assert json.loads(rendered)["signatures"] == []
    assert verified_signature(parse_envelope(rendered), load_public_key(keypair[1])) is None
    with pytest.raises(VerificationError):
        Envelope.from_dict(json.loads(rendered)).verify([sslib_key(keypair[1])], 1)


@pytest.mark.parametrize("raw, message", [
    (b"[", "not JSON"),
    (b'{"payload": "eA=="}', "payloadType is missing"),
    (b'{"payloadType": "t", "payload": "%%", "signatures": []}', "payload is not base64"),
    (b'{"payloadType": "t", "payload": "eA==", "signatures": {}}', "signatures is not a list"),
    (b'{"payloadType": "t", "payload": "eA==", "signatures": [{"sig": 1}]}', r"signatures\[0\].sig"),
])
def test_malformed_envelopes_are_clear_errors(raw, message):
    with pytest.raises(BundleError, match=f"provenance.intoto.json: .*{message}"):
        parse_envelope(raw, "provenance.intoto.json")
