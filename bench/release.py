"""Benchmark: `labbuild release` of the shipped lab's full phase4 profile (no images).

Runs the real CLI in subprocesses (interpreter start-up counts) on a scratch
copy of blueprints/ and lockfiles/ (no network: when the lock is missing it is
made with `labbuild lock --offline`), and reports the median of several runs:

- a fresh release (record and archive removed before each run): target <= 1 s
- an identical re-release, the no-op: target <= 0.3 s
- the peer: GNU tar + gzip packing the same extracted tree reproducibly
  (`tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -czf`),
  which renders nothing and records nothing, as the floor.

Usage: .venv/bin/python bench/release.py [--profile P] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

from _common import REPO, labbuild_exe, median, report, time_command

LABBUILD = labbuild_exe()


def run(*args) -> float:
    return time_command([str(a) for a in args])[0]


def pick_profile(root: Path, wanted: str) -> str:
    profiles = tomllib.loads((root / "blueprints" / "lab.toml").read_text())["profiles"]
    if wanted in profiles:
        return wanted
    last = sorted(profiles)[-1]
    print(f"note: profile {wanted!r} is not in lab.toml yet; using {last!r}")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="phase4")
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        root = Path(tmp) / "lab"
        root.mkdir()
        shutil.copytree(REPO / "blueprints", root / "blueprints")
        if (REPO / "lockfiles").exists():
            shutil.copytree(REPO / "lockfiles", root / "lockfiles")
        shutil.rmtree(root / "lockfiles" / "releases", ignore_errors=True)
        if not (root / "lockfiles" / "lab.lock.json").exists():
            print("note: no lockfiles/lab.lock.json yet; made one with `labbuild lock --offline`")
            run(LABBUILD, "--root", root, "lock", "--offline")
        profile = pick_profile(root, opts.profile)
        out = Path(tmp) / "dist"
        version = "0.1.0"
        fresh, noop = [], []
        for _ in range(opts.runs):
            shutil.rmtree(root / "lockfiles" / "releases", ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            fresh.append(run(LABBUILD, "--root", root, "release", version, "--profile", profile, "--out", out))
            noop.append(run(LABBUILD, "--root", root, "release", version, "--profile", profile, "--out", out))
        bundle = next(out.glob("*.tar.gz"))
        tree = Path(tmp) / "tree"
        tree.mkdir()
        subprocess.run(["tar", "-xzf", bundle, "-C", tree], check=True)
        peer = [run("tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
                    "-czf", Path(tmp) / "peer.tar.gz", "-C", tree, ".") for _ in range(opts.runs)]
        version_only = [run(LABBUILD, "--version") for _ in range(opts.runs)]
        services = len(list((tree / bundle.name.removesuffix(".tar.gz") / "runbooks").glob("*.md"))) - 1
        f, n, p, v = (median(x) for x in (fresh, noop, peer, version_only))
        print(f"profile {profile}: {services} services, bundle {bundle.stat().st_size / 1024:.0f} KiB, "
              f"{opts.runs} runs, medians")
        print(f"{'labbuild --version (start-up floor)':<48} {v:8.3f} s")
        report(f"release {profile} (fresh)", f, 1.0)
        report(f"release {profile} again (no-op)", n, 0.3)
        print(f"{'peer: GNU tar+gzip of the same tree':<48} {p:8.3f} s   release/peer = {f / p:.1f}x")


if __name__ == "__main__":
    main()
