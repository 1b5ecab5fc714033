"""Benchmark of `labbuild backup` (method volume) against `tar` of the same directory.

    .venv/bin/python bench/backup.py [--gib 1.0] [--runs 2] [--keep]

Puts --gib GiB of random (incompressible) data — a few large files and a
few thousand small ones — into a named volume mounted by a running busybox
container labelled as service `store` of a compose project, writes the
smallest install dir `labbuild backup --dir` needs (a release whose
manifest.json names that service and volume), then measures:

- `labbuild backup --dir DIR --out FILE` (stop the container, read the volume
  — from its host directory, as root beside the local engine — into the
  backup file, hash every member, fsync, rename, start the container again) vs
  `tar -cf FILE -C <the volume's directory on the host> . && sync FILE`  target <= 1.3x
- peak RSS of the labbuild process                              target <= 200 MiB

The peer syncs its file because labbuild's backup does: a backup is on disk
when the command returns (fsync before the rename), and on this machine's
disk the fsync of 1 GiB alone costs more than `tar -cf` into the page cache.
The ratio against `tar -cf` without sync, and `labbuild backup
--engine-archive` (the engine's archive API, the path for remote engines
and non-root users), are printed too, not gated.

Both write to the same filesystem ($BENCH_DIR, default /tmp/labbuild-bench-backup);
the best of --runs runs counts for each. Needs root (the volume's host
directory) and a Docker engine. Not part of the test suite; prints every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from builder.format.manifest import Manifest, ManifestService, ManifestVolume
from _common import labbuild_exe, report  # noqa: E402

WORK = Path(os.environ.get("BENCH_DIR", "/tmp/labbuild-bench-backup"))
LAB = "labbuild-bench-backup"
IMAGE = f"{LAB}:1"
MiB = 1 << 20
BUSYBOX = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if Path(p).exists()), None)


def build_image(client) -> None:
    """FROM scratch + static busybox: a shell that exits on SIGTERM (so stopping it is quick)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(BUSYBOX, arcname="busybox")
        dockerfile = (b"FROM scratch\nCOPY busybox /bin/busybox\n"
                      b'CMD ["/bin/busybox", "sh", "-c", "trap \'exit 0\' TERM; /bin/busybox sleep 100000 & wait"]\n')
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=IMAGE, rm=True)


def fill(root: Path, gib: float) -> int:
    """Random files under ``root``: 3/4 in 64 MiB files, 1/4 in 16 KiB ones; returns the bytes written."""
    total = int(gib * 1024 * MiB)
    written, n = 0, 0
    while written < total * 3 // 4:
        with open(root / f"large-{n:03d}.bin", "wb") as fh:
            for _ in range(64):
                fh.write(os.urandom(MiB))
        written, n = written + 64 * MiB, n + 1
    small = root / "small"
    small.mkdir(exist_ok=True)
    n = 0
    while written < total:
        sub = small / f"{n // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{n:06d}.dat").write_bytes(os.urandom(16 * 1024))
        written, n = written + 16 * 1024, n + 1
    return written


def install_dir(root: Path) -> Path:
    """DIR/current -> releases/1.0.0 with a manifest naming service `store` and its volume."""
    release = root / "releases" / "1.0.0"
    release.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(lab=LAB, name=f"{LAB}-bench-1.0.0", version="1.0.0", profile="bench",
                        inputs="sha256:" + "0" * 64, labbuild="bench", offline=True, platforms=("linux/amd64",),
                        services={"store": ManifestService(
                            image=IMAGE, digest="sha256:" + "0" * 64, verified=False, config_digests={}, ports=(),
                            health=None, depends_on=(), volumes=(ManifestVolume("data", "store_data", "/data"),),
                            secrets=(), runbook="runbooks/store.md")},
                        files={})
    (release / "manifest.json").write_bytes(manifest.dumps())
    with contextlib.suppress(FileNotFoundError):
        (root / "current").unlink()
    os.symlink("releases/1.0.0", root / "current")
    return root


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of ``argv``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    return seconds, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the container, volume and files")
    args = parser.parse_args()
    if os.geteuid() != 0 or BUSYBOX is None:
        print("needs root (the volume's host directory) and a static busybox")
        return 1
    client = docker.from_env(timeout=600)
    labels = {"com.docker.compose.project": LAB, "com.docker.compose.volume": "store_data"}
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / "out"
    out.mkdir(exist_ok=True)
    container = volume = None
    try:
        build_image(client)
        volume = client.volumes.create(f"{LAB}_store_data", labels=labels)
        for old in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={LAB}"}):
            old.remove(force=True)
        container = client.containers.run(
            IMAGE, detach=True, name=f"{LAB}-store-1", volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            labels={"com.docker.compose.project": LAB, "com.docker.compose.service": "store"})
        data = Path(volume.attrs["Mountpoint"])
        have = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        if have < int(args.gib * 1024 * MiB * 0.99):
            print(f"writing {args.gib:g} GiB of random data into volume {volume.name} ...", flush=True)
            have = fill(data, args.gib)
        print(f"volume {volume.name}: {have / MiB:.0f} MiB in {sum(1 for _ in data.rglob('*'))} entries")
        root = install_dir(WORK / "inst")
        times: dict[str, list[float]] = {"labbuild": [], "engine": [], "tar": [], "tar+sync": []}
        rss = 0
        for _ in range(args.runs):
            for f in out.iterdir():
                f.unlink()
            seconds, peak = timed([labbuild_exe(), "backup", "--dir", str(root), "--out", str(out / "b.backup.tar")])
            times["labbuild"].append(seconds)
            rss = max(rss, peak)
            times["tar+sync"].append(timed(["sh", "-c", 'tar -cf "$1" -C "$2" . && sync "$1"', "tar",
                                            str(out / "s.tar"), str(data)])[0])
            times["tar"].append(timed(["tar", "-cf", str(out / "t.tar"), "-C", str(data), "."])[0])
            seconds, peak = timed([labbuild_exe(), "backup", "--engine-archive", "--dir", str(root),
                                   "--out", str(out / "e.backup.tar")])
            times["engine"].append(seconds)
            rss = max(rss, peak)
        size_b, size_t = (out / "b.backup.tar").stat().st_size, (out / "t.tar").stat().st_size
        container.reload()
        best = {k: min(v) for k, v in times.items()}
        shown = lambda k: ", ".join(f"{t:.2f}" for t in times[k])  # noqa: E731
        print(f"labbuild backup:                  {shown('labbuild')} s  ({size_b / MiB:.0f} MiB file, "
              f"{have / MiB / best['labbuild']:.0f} MiB/s); container {container.status} afterwards")
        print(f"labbuild backup --engine-archive: {shown('engine')} s")
        print(f"tar -cf && sync:                  {shown('tar+sync')} s")
        print(f"tar -cf (page cache only):        {shown('tar')} s  ({size_t / MiB:.0f} MiB file)")
        print(f"not gated: labbuild/tar without sync {best['labbuild'] / best['tar']:.2f}x, --engine-archive/"
              f"tar+sync {best['engine'] / best['tar+sync']:.2f}x (load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs)")
        ok = report("backup of the volume vs tar + sync (ratio)", best["labbuild"] / best["tar+sync"], 1.3, "x")
        ok &= report("peak RSS of labbuild backup", rss / 1024, 200, "MiB")
        ok &= container.status == "running"
        return 0 if ok else 1
    finally:
        if not args.keep:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            with contextlib.suppress(Exception):
                volume.remove(force=True)
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
