"""Fuzz the loaders of lab.toml, the lockfile, release records and bundle manifests the way
blueprints are fuzzed (tests/test_blueprint.py): whatever the bytes or the structure, a
loader answers with a LabbuildError (a named problem), never another exception.

CI runs a fast round; `pytest -m nightly tests/test_fuzz_loaders.py` runs >= 10k examples
per loader (LABBUILD_FUZZ_EXAMPLES sets the count).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.blueprint import load_lab
from builder.errors import BlueprintError, LabbuildError
from builder.format.manifest import Manifest
from builder.format.record import Record
from builder.lockfile import lock_from_json, read_lock

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                    st.dictionaries(st.text(max_size=10), kids, max_size=4)),
                    max_leaves=25)
KEYS = ["format", "lab", "name", "version", "profile", "inputs", "labbuild", "offline", "platforms", "services",
        "files", "sha256", "tar_sha256", "lock", "manifest", "sources", "mtime", "with_images", "digest",
        "verified", "reference", "media_type", "config", "layers", "image", "ports", "health", "secrets", "volumes"]
# shaped like the real formats: known keys, arbitrary values, so the fuzzer gets past the first check
SHAPED = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), kids,
                                                max_size=6)), max_leaves=40).map(
    lambda d: {**d, "format": 1} if isinstance(d, dict) else d)
BYTES = st.one_of(st.binary(max_size=300), JSON.map(lambda d: json.dumps(d).encode()),
                  SHAPED.map(lambda d: json.dumps(d).encode()))

FAST = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
NIGHTLY = settings(max_examples=int(os.environ.get("LABBUILD_FUZZ_EXAMPLES", "10000")), deadline=None,
                   suppress_health_check=list(HealthCheck))


def _manifest(raw: bytes) -> None:
    Manifest.loads(raw)


def _lock(raw: bytes, tmp) -> None:
    path = tmp / "lab.lock.json"
    path.write_bytes(raw)
    read_lock(path)


def _lock_data(data) -> None:
    lock_from_json(data)


def _record(raw: bytes, tmp) -> None:
    path = tmp / "base-1.0.0.json"
    path.write_bytes(raw)
    Record.read(path)


def _lab(raw: bytes, tmp) -> None:
    (tmp / "blueprints" / "services").mkdir(parents=True, exist_ok=True)
    (tmp / "blueprints" / "lab.toml").write_bytes(raw)
    try:
        load_lab(tmp)
    except BlueprintError:
        pass


LAB_TEXT = st.one_of(st.binary(max_size=200), st.text(max_size=300).map(str.encode), st.builds(
    lambda name, prof, svcs: f'[lab]\nname = {json.dumps(name)}\ndefault_profile = {json.dumps(prof)}\n'
                             f'[profiles.{json.dumps(prof)}]\nservices = {json.dumps(svcs)}\n'.encode(),
    st.text(max_size=12), st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3)))


def _never_raises_other_than_labbuild_errors(fn, *args) -> None:
    try:
        fn(*args)
    except LabbuildError:
        pass


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_manifest_loader(cfg):
    cfg(given(BYTES)(lambda raw: _never_raises_other_than_labbuild_errors(_manifest, raw)))()


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_lock_loader(cfg, tmp_path):
    cfg(given(BYTES)(lambda raw: _never_raises_other_than_labbuild_errors(_lock, raw, tmp_path)))()
    cfg(given(SHAPED)(lambda data: _never_raises_other_than_labbuild_errors(_lock_data, data)))()


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_record_loader(cfg, tmp_path):
    cfg(given(BYTES)(lambda raw: _never_raises_other_than_labbuild_errors(_record, raw, tmp_path)))()


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_lab_loader(cfg, tmp_path):
    cfg(given(LAB_TEXT)(lambda raw: _never_raises_other_than_labbuild_errors(_lab, raw, tmp_path)))()


# --------------------------------------------------------------------------- backups (hardening round two)

def _good_backup(tmp) -> bytes:
    """A small, valid backup file (backup.json, .env, one volume archive), made by the real writer."""
    import io
    import tarfile as _tar

    from builder.backups.backupfile import BackupManifest, BackupService, BackupVolume, BackupWriter, reserve_for
    inner = io.BytesIO()
    with _tar.open(fileobj=inner, mode="w") as t:
        info = _tar.TarInfo("data/note")
        info.size = 5
        t.addfile(info, io.BytesIO(b"hello"))
    bm = BackupManifest(kind="backup", lab="lab", version="1.0.0", profile="p", release="1.0.0",
                        created="2026-01-01T00:00:00Z", labbuild="0",
                        services={"web": BackupService("volume", "web:1", (BackupVolume("data", "web_data", "/data"),))})
    path = tmp / "good.backup.tar"
    with open(path, "wb") as fh:
        w = BackupWriter(fh, bm, reserve_for(4))
        w.add("env/.env", io.BytesIO(b"KEY=value\n"))
        w.add("volumes/web/data.tar", io.BytesIO(inner.getvalue()), service="web", volume="data")
        w.finish()
    return path.read_bytes()


MUTATION = st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1,
                    max_size=8)


def _mutated(good: bytes, edits, cut: int | None) -> bytes:
    data = bytearray(good)
    for at, value in edits:
        data[at % len(data)] = value
    return bytes(data[:cut % len(data)] if cut else data)


def _verify_backup_bytes(raw: bytes, tmp) -> None:
    from builder.backups.backupfile import verify_backup
    path = tmp / "fuzz.backup.tar"
    path.write_bytes(raw)
    verify_backup(path)


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_backup_reader(cfg, tmp_path):
    """A mutated or truncated backup, or any bytes: verify_backup answers with a named refusal."""
    good = _good_backup(tmp_path)
    cfg(given(MUTATION, st.one_of(st.none(), st.integers(min_value=1)))(
        lambda edits, cut: _never_raises_other_than_labbuild_errors(
            _verify_backup_bytes, _mutated(good, edits, cut), tmp_path)))()
    cfg(given(st.binary(max_size=2048))(
        lambda raw: _never_raises_other_than_labbuild_errors(_verify_backup_bytes, raw, tmp_path)))()


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_sealed_backup_opener(cfg, tmp_path):
    """A mutated or truncated sealed backup: decryption refuses it by name, never another error,
    and never hands out a byte that was not authenticated."""
    import io

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from builder.backups.backupcrypt import decrypt_stream, encrypt_stream
    key = X25519PrivateKey.generate()
    plain = os.urandom(3000)
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), sealed, key.public_key())
    good = sealed.getvalue()

    def open_(raw: bytes) -> None:
        out = io.BytesIO()
        try:
            decrypt_stream(io.BytesIO(raw), out, key, "fuzz.backup.enc")
        except LabbuildError:
            assert plain.startswith(out.getvalue())      # only authenticated chunks were written
            raise
        assert raw == good and out.getvalue() == plain

    cfg(given(MUTATION, st.one_of(st.none(), st.integers(min_value=1)))(
        lambda edits, cut: _never_raises_other_than_labbuild_errors(open_, _mutated(good, edits, cut))))()


@pytest.mark.parametrize("cfg", [pytest.param(FAST, id="fast"),
                                 pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)])
def test_volume_archive_check(cfg):
    """Any bytes as a volume's inner archive: accepted only when every member stays in the volume."""
    import io
    import posixpath
    import tarfile as _tar

    from builder.backups.restore import check_volume_archive
    NAMES = st.lists(st.tuples(st.sampled_from(["file", "dir", "sym", "hard"]),
                               st.text(alphabet="data/.e tc", min_size=1, max_size=14),
                               st.text(alphabet="data/.e tc", max_size=10)), max_size=5)

    def check(members) -> None:
        buf = io.BytesIO()
        with _tar.open(fileobj=buf, mode="w", format=_tar.PAX_FORMAT) as t:
            for kind, name, link in members:
                info = _tar.TarInfo(name)
                info.type = {"file": _tar.REGTYPE, "dir": _tar.DIRTYPE, "sym": _tar.SYMTYPE, "hard": _tar.LNKTYPE}[kind]
                info.linkname = link
                t.addfile(info, io.BytesIO(b""))
        buf.seek(0)
        check_volume_archive(buf, "/data", "fuzz", "web", "web_data")
        for kind, name, link in members:                 # accepted: every name is inside data/
            norm = posixpath.normpath(name)
            assert not name.startswith("/") and ".." not in name.split("/")
            assert norm == "data" or norm.startswith("data/")

    cfg(given(NAMES)(lambda members: _never_raises_other_than_labbuild_errors(check, members)))()
    cfg(given(st.binary(max_size=2048))(lambda raw: _never_raises_other_than_labbuild_errors(
        check_volume_archive, io.BytesIO(raw), "/data", "fuzz", "web", "web_data")))()
