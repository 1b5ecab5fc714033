"""The front door's key material, made on the target at install (issue 23); never in a bundle.

A release with ``access/lab.json`` (the front door is on) needs, in the install dir:

- ``DIR/door/ca.crt`` + ``ca.key``: the lab CA (ECDSA P-256, 10 years). The
  operator's browser trusts ``ca.crt`` (the authelia runbook says how); the
  UIs that sign in with OIDC trust it through ``[front_door.oidc.env] ca_file``.
- ``DIR/door/lab.crt`` + ``lab.key``: the wildcard certificate of ``*.<domain>``
  and ``<domain>``, signed by the CA (825 days), served by Traefik (tls.yml).
- ``DIR/door/oidc-jwks.pem``: the provider's OIDC signing key (RSA 2048, RS256).
- ``DIR/access/``: the provider's users directory (``labbuild users`` writes
  ``users_database.yml`` in it).

Each file is made once and kept across upgrades (like DIR/.env); the
certificate is made again when the domain changed or it expires within 30
days. Private keys are 0600, certificates 0644, written atomically.
Operator-supplied certificates: put them at ``DIR/door/lab.crt``/``lab.key``
(and their CA at ``ca.crt``) before install; they are kept as long as they
cover the domain.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..errors import InstallError
from ..fsutil import atomic_write
from ..host.auditlog import record
from ..host.userdb import read_release_access

DOOR_DIR, ACCESS_DIR = "door", "access"
DOMAIN_RE = re.compile(r"^(?=.{1,200}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
RENEW_BEFORE = _dt.timedelta(days=30)


def door_domain(release: Path) -> str | None:
    """The front door's domain of a staged release, or None when it has no front door."""
    found = read_release_access(release)
    if found is None:
        return None
    path, data = found
    try:
        domain = data["domain"]
    except (KeyError, TypeError) as exc:
        raise InstallError(f"{path}: not the front door's lab.json ({exc})",
                           hint="the bundle is damaged or not made by labbuild; rebuild it") from None
    if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
        raise InstallError(f"{path}: domain {domain!r} is not a DNS domain", hint="fix lab.toml [access] domain")
    return domain


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Local AI Lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(door: Path, now: _dt.datetime) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("Local AI Lab CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    atomic_write(door / "ca.key", _pem_key(key), mode=0o600)
    atomic_write(door / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return key, cert


def _covers(cert_path: Path, domain: str, now: _dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return {domain, f"*.{domain}"} <= names and cert.not_valid_after_utc - RENEW_BEFORE > now


def _make_leaf(door: Path, domain: str, ca_key, ca_cert, now: _dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(f"*.{domain}")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{domain}"), x509.DNSName(domain)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    atomic_write(door / "lab.key", _pem_key(key), mode=0o600)
    atomic_write(door / "lab.crt", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def ensure_door_material(install_dir: Path, release: Path, command: str = "install") -> list[str]:
    """Make what the release's front door needs and DIR lacks (see the module docstring);
    return the files made (relative to DIR), recorded in DIR/audit.log as done by ``command``
    (file names only). Nothing when the release has no front door."""
    domain = door_domain(release)
    if domain is None:
        return []
    door, access = install_dir / DOOR_DIR, install_dir / ACCESS_DIR
    door.mkdir(mode=0o700, exist_ok=True)
    access.mkdir(mode=0o700, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    made: list[str] = []
    have_ca = (door / "ca.crt").is_file() and (door / "ca.key").is_file()
    if not (_covers(door / "lab.crt", domain, now) and (door / "lab.key").is_file()):
        if have_ca:
            try:
                ca_key = serialization.load_pem_private_key((door / "ca.key").read_bytes(), password=None)
                ca_cert = x509.load_pem_x509_certificate((door / "ca.crt").read_bytes())
            except (OSError, ValueError, TypeError) as exc:
                raise InstallError(f"{door}/ca.key or ca.crt cannot be read ({exc})",
                                   hint=f"remove {door}/ca.* to have a new lab CA made "
                                        "(browsers must trust it again)") from None
        elif (door / "ca.crt").exists():
            raise InstallError(f"{door}/lab.crt does not cover {domain} (or expires within 30 days) and there is "
                               f"no {door}/ca.key to sign a new one with",
                               hint=f"put a certificate for *.{domain} and {domain} at {door}/lab.crt (key: lab.key), "
                                    f"or remove {door}/ca.crt to have a lab CA made")
        else:
            ca_key, ca_cert = _make_ca(door, now)
            made += [f"{DOOR_DIR}/ca.crt", f"{DOOR_DIR}/ca.key"]
        _make_leaf(door, domain, ca_key, ca_cert, now)
        made += [f"{DOOR_DIR}/lab.crt", f"{DOOR_DIR}/lab.key"]
    if not (door / "oidc-jwks.pem").is_file():
        atomic_write(door / "oidc-jwks.pem", _pem_key(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                     mode=0o600)
        made.append(f"{DOOR_DIR}/oidc-jwks.pem")
    if made:
        record(install_dir, command, [], [door_provider(release)], detail="front door: made " + ", ".join(made))
    return made


def door_provider(release: Path) -> str:
    """The front door's provider service named by the release's access/lab.json."""
    found = read_release_access(release)
    provider = found[1].get("provider") if found is not None and isinstance(found[1], dict) else None
    return provider if isinstance(provider, str) and provider else "front-door"
