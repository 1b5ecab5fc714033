"""Keys and signatures of bundles: ECDSA P-256 (cosign's key flow), Ed25519 kept for old bundles.

Checksums prove a bundle is intact; a signature proves who made it. The
signature covers the bytes of ``manifest.json``, which lists the sha256 of
every other file, so one signature covers the whole bundle.

Formats (contract):
- private key: PEM, PKCS#8, unencrypted, written with mode 0600 by ``keygen``;
- public key: PEM, SubjectPublicKeyInfo, beside it as ``.pub``;
- ``manifest.json.sig`` (``builder.format.files.SIGNATURE``; what ``sign`` returns):
  - ECDSA P-256 key (the default): the base64 of the DER ECDSA signature over
    the data with SHA-256 — what ``cosign verify-blob --key K.pub --signature
    manifest.json.sig manifest.json`` and ``openssl dgst -sha256 -verify K.pub
    -signature <(base64 -d manifest.json.sig) manifest.json`` accept;
  - Ed25519 key (``key_type="ed25519"``, the scheme of labbuild before ECDSA):
    the raw 64-byte signature, unchanged, so releases signed that way rebuild
    bit for bit and old bundles still verify.
- fingerprint (how release records name a signer): ``sha256:<hex>`` of the DER
  SubjectPublicKeyInfo for ECDSA; of the raw 32-byte key for Ed25519 (the
  definition old records were written with).

ECDSA signatures are randomised unless the nonce is derived from key and
message (RFC 6979). Signing here is always deterministic, so a signed
release stays reproducible: same key + same manifest = same bytes.

``raw_signature`` / ``raw_signature_valid`` work on the signature bytes
themselves (DER for ECDSA, 64 bytes for Ed25519): the Sigstore bundle and the
DSSE envelope carry those, base64-encoded by their own formats.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .errors import BundleError, LabbuildError
from .fsutil import CapExceeded, atomic_write, read_capped
from .limits import MAX_KEY_BYTES

ECDSA_P256 = "ecdsa-p256"
ED25519 = "ed25519"
KEY_TYPES = (ECDSA_P256, ED25519)
DEFAULT_KEY_TYPE = ECDSA_P256

PrivateKey = Union[ec.EllipticCurvePrivateKey, Ed25519PrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, Ed25519PublicKey]

_ED25519_SIGNATURE_SIZE = 64


def _is_ed25519(key) -> bool:
    return isinstance(key, (Ed25519PrivateKey, Ed25519PublicKey))


def generate_keypair(private_path: Path, public_path: Path, *, force: bool = False,
                     key_type: str = DEFAULT_KEY_TYPE) -> str:
    """Write a new key pair (ECDSA P-256 unless ``key_type="ed25519"``); return its fingerprint.

    The private key is written with mode 0600. Refuses to overwrite existing
    files unless ``force``.
    """
    if key_type not in KEY_TYPES:
        raise BundleError(f"unknown key type {key_type!r}", hint=f"use one of {', '.join(KEY_TYPES)}")
    for path in (private_path, public_path):
        if Path(path).exists() and not force:
            raise BundleError(f"{path} already exists", hint="pick another --out path, or pass --force")
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == ECDSA_P256 \
        else Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    atomic_write(private_path, private_pem, mode=0o600)
    atomic_write(public_path, public_key_pem(key.public_key()), mode=0o644)
    return fingerprint(key.public_key())


def read_key_file(path: Path, what: str, hint: str, *, error: type[LabbuildError] = BundleError) -> bytes:
    """The bytes of the key file ``path``: a regular file or a pipe (``--key <(...)``), at most
    ``MAX_KEY_BYTES`` (a PEM key is under 1 KiB; /dev/zero or a FIFO that never ends is refused,
    not read into memory). ``error`` naming the file, ``what`` it should hold and ``hint`` otherwise.
    Every reader of a key file (signing keys, backup recipients and identities) goes through here."""
    try:
        return read_capped(path, MAX_KEY_BYTES, pipes=True)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}", hint=hint) from None
    except CapExceeded as exc:
        raise error(f"{exc}: not a {what} (a PEM key file is under 1 KiB)", hint=hint) from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}", hint=hint) from None


def _check_supported(key, path: Path, what: str, hint: str):
    if _is_ed25519(key) or isinstance(getattr(key, "curve", None), ec.SECP256R1):
        return key
    raise BundleError(f"{path}: not an ECDSA P-256 or Ed25519 {what}", hint=hint)


def load_private_key(path: Path) -> PrivateKey:
    """The ECDSA P-256 or Ed25519 private key in ``path`` (PEM, PKCS#8, unencrypted)."""
    hint = "pass the private key written by `labbuild keygen`"
    data = read_key_file(path, "private key", hint)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted PEM private key ({exc})", hint=hint) from None
    return _check_supported(key, path, "private key", hint)


def load_public_key(path: Path) -> PublicKey:
    """The ECDSA P-256 or Ed25519 public key in ``path`` (PEM SubjectPublicKeyInfo, e.g. cosign.pub)."""
    hint = "pass the .pub file written by `labbuild keygen`"
    data = read_key_file(path, "public key", hint)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not a PEM public key ({exc})", hint=hint) from None
    return _check_supported(key, path, "public key", hint)


def key_type_of(key: PrivateKey | PublicKey) -> str:
    """``"ecdsa-p256"`` or ``"ed25519"``."""
    return ED25519 if _is_ed25519(key) else ECDSA_P256


def public_key_der(public_key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``public_key``."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(public_key: PublicKey) -> bytes:
    """The PEM SubjectPublicKeyInfo of ``public_key`` (the ``.pub`` file)."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key: PublicKey) -> str:
    """``sha256:<hex>`` naming a signer in release records (see the module docstring)."""
    if _is_ed25519(public_key):
        material = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        material = public_key_der(public_key)
    return "sha256:" + hashlib.sha256(material).hexdigest()


def raw_signature(private_key: PrivateKey, data: bytes) -> bytes:
    """The signature bytes of ``data``: DER ECDSA-SHA256 (deterministic, RFC 6979), or raw Ed25519."""
    if _is_ed25519(private_key):
        return private_key.sign(data)
    # RFC 6979 nonces: the signature is a function of key and message only.
    return private_key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def raw_signature_valid(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` (bytes as ``raw_signature`` makes them) signs ``data`` for ``public_key``."""
    try:
        if _is_ed25519(public_key):
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def sign(private_key: PrivateKey, data: bytes) -> bytes:
    """The content of ``manifest.json.sig`` for ``data`` (see the module docstring)."""
    signature = raw_signature(private_key, data)
    return signature if _is_ed25519(private_key) else base64.b64encode(signature)


def _b64decode(text: bytes) -> bytes | None:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def raw_signature_form_ok(signature: bytes) -> bool:
    """Whether ``signature`` has the form of one ``raw_signature`` makes (a DER ECDSA
    signature, or 64 bytes for Ed25519). The form only: no key, nothing proved."""
    if len(signature) == _ED25519_SIGNATURE_SIZE:
        return True
    try:
        decode_dss_signature(signature)
    except ValueError:
        return False
    return True


def signature_form_problem(signature: bytes) -> str | None:
    """Why a ``manifest.json.sig`` content cannot be a signature in any form ``signature_valid``
    accepts, or None. Without a key this decides whether a bundle counts as signed: an empty
    or garbled file is damage, never a signature."""
    if not signature.strip():
        return "empty: not a signature"
    decoded = _b64decode(signature)
    if raw_signature_form_ok(signature) or (decoded is not None and raw_signature_form_ok(decoded)):
        return None
    return "not a signature (neither the base64 of a DER ECDSA signature nor a 64-byte Ed25519 one)"


def signature_valid(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether a ``manifest.json.sig`` content signs ``data`` for ``public_key``.

    ECDSA: base64 of the DER signature (cosign's and labbuild's form), or the
    DER bytes themselves. Ed25519: the raw 64 bytes (old labbuild bundles), or
    their base64 (cosign's form).
    """
    if _is_ed25519(public_key) and len(signature) == _ED25519_SIGNATURE_SIZE:
        return raw_signature_valid(public_key, signature, data)
    decoded = _b64decode(signature)
    if decoded is not None and raw_signature_valid(public_key, decoded, data):
        return True
    return not _is_ed25519(public_key) and raw_signature_valid(public_key, signature, data)
