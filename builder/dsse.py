"""DSSE envelopes (Dead Simple Signing Envelope v1): sign and verify a typed payload.

An envelope is JSON ``{"payload": B64(body), "payloadType": TYPE,
"signatures": [{"keyid": ID, "sig": B64(signature)}]}``. A signature never
covers the JSON: it covers the pre-authentication encoding

    PAE(TYPE, BODY) = "DSSEv1" SP LEN(TYPE) SP TYPE SP LEN(BODY) SP BODY

(LEN = byte length as ASCII decimal, SP = one space), so type confusion and
re-encoding cannot change what was signed. Signatures are made with
``builder.signing.raw_signature`` (DER ECDSA-SHA256, deterministic; or raw
Ed25519) and ``keyid`` is the signer's ``builder.signing.fingerprint``.
An envelope with ``signatures: []`` is a valid, unsigned envelope.

Rendering is canonical JSON (sorted keys, 2-space indent, trailing newline)
and signing deterministic: the same payload and key give the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from .errors import BundleError
from .fsutil import canonical_json
from .signing import (
    PrivateKey,
    PublicKey,
    fingerprint,
    raw_signature,
    raw_signature_valid,
)

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


@dataclass(frozen=True)
class DsseSignature:
    keyid: str
    sig: bytes             # raw signature bytes (base64-decoded)


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[DsseSignature, ...] = ()

    def to_json(self) -> dict:
        return {"payload": base64.b64encode(self.payload).decode("ascii"),
                "payloadType": self.payload_type,
                "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                               for s in self.signatures]}

    def render(self) -> bytes:
        """The envelope's file bytes (canonical JSON)."""
        return canonical_json(self.to_json()).encode("utf-8")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes a signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload_type: str, payload: bytes, private_key: PrivateKey) -> Envelope:
    """An envelope of ``payload`` signed once by ``private_key`` (keyid: its fingerprint)."""
    signature = DsseSignature(keyid=fingerprint(private_key.public_key()),
                              sig=raw_signature(private_key, pae(payload_type, payload)))
    return Envelope(payload_type, payload, (signature,))


def unsigned_envelope(payload_type: str, payload: bytes) -> Envelope:
    """An envelope of ``payload`` without signatures."""
    return Envelope(payload_type, payload, ())


def _b64(value, what: str, name: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{name}: {what} is missing or not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{name}: {what} is not base64") from None


def parse_envelope(raw: bytes, name: str = "DSSE envelope") -> Envelope:
    """Parse envelope bytes; ``BundleError`` (prefixed with ``name``) when malformed."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{name}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("payloadType"), str):
        raise BundleError(f"{name}: not a DSSE envelope (payloadType is missing)")
    signatures = doc.get("signatures")
    if not isinstance(signatures, list) or not all(isinstance(s, dict) for s in signatures):
        raise BundleError(f"{name}: signatures is not a list of objects")
    return Envelope(
        payload_type=doc["payloadType"],
        payload=_b64(doc.get("payload"), "payload", name),
        signatures=tuple(DsseSignature(keyid=str(s.get("keyid", "")),
                                       sig=_b64(s.get("sig"), f"signatures[{i}].sig", name))
                         for i, s in enumerate(signatures)))


def verified_signature(envelope: Envelope, public_key: PublicKey) -> DsseSignature | None:
    """The envelope's signature that verifies with ``public_key`` over the PAE, or None.

    The keyid is a hint only (DSSE: unauthenticated); every signature is tried.
    """
    message = pae(envelope.payload_type, envelope.payload)
    return next((s for s in envelope.signatures if raw_signature_valid(public_key, s.sig, message)), None)
