"""Benchmark of delta bundles: size and install time of `release --since` vs the full bundle.

    .venv/bin/python bench/delta.py [--gib 1.0] [--runs 2]

Builds the 1 GiB image set of bench/images.py (three images, one shared base
layer), releases 1.0.0 with images, then replaces ONE layer of one image
(app-b's top layer, 1/16 of the bytes) and releases 1.1.0 twice: full, and
as a delta since 1.0.0. Prints both sizes, then the time of
`labbuild install --no-start` of each onto a host where 1.0.0 is installed
(the engine holds the base images; each run starts from that state).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from images import BIN, MiB, WORK, build_images, make_layer, push_images, remove_images, run, write_lab  # noqa: E402
from _common import median  # noqa: E402
from support.registry import start_registry  # noqa: E402


def labbuild(*args: str, **kw) -> float:
    return run([str(BIN / "labbuild"), *args], **kw)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    env = {"XDG_CACHE_HOME": str(WORK / "cache"), "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin"}
    images = build_images(args.gib)
    registry = start_registry(WORK / "registry")
    lab, out = WORK / "lab-delta", WORK / "dist-delta"
    shutil.rmtree(out, ignore_errors=True)
    try:
        pushed = push_images(registry, images)
        write_lab(lab, registry, pushed)
        labbuild("--root", str(lab), "lock")
        labbuild("--root", str(lab), "release", "1.0.0", "--with-images", "--out", str(out), env=env)
        b2 = images["app-b"][-1]
        new = make_layer(WORK / f"layers-{args.gib}" / "b2-new.tar.gz", b2["size"] - 4096)
        images2 = {**images, "app-b": images["app-b"][:-1] + [new]}
        pushed2 = {**pushed, **push_images(registry, {"app-b": images2["app-b"]})}
        records = WORK / "delta-records"            # write_lab starts the lab afresh: keep 1.0.0's record
        shutil.rmtree(records, ignore_errors=True)
        shutil.copytree(lab / "lockfiles" / "releases", records)
        write_lab(lab, registry, pushed2)
        shutil.copytree(records, lab / "lockfiles" / "releases")
        labbuild("--root", str(lab), "lock")
        labbuild("--root", str(lab), "release", "1.1.0", "--with-images", "--out", str(out), env=env)
        labbuild("--root", str(lab), "release", "1.1.0", "--with-images", "--since", "1.0.0", "--out", str(out),
                 env=env)
    finally:
        registry.stop()
    v1 = out / "bench-all-1.0.0.tar"
    full = out / "bench-all-1.1.0.tar"
    delta = out / "bench-all-1.1.0-since-1.0.0.tar"
    refs = [f"{registry.host}/{p['repo']}:1" for p in pushed.values()]
    print(f"changed layer: {new['size'] / MiB:.1f} MiB of {sum(l['size'] for l in images2['app-b']) / MiB:.0f} MiB "
          f"(app-b)")
    print(f"full 1.1.0:  {full.stat().st_size / MiB:8.1f} MiB")
    print(f"delta 1.1.0: {delta.stat().st_size / MiB:8.1f} MiB = {delta.stat().st_size / full.stat().st_size:.3f}x "
          f"the full bundle (changed layer + config + manifest + small files)")

    times: dict[str, list[float]] = {"full": [], "delta": []}
    for _ in range(args.runs):
        for kind, bundle in (("full", full), ("delta", delta)):
            target = WORK / "install-delta"
            shutil.rmtree(target, ignore_errors=True)
            remove_images(refs)     # and every other bench image: no layer of 1.1.0 is in the engine
            labbuild("install", str(v1), "--dir", str(target), "--no-start", env=env)
            t = time.perf_counter()
            labbuild("install", str(bundle), "--dir", str(target), "--no-start", env=env)
            times[kind].append(time.perf_counter() - t)
    remove_images(refs)
    shutil.rmtree(WORK / "install-delta", ignore_errors=True)
    f, d = median(times["full"]), median(times["delta"])
    print(f"install --no-start onto 1.0.0: full {f:.2f}s, delta {d:.2f}s = {d / f:.2f}x "
          f"(runs: full {', '.join(f'{x:.2f}' for x in times['full'])}; delta {', '.join(f'{x:.2f}' for x in times['delta'])})")


if __name__ == "__main__":
    main()
