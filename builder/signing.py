"""Ed25519 signatures of bundles, for air-gapped trust.

Checksums prove a bundle is intact; a signature proves who made it. The
signature covers the bytes of ``manifest.json``, which lists the sha256 of
every other file, so one signature covers the whole bundle.

Formats (contract):
- private key: PEM, PKCS#8, unencrypted, written with mode 0600 by ``keygen``;
- public key: PEM, SubjectPublicKeyInfo;
- signature: ``manifest.json.sig`` in the bundle (``builder.bundle.layout.SIGNATURE``), the raw 64-byte Ed25519
  signature (so ``openssl pkeyutl -verify -rawin`` can check it too).
Ed25519 is deterministic: the same key and manifest give the same
signature, so signed releases stay reproducible.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BundleError
from .fsutil import atomic_write


def generate_keypair(private_path: Path, public_path: Path, *, force: bool = False) -> str:
    """Write a new Ed25519 key pair; return the public key's fingerprint.

    Refuses to overwrite existing files unless ``force``.
    """
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise BundleError(f"{path} already exists", hint="pick another --out path, or pass --force")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write(private_path, private_pem, mode=0o600)
    atomic_write(public_path, public_pem, mode=0o644)
    return fingerprint(key.public_key())


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such {what}", hint="create a key pair with `labbuild keygen`") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what}: {exc.strerror}") from None


def _load_key(path: Path, what: str, load, kind: type, hint: str):
    data = _read(path, what)
    try:
        key = load(data)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted PEM {what} ({exc})", hint=hint) from None
    if not isinstance(key, kind):
        raise BundleError(f"{path}: not an Ed25519 {what}", hint=hint)
    return key


def load_private_key(path: Path):
    """The Ed25519 private key in ``path`` (PEM, PKCS#8)."""
    return _load_key(path, "private key", lambda d: serialization.load_pem_private_key(d, password=None),
                     Ed25519PrivateKey, "pass the private key written by `labbuild keygen`")


def load_public_key(path: Path):
    """The Ed25519 public key in ``path`` (PEM)."""
    return _load_key(path, "public key", serialization.load_pem_public_key,
                     Ed25519PublicKey, "pass the .pub file written by `labbuild keygen`")


def fingerprint(public_key) -> str:
    """``sha256:<hex>`` of the raw 32-byte public key: how records name a signer."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def sign(private_key, data: bytes) -> bytes:
    """The raw 64-byte Ed25519 signature of ``data``."""
    return private_key.sign(data)


def signature_valid(public_key, signature: bytes, data: bytes) -> bool:
    try:
        public_key.verify(signature, data)
        return True
    except InvalidSignature:
        return False
