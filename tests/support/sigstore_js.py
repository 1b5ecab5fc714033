"""@sigstore/verify (sigstore-js) in a test cache, for checking Sigstore bundles with a tool we did not write.

Installed once with npm into ``~/.cache/labbuild-test/npm`` (override with
LABBUILD_TEST_NPM_CACHE), pinned to the last line that supports Node 20
(@sigstore/verify 3.x; 4.x wants Node >= 22). A file lock keeps parallel
test workers from installing twice.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .dockerenv import require_tool

PACKAGES = ("@sigstore/verify@3.1.1", "@sigstore/bundle@4.0.0")
SCRIPT = Path(__file__).with_name("sigstore_verify.js")


def npm_cache() -> Path:
    return Path(os.environ.get("LABBUILD_TEST_NPM_CACHE", Path.home() / ".cache" / "labbuild-test" / "npm"))


def install_sigstore_js() -> Path:
    """The node_modules directory holding @sigstore/verify (installing it when missing)."""
    require_tool("node")
    npm = require_tool("npm")
    cache = npm_cache()
    cache.mkdir(parents=True, exist_ok=True)
    modules = cache / "node_modules"
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (modules / "@sigstore" / "verify" / "package.json").exists():
            if not (cache / "package.json").exists():
                (cache / "package.json").write_text('{"private": true}\n')
            proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *PACKAGES],
                                  cwd=cache, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                shutil.rmtree(modules, ignore_errors=True)
                msg = f"npm install {' '.join(PACKAGES)} failed: {proc.stderr.strip()[-500:]}"
                if os.environ.get("LABBUILD_REQUIRE_DOCKER") == "1":
                    pytest.fail(msg, pytrace=False)
                pytest.skip(msg)
    return modules


def sigstore_js_verify(modules: Path, bundle: Path, artifact: Path, public_key: Path) -> subprocess.CompletedProcess:
    """Run @sigstore/verify on ``bundle`` for ``artifact`` with ``public_key`` (PEM)."""
    env = {**os.environ, "NODE_PATH": str(modules)}
    return subprocess.run([shutil.which("node") or "node", str(SCRIPT), str(bundle), str(artifact), str(public_key)],
                          capture_output=True, text=True, env=env, timeout=60)
