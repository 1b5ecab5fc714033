"""Benchmark of SBOM generation: CycloneDX documents for ~1 GiB of image layers.

    .venv/bin/python bench/sbom.py [--gib 1.0] [--runs 3]

Writes four gzip layer tarballs of random (incompressible) content totalling
--gib GiB — big files and a few thousand small ones, like a real image —
plus package metadata (a dpkg status, an apk database, Python dist-infos,
node_modules) and a whiteout, then measures ``builder.sbom.generate_sbom``
over them (median of --runs, in this process) and its peak RSS.

The issue's target is "≤ 0.3× the time of the image release itself": pass
the warm `release --with-images` seconds that bench/images.py prints for the
same --gib as --release-seconds to check it. Without it, the SBOM is checked
against what any release of these blobs must at least do — read, sha256,
write and fsync each blob once (the "release floor", timed here, interleaved
with the SBOM runs so both see the same machine load): target <= 1.0x. Generated
layers are kept in $BENCH_DIR (default /tmp/labbuild-bench-sbom), so a second
run skips the generation. Not part of the test suite; prints every figure.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402
from builder.sbom import ImageSubject, Layer, components_of, generate_sbom  # noqa: E402

WORK = Path(os.environ.get("BENCH_DIR", "/tmp/labbuild-bench-sbom"))
MiB = 1 << 20
LAYERS = 4
SMALL_FILES = 2000          # per layer, 1-16 KiB each


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class _RandomReader(io.RawIOBase):
    """``size`` random bytes, read in chunks (a big layer file never sits in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = os.urandom(n)
        self.left -= n
        return n


def metadata_files(index: int) -> list[tuple[str, bytes]]:
    if index == 0:
        status = "".join(f"Package: pkg{i}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.{i}-1\n\n"
                         for i in range(400))
        return [("etc/os-release", b"ID=debian\nVERSION_ID=12\n"), ("var/lib/dpkg/status", status.encode()),
                ("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\n")]
    if index == 1:
        return [(f"usr/lib/python3.11/site-packages/p{i}-1.0.dist-info/METADATA",
                 f"Metadata-Version: 2.1\nName: p{i}\nVersion: 1.0\n\n".encode()) for i in range(200)]
    if index == 2:
        return [(f"app/node_modules/n{i}/package.json", json.dumps({"name": f"n{i}", "version": "1.0.0"}).encode())
                for i in range(300)]
    return [("usr/lib/python3.11/site-packages/.wh.p0-1.0.dist-info", b"")]


def make_layer(path: Path, index: int, size: int) -> Layer:
    """A gzip layer: metadata, SMALL_FILES small random files, the rest in 64 MiB random files."""
    meta = path.with_suffix(".digest")
    if meta.exists() and path.exists():
        return Layer(digest=meta.read_text().strip(), path=path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in metadata_files(index):
            _add(tar, name, data)
        left = size
        for i in range(SMALL_FILES):
            data = os.urandom(1024 * (1 + i % 16))
            _add(tar, f"srv/small/{index}/{i:05d}.bin", data)
            left -= len(data)
        n = 0
        while left > 0:
            chunk = min(64 * MiB, left)
            info = tarfile.TarInfo(f"srv/big/{index}/{n:03d}.bin")
            info.size = chunk
            tar.addfile(info, io.BufferedReader(_RandomReader(chunk), buffer_size=MiB))
            left -= chunk
            n += 1
    digest = "sha256:" + _sha256(tmp)
    tmp.rename(path)
    meta.write_text(digest + "\n")
    return Layer(digest=digest, path=path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(MiB):
            h.update(block)
    return h.hexdigest()


def release_floor(layers: list[Layer]) -> float:
    """Seconds to sha256 and write every blob: what a release does at the very least per blob."""
    with tempfile.TemporaryDirectory(dir=WORK) as out:
        start = time.perf_counter()
        for layer in layers:
            h = hashlib.sha256()
            with open(layer.path, "rb") as src, open(Path(out) / layer.path.name, "wb") as dst:
                while block := src.read(MiB):
                    h.update(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--release-seconds", type=float, default=None,
                        help="warm image release time of the same GiB (bench/images.py), for the 0.3x target")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    size = int(args.gib * (1 << 30)) // LAYERS
    start = time.perf_counter()
    layers = [make_layer(WORK / f"layer{i}-{size}.tar.gz", i, size) for i in range(LAYERS)]
    total = sum(layer.path.stat().st_size for layer in layers)
    print(f"layers: {LAYERS} gzip blobs, {total / (1 << 30):.2f} GiB in {WORK} "
          f"(ready in {time.perf_counter() - start:.1f} s)")
    image = ImageSubject(name="bench/image", digest="sha256:" + "0" * 64, platform="linux/amd64")
    times, cpu, floors, doc = [], [], [], b""
    for _ in range(args.runs):   # interleaved, so both see the same machine load
        start, start_cpu = time.perf_counter(), time.process_time()
        doc = generate_sbom(image, layers, epoch=0, labbuild_version="bench")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        floors.append(release_floor(layers))
    components = len(components_of(doc))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    floor = statistics.median(floors)
    sbom = statistics.median(times)
    print(f"sbom generation: {sbom:.3f} s for {total / (1 << 30):.2f} GiB, {components} components "
          f"({total / MiB / sbom:.0f} MiB/s, {statistics.median(cpu):.3f} s CPU); "
          f"runs {', '.join(f'{t:.3f}' for t in times)}")
    print(f"release floor (sha256 + write + fsync of the same blobs): {floor:.3f} s; "
          f"runs {', '.join(f'{t:.3f}' for t in floors)}")
    if args.release_seconds:
        ok = report("sbom / image release", sbom / args.release_seconds, 0.3, unit="x")
    else:
        ok = report("sbom / release floor (pass --release-seconds)", sbom / floor, 1.0, unit="x")
    ok &= report("peak RSS of the benchmark process", peak_mib, 200, unit="MiB")
    if components != 400 + 2 + 199 + 300:
        print(f"unexpected component count {components}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    if "--clean" in sys.argv:
        shutil.rmtree(WORK, ignore_errors=True)
        sys.exit(0)
    sys.exit(main())
