"""Backups encrypted to a public key (``labbuild backup --recipient PUB``).

Keys are X25519 in PEM, e.g. made with OpenSSL::

    openssl genpkey -algorithm X25519 -out backup-key.pem        # keep offline: restores need it
    openssl pkey -in backup-key.pem -pubout -out backup-key.pub  # give this to `backup --recipient`

An encrypted backup is the plain backup tar (``builder.backups.backupfile``)
sealed in fixed-size chunks, format 1::

    magic      b"LABBACKUP1\\n"                        11 bytes
    epk        ephemeral X25519 public key            32 bytes
    rid        sha256(recipient public key)[:8]        8 bytes (names the key it needs)
    chunk      plaintext chunk size, big-endian        4 bytes (1 MiB)
    chunks     AES-256-GCM(key, nonce_i, plaintext_i, aad = header || final_i)

``key = HKDF-SHA256(X25519(ephemeral, recipient), salt = epk || recipient public key,
info = "labbuild-backup-v1 aes-256-gcm")``; ``nonce_i`` is 4 zero bytes and the
chunk number (8 bytes, big-endian); ``final_i`` is 1 for the last chunk, else 0.
Every chunk but the last holds exactly ``chunk`` plaintext bytes (the last may be
empty), so truncation, reordering or a flipped bit fail authentication. Memory
stays at two chunks whatever the backup's size.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import BackupError
from ..signing import read_key_file

MAGIC = b"LABBACKUP1\n"
CHUNK = 1 << 20
TAG = 16
HEADER_SIZE = len(MAGIC) + 32 + 8 + 4
INFO = b"labbuild-backup-v1 aes-256-gcm"


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_recipient(path: Path) -> X25519PublicKey:
    """An X25519 public key from a PEM file; BackupError naming the file otherwise."""
    hint = "make one: openssl genpkey -algorithm X25519 -out k.pem; openssl pkey -in k.pem -pubout -out k.pub"
    data = read_key_file(path, "public key file", hint, error=BackupError)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise BackupError(f"{path}: not a PEM public key ({exc})", hint=hint) from None
    if not isinstance(key, X25519PublicKey):
        raise BackupError(f"{path}: a {type(key).__name__.lstrip('_')} key; backups are encrypted to X25519 keys",
                          hint="openssl genpkey -algorithm X25519 -out k.pem; openssl pkey -in k.pem -pubout")
    return key


def load_identity(path: Path) -> X25519PrivateKey:
    """An X25519 private key from a PEM file (unencrypted PKCS#8)."""
    data = read_key_file(path, "private key file", "pass the X25519 private key (PEM) the backup was sealed to",
                         error=BackupError)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BackupError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, X25519PrivateKey):
        raise BackupError(f"{path}: not an X25519 private key")
    return key


def _key(shared: bytes, epk: bytes, recipient: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=INFO)
    return AESGCM(hkdf.derive(shared))


def _nonce(i: int) -> bytes:
    return b"\0\0\0\0" + struct.pack(">Q", i)


def is_encrypted(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def encrypt_stream(src: BinaryIO, dst: BinaryIO, recipient: X25519PublicKey) -> None:
    """Seal ``src`` (read to its end) into ``dst`` for ``recipient``."""
    eph = X25519PrivateKey.generate()
    epk, rpk = _raw(eph.public_key()), _raw(recipient)
    header = MAGIC + epk + hashlib.sha256(rpk).digest()[:8] + struct.pack(">I", CHUNK)
    aead = _key(eph.exchange(recipient), epk, rpk)
    dst.write(header)
    i, block = 0, src.read(CHUNK)
    while True:
        following = src.read(CHUNK) if len(block) == CHUNK else b""
        final = not following
        dst.write(aead.encrypt(_nonce(i), block, header + (b"\1" if final else b"\0")))
        if final:
            return
        i, block = i + 1, following


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identity: X25519PrivateKey, where: str) -> None:
    """Open a sealed backup from ``src`` into ``dst``; BackupError when it does not authenticate."""
    header = src.read(HEADER_SIZE)
    if len(header) != HEADER_SIZE or not header.startswith(MAGIC):
        raise BackupError(f"{where}: not an encrypted labbuild backup")
    epk, rid = header[len(MAGIC):len(MAGIC) + 32], header[len(MAGIC) + 32:len(MAGIC) + 40]
    (chunk,) = struct.unpack(">I", header[-4:])
    if not 0 < chunk <= 64 << 20:
        raise BackupError(f"{where}: bad chunk size {chunk} in the header")
    rpk = _raw(identity.public_key())
    if hashlib.sha256(rpk).digest()[:8] != rid:
        raise BackupError(f"{where}: encrypted to another key (key id {rid.hex()}, yours is "
                          f"{hashlib.sha256(rpk).digest()[:8].hex()})", hint="pass the matching --identity")
    aead = _key(identity.exchange(X25519PublicKey.from_public_bytes(epk)), epk, rpk)
    i, block = 0, src.read(chunk + TAG)
    while True:
        following = src.read(chunk + TAG) if len(block) == chunk + TAG else b""
        final = not following
        try:
            dst.write(aead.decrypt(_nonce(i), block, header + (b"\1" if final else b"\0")))
        except InvalidTag:
            raise BackupError(f"{where}: chunk {i} does not authenticate (offset {HEADER_SIZE + i * (chunk + TAG)})",
                              hint="the encrypted backup was changed, truncated or damaged") from None
        if final:
            return
        i, block = i + 1, following
