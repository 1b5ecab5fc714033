"""The front door's key material on the target (issue 23): made by `labbuild install`
(builder/install/door.py, Python `cryptography`) and by install.sh (openssl), checked with a
real X.509 verification, kept across upgrades, made again only when the domain changes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from builder.errors import InstallError
from builder.install.door import ensure_door_material

REPO = Path(__file__).resolve().parents[1]
INSTALL_SH = REPO / "builder" / "templates" / "install.sh"
FILES = ("ca.crt", "ca.key", "lab.crt", "lab.key", "oidc-jwks.pem")


def _release(tmp_path: Path, domain: str = "lab.localhost") -> Path:
    rel = tmp_path / "release"
    (rel / "access").mkdir(parents=True, exist_ok=True)
    doc = {"domain": domain, "provider": "authelia", "roles": {}, "projects": {}, "services": {}}
    (rel / "access" / "lab.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return rel


def _check(install_dir: Path, domain: str) -> x509.Certificate:
    door = install_dir / "door"
    assert stat.S_IMODE(door.stat().st_mode) == 0o700
    assert stat.S_IMODE((install_dir / "access").stat().st_mode) == 0o700
    for name in ("ca.key", "lab.key", "oidc-jwks.pem"):
        assert stat.S_IMODE((door / name).stat().st_mode) == 0o600, name
    for name in ("ca.crt", "lab.crt"):
        assert stat.S_IMODE((door / name).stat().st_mode) == 0o644, name
    ca = x509.load_pem_x509_certificate((door / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((door / "lab.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    leaf.verify_directly_issued_by(ca)               # a real signature check against the CA
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert set(sans) == {f"*.{domain}", domain}
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    key = serialization.load_pem_private_key((door / "lab.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    jwks = (door / "oidc-jwks.pem").read_text()
    assert jwks.startswith("-----BEGIN PRIVATE KEY-----\n")   # the PEM form Authelia's schema accepts
    assert isinstance(serialization.load_pem_private_key(jwks.encode(), password=None), rsa.RSAPrivateKey)
    return leaf


def test_labbuild_install_makes_the_door_material_once(tmp_path) -> None:
    dir_ = tmp_path / "lab"
    dir_.mkdir()
    rel = _release(tmp_path)
    made = ensure_door_material(dir_, rel)
    assert sorted(made) == sorted(f"door/{f}" for f in FILES)
    leaf = _check(dir_, "lab.localhost")
    before = {f: (dir_ / "door" / f).read_bytes() for f in FILES}
    from builder.host.auditlog import read_entries
    (entry,) = read_entries(dir_).entries                  # recorded: file names only, never a key
    assert entry.command == "install" and entry.services == ("authelia",) and "door/ca.key" in entry.detail
    assert "PRIVATE" not in (dir_ / "audit.log").read_text()
    assert ensure_door_material(dir_, rel) == []            # an upgrade keeps everything
    assert {f: (dir_ / "door" / f).read_bytes() for f in FILES} == before
    # a new domain: a new certificate from the same CA; the CA and the OIDC key stay
    rel2 = _release(tmp_path / "two", "ai.example.test")
    assert sorted(ensure_door_material(dir_, rel2)) == ["door/lab.crt", "door/lab.key"]
    assert _check(dir_, "ai.example.test").serial_number != leaf.serial_number
    assert (dir_ / "door" / "ca.crt").read_bytes() == before["ca.crt"]


def test_no_front_door_no_material_and_a_bad_domain_is_refused(tmp_path) -> None:
    dir_ = tmp_path / "lab"
    dir_.mkdir()
    (tmp_path / "plain").mkdir()
    assert ensure_door_material(dir_, tmp_path / "plain") == [] and not (dir_ / "door").exists()
    with pytest.raises(InstallError, match="is not a DNS domain"):
        ensure_door_material(dir_, _release(tmp_path, "bad domain"))


def _door_block() -> str:
    text = INSTALL_SH.read_text()
    start, end = text.index("# door: begin"), text.index("# door: end")
    return text[start:end]


def _run_sh(dir_: Path, domain: str, work: Path) -> subprocess.CompletedProcess:
    script = ("set -eu\ndie() { printf 'error: %s\\n' \"$1\" >&2; exit 1; }\nsay() { printf '%s\\n' \"$*\" >&2; }\n"
              + _door_block())
    env = {**os.environ, "DIR": str(dir_), "DOOR_DOMAIN": domain, "WORK": str(work)}
    return subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_install_sh_makes_the_same_material_with_openssl(tmp_path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    dir_, work = tmp_path / "lab", tmp_path / "work"
    dir_.mkdir()
    work.mkdir()
    proc = _run_sh(dir_, "lab.localhost", work)
    assert proc.returncode == 0, proc.stderr
    _check(dir_, "lab.localhost")
    before = {f: (dir_ / "door" / f).read_bytes() for f in FILES}
    proc = _run_sh(dir_, "lab.localhost", work)                # kept on an upgrade
    assert proc.returncode == 0 and "made" not in proc.stderr, proc.stderr
    assert {f: (dir_ / "door" / f).read_bytes() for f in FILES} == before
    # what one installer made, the other keeps: Python sees openssl's files as complete
    assert ensure_door_material(dir_, _release(tmp_path)) == []
    proc = _run_sh(dir_, "ai.example.test", work)              # a new domain: a new certificate
    assert proc.returncode == 0, proc.stderr
    _check(dir_, "ai.example.test")
    assert (dir_ / "door" / "ca.crt").read_bytes() == before["ca.crt"]


def test_install_sh_refuses_a_front_door_bundle_without_openssl_before_touching_anything(lab_copy, tmp_path) -> None:
    """The real phase4 bundle; a PATH holding every tool of the host except openssl."""
    import tarfile

    from builder.bundle.release import build_release
    bundle = build_release(lab_copy, "9.9.9", profile="phase4", out_dir=tmp_path / "dist", progress=False).bundle
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    assert (top / "access" / "lab.json").is_file()
    tools = tmp_path / "bin"
    tools.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for entry in sorted(Path(d).iterdir()) if Path(d).is_dir() else ():
            if entry.name != "openssl" and not (tools / entry.name).exists():
                (tools / entry.name).symlink_to(entry)
    target = tmp_path / "lab"
    proc = subprocess.run(["sh", "install.sh", "--dir", str(target)], cwd=top, capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tools)}, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "front door needs openssl" in proc.stderr and "nothing was installed" in proc.stderr
    assert not (target / "releases").exists() and not (target / "door").exists()


def _operator_cert(door: Path, domain: str) -> None:
    """An operator's own CA (its key kept elsewhere) and certificate for ``domain``."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Operator CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=900))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{domain}"), x509.DNSName(domain)]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    door.mkdir(parents=True)
    (door / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (door / "lab.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (door / "lab.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))


