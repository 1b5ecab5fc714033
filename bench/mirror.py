"""Benchmark of `labbuild mirror` against `skopeo copy` from an OCI layout.

    .venv/bin/python bench/mirror.py [--gib 1.0] [--runs 3] [--latency 0.05]

Builds the 1 GiB image set of bench/images.py (three images, one shared base
layer), releases it as an image bundle, and puts the same images into an
OCI layout with skopeo (untimed). Then, alternating, each run into a fresh
empty registry (docker-registry on 127.0.0.1):

- `labbuild mirror BUNDLE --to REG/mirror`             (verifies the bundle first)
- `skopeo copy oci:LAYOUT:<image> docker://REG/skopeo/<image>` for each image

and prints the medians and their ratio (target <= 1.0x). With --latency S the
registry sits behind tests/support/faultproxy.py adding S seconds to every
request (a WAN); note that an upload's PUT goes to the Location the registry
names, i.e. straight to it, for both tools.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from images import BIN, WORK, build_images, push_images, run, skopeo_copy, write_lab  # noqa: E402
from _common import median  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402
from support.registry import start_registry  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request (a proxy)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    images = build_images(args.gib)
    source = start_registry(WORK / "registry")
    try:
        pushed = push_images(source, images)
        lab = WORK / "lab-mirror"
        write_lab(lab, source, pushed)
        run([str(BIN / "labbuild"), "--root", str(lab), "lock"])
        out = WORK / "dist-mirror"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(lab / "lockfiles" / "releases", ignore_errors=True)
        run([str(BIN / "labbuild"), "--root", str(lab), "release", "1.0.0", "--with-images", "--out", str(out)],
            env={"XDG_CACHE_HOME": str(WORK / "cache")})
        (bundle,) = out.iterdir()
        layout = WORK / "mirror-layout"
        shutil.rmtree(layout, ignore_errors=True)
        skopeo_copy(source.host, pushed, layout)      # the peer's source, untimed
    finally:
        source.stop()

    ours, theirs = [], []
    for i in range(args.runs):
        for tool in ("labbuild", "skopeo"):
            regdir = WORK / f"mirror-target-{tool}"
            shutil.rmtree(regdir, ignore_errors=True)
            target = start_registry(regdir)
            proxy = FaultProxy(target.host, latency=args.latency) if args.latency else None
            host = proxy.host if proxy else target.host
            try:
                os.sync()
                t = time.perf_counter()
                if tool == "labbuild":
                    run([str(BIN / "labbuild"), "mirror", str(bundle), "--to", f"{host}/mirror"])
                    ours.append(time.perf_counter() - t)
                else:
                    for name in sorted(pushed):
                        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{name}",
                             f"docker://{host}/skopeo/bench/{name}:1"])
                    theirs.append(time.perf_counter() - t)
            finally:
                if proxy:
                    proxy.close()
                target.stop()
                shutil.rmtree(regdir, ignore_errors=True)
        print(f"run {i + 1}: labbuild mirror {ours[-1]:.2f}s, skopeo copy {theirs[-1]:.2f}s")
    m_ours, m_theirs = median(ours), median(theirs)
    size = bundle.stat().st_size
    print(f"bundle {bundle.name}: {size / (1 << 20):.0f} MiB; latency {args.latency * 1000:.0f} ms/request")
    print(f"labbuild mirror (median of {args.runs}): {m_ours:.2f}s; skopeo copy from OCI layout: {m_theirs:.2f}s"
          f"  = {m_ours / m_theirs:.2f}x   (target <= 1.0x)")


if __name__ == "__main__":
    main()
