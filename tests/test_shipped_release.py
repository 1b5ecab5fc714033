"""The committed release record of the shipped lab reproduces byte for byte
(what `make demo` shows a newcomer)."""

from __future__ import annotations

import json

from builder.bundle.release import build_release
from builder.fsutil import sha256_file


def test_recorded_phase1_release_reproduces_its_sha256(lab_copy, tmp_path, repo_root):
    record = json.loads((repo_root / "lockfiles/releases/phase1-0.5.0.json").read_text())
    result = build_release(lab_copy, "0.5.0", out_dir=tmp_path / "dist")
    assert result.noop, "re-releasing a recorded version with identical content is a no-op"
    assert result.sha256 == record["sha256"] == sha256_file(result.bundle)
