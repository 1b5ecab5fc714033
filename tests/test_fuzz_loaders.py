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
