"""Benchmark: `labbuild lock` vs sequential `skopeo inspect --raw` over a slow link.

50 images (half multi-arch OCI indexes over linux/amd64 + linux/arm64, half
single-platform Docker schema2 images) are pushed to a real local registry;
both tools reach it through the fault proxy, which adds 50 ms to every
request (a WAN round trip). One cold run each:

- labbuild: `labbuild --root LAB lock` on a lab of 50 services pinned to
  those images (it fetches and verifies every manifest, and the config of
  single-platform images, concurrently);
- skopeo: `skopeo inspect --raw --tls-verify=false docker://REF@DIGEST` for
  each of the 50 references, one after the other (the top manifest only).

Prints both wall times, the request counts seen by the proxy, and the ratio
(target: labbuild <= 0.15 x skopeo).

Run: .venv/bin/python bench/lock.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support import oci  # noqa: E402
from support.faultproxy import FaultProxy  # noqa: E402
from support.registry import start_registry  # noqa: E402

IMAGES = 50
LATENCY = 0.050


def push_images(reg) -> list[tuple[str, str]]:
    """Push IMAGES images; return (repository, digest) pairs."""
    pushed = []
    with reg.client() as c:
        for i in range(IMAGES):
            repo = f"bench/svc{i:02d}"
            if i % 2:
                img = oci.make_image([{"app": f"single {i}".encode()}], docker=True)
                pushed.append((repo, oci.push_image(c, repo, "v1", img)))
            else:
                index = oci.make_index([oci.make_image([{"app": f"{p} {i}".encode()}], platform=p)
                                        for p in ("linux/amd64", "linux/arm64")])
                pushed.append((repo, oci.push_index(c, repo, "v1", index)))
    return pushed


def write_lab(root: Path, host: str, pushed: list[tuple[str, str]]) -> None:
    services = root / "blueprints" / "services"
    services.mkdir(parents=True)
    names = [f"svc{i:02d}" for i in range(len(pushed))]
    (root / "blueprints" / "lab.toml").write_text(
        f'[lab]\nname = "bench"\ndefault_profile = "all"\n\n[profiles.all]\nservices = {json.dumps(names)}\n')
    for name, (repo, digest) in zip(names, pushed):
        (services / f"{name}.toml").write_text(
            f'[service]\nname = "{name}"\ndescription = "benchmark image"\nphase = 0\ncategory = "app"\n\n'
            f'[image]\nname = "{host}/{repo}"\ntag = "v1"\ndigest = "{digest}"\n')


def main() -> int:
    if not shutil.which("skopeo") or not shutil.which("docker-registry"):
        print("needs skopeo and docker-registry on PATH", file=sys.stderr)
        return 1
    labbuild = Path(sys.executable).parent / "labbuild"
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as tmp:
        tmp = Path(tmp)
        reg = start_registry(tmp / "registry")
        proxy = FaultProxy(reg.host, latency=LATENCY)
        try:
            pushed = push_images(reg)
            write_lab(tmp / "lab", proxy.host, pushed)

            start = time.perf_counter()
            proc = subprocess.run([str(labbuild), "--root", str(tmp / "lab"), "lock"],
                                  capture_output=True, text=True)
            t_labbuild = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            n_labbuild = proxy.count()

            start = time.perf_counter()
            for repo, digest in pushed:
                subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                f"docker://{proxy.host}/{repo}@{digest}"],
                               check=True, capture_output=True)
            t_skopeo = time.perf_counter() - start
            n_skopeo = proxy.count() - n_labbuild

            start = time.perf_counter()
            subprocess.run([str(labbuild), "--root", str(tmp / "lab"), "lock"], check=True, capture_output=True)
            t_noop = time.perf_counter() - start
            n_noop = proxy.count() - n_labbuild - n_skopeo
        finally:
            proxy.close()
            reg.stop()

    print(f"images: {IMAGES} ({IMAGES // 2} indexes, {IMAGES - IMAGES // 2} single-platform), "
          f"+{LATENCY * 1000:.0f} ms per request")
    print(f"labbuild lock:                  {t_labbuild:6.2f} s  ({n_labbuild} requests, every manifest verified)")
    print(f"skopeo inspect --raw x{IMAGES} (seq): {t_skopeo:6.2f} s  ({n_skopeo} requests, top manifest only)")
    print(f"ratio labbuild/skopeo:          {t_labbuild / t_skopeo:6.3f}  (target <= 0.15)")
    print(f"labbuild lock, no-op re-run:    {t_noop:6.2f} s  ({n_noop} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
