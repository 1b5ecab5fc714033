"""``manifest.json.sigstore.json``: the bundle signature as a Sigstore bundle (v0.3), for offline verifiers.

The same ECDSA signature as ``manifest.json.sig``, wrapped in the Sigstore
bundle format (protobuf-specs ``dev.sigstore.bundle.v1.Bundle``, JSON form)
so tools that take bundles (``@sigstore/verify``, sigstore-go, cosign's
``--bundle``) can check it offline with the public key:

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": H}, "tlogEntries": []},
     "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": B64(sha256(data))},
                          "signature": B64(DER signature)}}

- key material is a public-key *hint* only (no certificate: no Fulcio, no
  identity); the verifier brings the key. ``H`` is the base64 of the sha256 of
  the key's DER SubjectPublicKeyInfo, as sigstore-go and cosign compute it.
- no transparency-log entry and no timestamp: an air-gapped bundle has none,
  so verifiers must be told not to demand them (``tlogThreshold: 0``,
  ``timestampThreshold: 0`` in ``@sigstore/verify``; ``--insecure-ignore-tlog``
  in cosign).
- the bytes are canonical JSON and the signature deterministic (see
  ``builder.signing``), so the file is reproducible.

Pure functions on bytes: ``render_message_bundle`` builds, ``verify_message_bundle``
parses and checks (raising ``BundleError`` naming what is wrong).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from .errors import BundleError
from .fsutil import canonical_json
from .signing import (
    PrivateKey,
    PublicKey,
    public_key_der,
    raw_signature,
    raw_signature_valid,
)

SIGSTORE_BUNDLE_NAME = "manifest.json.sigstore.json"
MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SHA2_256 = "SHA2_256"


@dataclass(frozen=True)
class MessageBundle:
    """What a message-signature bundle with a public-key hint says."""

    hint: str
    digest: bytes          # sha256 of the signed data, as the bundle claims it
    signature: bytes       # the raw signature (DER for ECDSA)


def public_key_hint(public_key: PublicKey) -> str:
    """The Sigstore public-key hint: base64 of sha256 of the DER SubjectPublicKeyInfo."""
    return base64.b64encode(hashlib.sha256(public_key_der(public_key)).digest()).decode("ascii")


def message_bundle_json(public_key: PublicKey, signature: bytes, data: bytes) -> dict:
    """The bundle (as JSON data) for a raw ``signature`` of ``data`` made by ``public_key``'s pair."""
    return {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": public_key_hint(public_key)}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": SHA2_256,
                              "digest": base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")},
            "signature": base64.b64encode(signature).decode("ascii"),
        },
    }


def render_message_bundle(private_key: PrivateKey, data: bytes) -> bytes:
    """The bytes of ``manifest.json.sigstore.json`` for ``data`` (e.g. manifest.json's bytes)."""
    bundle = message_bundle_json(private_key.public_key(), raw_signature(private_key, data), data)
    return canonical_json(bundle).encode("utf-8")


def _b64(value, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: {where} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: {where} is not base64") from None


def parse_message_bundle(raw: bytes) -> MessageBundle:
    """Parse a v0.3 message-signature bundle with a public-key hint; ``BundleError`` when it is not one."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("mediaType") != MEDIA_TYPE:
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: mediaType is not {MEDIA_TYPE}")
    material = doc.get("verificationMaterial")
    public_key = material.get("publicKey") if isinstance(material, dict) else None
    if not isinstance(public_key, dict) or not isinstance(public_key.get("hint"), str):
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: verificationMaterial.publicKey.hint is missing",
                          hint="labbuild bundles are signed with a key, not a certificate")
    signature = doc.get("messageSignature")
    if not isinstance(signature, dict) or not isinstance(signature.get("messageDigest"), dict):
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: messageSignature.messageDigest is missing")
    if signature["messageDigest"].get("algorithm") != SHA2_256:
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: messageSignature.messageDigest.algorithm is not {SHA2_256}")
    return MessageBundle(hint=public_key["hint"],
                         digest=_b64(signature["messageDigest"].get("digest"), "messageSignature.messageDigest.digest"),
                         signature=_b64(signature.get("signature"), "messageSignature.signature"))


def verify_message_bundle(raw: bytes, data: bytes, public_key: PublicKey) -> MessageBundle:
    """Check that the bundle ``raw`` signs ``data`` with ``public_key``; return what it says.

    Raises ``BundleError`` when the bundle is malformed, its digest is not
    ``data``'s, or the signature does not verify with this key.
    """
    bundle = parse_message_bundle(raw)
    if bundle.digest != hashlib.sha256(data).digest():
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: messageDigest is not the sha256 of the signed file",
                          hint="the bundle belongs to another manifest.json, or one of them was altered")
    if not raw_signature_valid(public_key, bundle.signature, data):
        other = bundle.hint != public_key_hint(public_key)
        raise BundleError(f"{SIGSTORE_BUNDLE_NAME}: signature does not verify with this key",
                          hint="its key hint names another key" if other else "the bundle was altered")
    return bundle