@pytest.mark.parametrize("installer", ["labbuild", "install.sh"])
def test_an_operator_certificate_is_kept_and_a_foreign_ca_is_never_replaced(tmp_path, installer) -> None:
    if installer == "install.sh" and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    dir_, work = tmp_path / "lab", tmp_path / "work"
    work.mkdir()
    _operator_cert(dir_ / "door", "lab.localhost")
    before = {f: (dir_ / "door" / f).read_bytes() for f in ("ca.crt", "lab.crt", "lab.key")}

    def run(domain: str):
        if installer == "labbuild":
            return ensure_door_material(dir_, _release(tmp_path / domain, domain))
        return _run_sh(dir_, domain, work)

    out = run("lab.localhost")
    if installer == "labbuild":
        assert out == ["door/oidc-jwks.pem"]
    else:
        assert out.returncode == 0, out.stderr
    assert {f: (dir_ / "door" / f).read_bytes() for f in before} == before    # kept as supplied
    # another domain: the operator's CA cannot sign it here; refused, nothing replaced
    if installer == "labbuild":
        with pytest.raises(InstallError, match="no .*ca.key to sign a new one"):
            run("ai.example.test")
    else:
        out = run("ai.example.test")
        assert out.returncode == 1 and "ca.key to sign a new one" in out.stderr, out.stderr
    assert {f: (dir_ / "door" / f).read_bytes() for f in before} == before
