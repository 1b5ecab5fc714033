"""Benchmark of image bundles: `release --with-images` and `install` against the peer tools.

    .venv/bin/python bench/images.py [--gib 1.0] [--keep]

Builds three single-platform images of random (incompressible) layers
totalling --gib GiB of unique blobs, with one base layer shared by two of
them, pushes them to a local registry (docker-registry on 127.0.0.1), locks
a throwaway lab over them and then measures, in one run:

- cold `labbuild release --with-images` (empty blob cache) vs `skopeo copy`
  of the same images into one OCI layout            target <= 0.7x (<= 0.6x via --latency 0.05)
- warm release (the cold bundle present: its blobs are copied from it) vs that
  skopeo copy, and (with --cold-runs) vs a plain `cp` of the bundle   target <= 1.2x cp
- peak RSS of the release process                   target <= 200 MiB
- bundle size vs the sum of the unique blobs
- extra disk during the release (peak growth of the filesystem) vs the bundle
                                                    target <= 1.02x
- `labbuild install --no-start` (verify, unpack, docker load, image-ID check)
  vs a raw `docker load` of the same images         target <= 1.1x

With --cold-runs N only the releases are measured, N times alternating with
skopeo: cold release, its disk peak, warm release and `cp` (and `cp` + `sync`)
of the bundle, printing medians and the load averages; --latency S puts the
registry behind tests/support/faultproxy.py adding S seconds per request
(a WAN, where concurrent downloads should win); BENCH_BASELINE=/path/to/labbuild
times another labbuild (e.g. main's) in the same runs.

Generated layers and the registry storage are kept in $BENCH_DIR
(default /tmp/labbuild-bench-images) so a second run skips the generation.
Not part of the test suite; prints every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.oci import upload_blob  # noqa: E402
from support.registry import start_registry  # noqa: E402

import httpx  # noqa: E402

BIN = REPO / ".venv" / "bin"
WORK = Path(os.environ.get("BENCH_DIR", "/tmp/labbuild-bench-images"))
BASELINE = os.environ.get("BENCH_BASELINE", "")   # --cold-runs: also time this labbuild executable
MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


# --------------------------------------------------------------------------- data

def make_layer(path: Path, size: int) -> dict:
    """A gzip tar layer holding one file of ``size`` random bytes (streamed, never in memory)."""
    if path.with_suffix(".json").exists():
        return json.loads(path.with_suffix(".json").read_text())
    raw_hash, gz_hash = hashlib.sha256(), hashlib.sha256()
    comp = zlib.compressobj(0, zlib.DEFLATED, 31)  # gzip container, stored blocks: random data does not shrink
    total = 0
    with open(path, "wb") as out:
        def emit(data: bytes) -> None:
            nonlocal total
            raw_hash.update(data)
            z = comp.compress(data)
            gz_hash.update(z)
            total += len(z)
            out.write(z)
        info = tarfile.TarInfo("data/random.bin")
        info.size, info.mode, info.mtime = size, 0o644, 0
        emit(info.tobuf(format=tarfile.USTAR_FORMAT))
        left = size
        while left:
            n = min(left, 4 * MiB)
            emit(os.urandom(n))
            left -= n
        emit(b"\0" * (-size % 512) + b"\0" * 1024)
        z = comp.flush()
        gz_hash.update(z)
        total += len(z)
        out.write(z)
    meta = {"digest": "sha256:" + gz_hash.hexdigest(), "diff_id": "sha256:" + raw_hash.hexdigest(),
            "size": total, "path": str(path)}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return meta


def push_blob(client: httpx.Client, repo: str, digest: str, path: Path | None = None, data: bytes | None = None) -> None:
    if path is None:
        upload_blob(client, repo, digest, data)
        return
    with open(path, "rb") as fh:
        upload_blob(client, repo, digest, iter(lambda: fh.read(4 * MiB), b""))


def build_images(gib: float) -> dict[str, list[dict]]:
    """name -> its layers; ``base`` is shared by a and b. Unique bytes = gib GiB."""
    unit = int(gib * 1024 * MiB) // 16          # 16 units: base 4, a1 3, b1 3, b2 1, c1 5
    layers_dir = WORK / f"layers-{gib}"
    layers_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"base": 4, "a1": 3, "b1": 3, "b2": 1, "c1": 5}
    made = {n: make_layer(layers_dir / f"{n}.tar.gz", k * unit) for n, k in sizes.items()}
    return {"app-a": [made["base"], made["a1"]], "app-b": [made["base"], made["b1"], made["b2"]],
            "app-c": [made["c1"]]}


def push_images(registry, images: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    with httpx.Client(base_url=registry.url, timeout=600) as client:
        for name, layers in images.items():
            repo = f"bench/{name}"
            config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]},
                                 "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
                                 "history": [{"created_by": "bench"} for _ in layers]},
                                sort_keys=True, separators=(",", ":")).encode()
            config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
            for l in layers:
                push_blob(client, repo, l["digest"], path=Path(l["path"]))
            push_blob(client, repo, config_digest, data=config)
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": l["digest"], "size": l["size"]} for l in layers],
            }, sort_keys=True, separators=(",", ":")).encode()
            r = client.put(f"/v2/{repo}/manifests/1", content=manifest, headers={"Content-Type": OCI_MANIFEST})
            r.raise_for_status()
            out[name] = {"repo": repo, "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                         "config": config_digest, "manifest_size": len(manifest), "config_size": len(config)}
    return out


def write_lab(root: Path, registry, pushed: dict[str, dict]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    (root / "blueprints" / "services").mkdir(parents=True)
    (root / "blueprints" / "lab.toml").write_text(
        '[lab]\nname = "bench"\ndefault_profile = "all"\nplatforms = ["linux/amd64"]\n\n'
        f'[profiles.all]\nservices = {json.dumps(sorted(pushed))}\n')
    for name, p in pushed.items():
        (root / "blueprints" / "services" / f"{name}.toml").write_text(
            f'[service]\nname = "{name}"\ndescription = "bench image {name}"\nphase = 0\ncategory = "app"\n\n'
            f'[image]\nname = "{registry.host}/{p["repo"]}"\ntag = "1"\ndigest = "{p["digest"]}"\n')


# --------------------------------------------------------------------------- measuring

class DiskSampler:
    """Peak growth of the filesystem holding ``path`` while running (sampled every 20 ms); with
    ``only``, of the blocks allocated to files under those directories (on a shared machine
    the filesystem also grows by what others write)."""

    def __init__(self, path: Path, only: tuple[Path, ...] = ()) -> None:
        self.path, self.only = path, only
        self.peak = 0
        self._stop = threading.Event()

    def used(self) -> int:
        if self.only:
            total = 0
            for top in self.only:
                for base, _, files in os.walk(top):
                    for name in files:
                        try:
                            total += os.lstat(os.path.join(base, name)).st_blocks * 512
                        except FileNotFoundError:
                            pass
            return total
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def __enter__(self) -> "DiskSampler":
        self.base = self.used()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used() - self.base)
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.used() - self.base)
        self.final = self.used() - self.base


CPU: list[float] = [0.0]     # CPU seconds (user + system) of the last ``run``: on a shared machine wall times
                             # are noisy, CPU seconds much less so


def run(cmd: list[str], env: dict | None = None, quiet: bool = True) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes of the process); its CPU seconds go to ``CPU[0]``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    CPU[0] = usage.ru_utime + usage.ru_stime
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({code}):\n{stderr.decode()[-3000:]}")
    return wall, usage.ru_maxrss * 1024


def remove_images(refs: list[str], image_ids: list[str] = ()) -> None:
    """Remove the images by tag and by ID, and every other bench image: an earlier run's copy
    under another registry port (or the delta bench's) has the same layers, and `docker load`
    would skip importing them, measuring only the stream."""
    listed = subprocess.run(["docker", "images", "--format", "{{.ID}} {{.Repository}}"],
                            capture_output=True, text=True).stdout.split("\n")
    others = [line.split()[0] for line in listed if "/bench/" in line]
    subprocess.run(["docker", "rmi", "-f", *refs, *image_ids, *others], capture_output=True)


def drop_caches(*files: Path) -> None:
    """Flush dirty pages so one measurement's writeback does not bill the next; ``files`` leave
    the page cache (a copy of them then reads the disk, as the first one did)."""
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def skopeo_copy(host: str, pushed: dict[str, dict], layout: Path) -> float:
    """Seconds for `skopeo copy` of every pushed image from ``host`` into the OCI ``layout`` (the peer);
    its CPU seconds (all three copies) go to ``CPU[0]``."""
    t, cpu = time.perf_counter(), 0.0
    for name, p in sorted(pushed.items()):
        run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
             f"docker://{host}/{p['repo']}:1", f"oci:{layout}:{name}"])
        cpu += CPU[0]
    CPU[0] = cpu
    return time.perf_counter() - t


def cold_runs(registry, pushed: dict[str, dict], runs: int, latency: float) -> None:
    """Cold `release --with-images` vs `skopeo copy` into an OCI layout, ``runs`` times, alternating;
    with the disk peak of each cold release, and a warm release (the cold bundle present: its
    blobs are copied from it) against a plain `cp` of that bundle on the same filesystem."""
    from statistics import median
    from support.faultproxy import FaultProxy
    proxy = FaultProxy(registry.host, latency=latency) if latency else None
    source = type("Source", (), {"host": proxy.host if proxy else registry.host})()
    lab, out, cache, layout = WORK / "lab-cold", WORK / "dist-cold", WORK / "cache-cold", WORK / "skopeo-cold"
    warm_out, copied = WORK / "dist-warm", WORK / "cp-copy.tar"
    write_lab(lab, source, pushed)
    run([str(BIN / "labbuild"), "--root", str(lab), "lock"])
    ours, theirs, peaks, own_peaks, warms, cps, cp_syncs, baselines = [], [], [], [], [], [], [], []
    cpu: dict[str, list[float]] = {"skopeo": [], "cold": [], "warm": [], "cp": [], "baseline": []}
    labbuild = [str(BIN / "labbuild"), "--root", str(lab), "release", "1.0.0", "--with-images"]
    try:
        for i in range(runs):
            shutil.rmtree(layout, ignore_errors=True)
            drop_caches()
            theirs.append(skopeo_copy(source.host, pushed, layout))
            cpu["skopeo"].append(CPU[0])
            shutil.rmtree(layout, ignore_errors=True)
            for d in (out, cache, warm_out, lab / "lockfiles" / "releases"):
                shutil.rmtree(d, ignore_errors=True)
            drop_caches()
            with DiskSampler(WORK) as disk, DiskSampler(WORK, only=(out, cache)) as own:
                wall, _ = run([*labbuild, "--out", str(out)], env={"XDG_CACHE_HOME": str(cache)})
            ours.append(wall)
            cpu["cold"].append(CPU[0])
            (bundle,) = out.glob("*.tar")
            peaks.append(disk.peak / bundle.stat().st_size)
            own_peaks.append(own.peak / bundle.stat().st_size)
            if BASELINE:    # another labbuild (e.g. main's), same run, same lab: before and after
                base_out, base_cache = WORK / "dist-baseline", WORK / "cache-baseline"
                for d in (base_out, base_cache, lab / "lockfiles" / "releases"):
                    shutil.rmtree(d, ignore_errors=True)
                drop_caches()
                wall, _ = run([BASELINE, *labbuild[1:], "--out", str(base_out)], env={"XDG_CACHE_HOME": str(base_cache)})
                baselines.append(wall)
                cpu["baseline"].append(CPU[0])
                same = (base_out / bundle.name).read_bytes() == bundle.read_bytes()
                print(f"  baseline {BASELINE}: cold {wall:.2f}s, {CPU[0]:.2f} CPU-s ({wall / theirs[-1]:.2f}x skopeo); "
                      f"same bytes: {same}", flush=True)
                for d in (base_out, base_cache):
                    shutil.rmtree(d, ignore_errors=True)

            def warm_release() -> None:
                shutil.rmtree(lab / "lockfiles" / "releases", ignore_errors=True)
                shutil.rmtree(warm_out, ignore_errors=True)
                drop_caches(bundle)
                warms.append(run([*labbuild, "--out", str(warm_out)], env={"XDG_CACHE_HOME": str(cache)})[0])
                cpu["warm"].append(CPU[0])

            def plain_cp() -> None:
                copied.unlink(missing_ok=True)
                drop_caches(bundle)
                t = time.perf_counter()
                run(["cp", str(bundle), str(copied)])
                cps.append(time.perf_counter() - t)
                cpu["cp"].append(CPU[0])
                run(["sync", str(copied)])
                cp_syncs.append(time.perf_counter() - t)
                copied.unlink()

            # the first copy of a GiB after the cold release is the slow one here, whichever tool
            # makes it (cp + sync: 2.5 s then 1.3 s): the two take turns at being first
            for step in (warm_release, plain_cp) if i % 2 == 0 else (plain_cp, warm_release):
                step()
            warm = warms[-1]
            print(f"run {i + 1}: skopeo {theirs[-1]:.2f}s, cold release {ours[-1]:.2f}s "
                  f"({ours[-1] / theirs[-1]:.2f}x), disk peak {peaks[-1]:.3f}x the bundle (its own files "
                  f"{own_peaks[-1]:.3f}x); warm {warm:.2f}s, "
                  f"cp {cps[-1]:.2f}s, cp+sync {cp_syncs[-1]:.2f}s (load {os.getloadavg()[0]:.1f}); CPU-s: "
                  + ", ".join(f"{k} {v[-1]:.2f}" for k, v in cpu.items() if v), flush=True)
    finally:
        if proxy:
            proxy.close()
        for d in (out, cache, layout, warm_out):
            shutil.rmtree(d, ignore_errors=True)
    m = median
    starts = {tool: m(run(cmd)[0] for _ in range(5)) for tool, cmd in (     # paid once per release
        ("labbuild", [str(BIN / "python"), "-c", "import builder.cli, builder.bundle.release"]),
        ("skopeo", ["skopeo", "--version"]))}
    print(f"latency {latency * 1000:.0f} ms/request, median of {runs} (load averages {os.getloadavg()}):\n"
          f"  cold release {m(ours):.2f}s vs skopeo {m(theirs):.2f}s = {m(ours) / m(theirs):.2f}x "
          f"(target <= {0.6 if latency else 0.7}x)\n"
          f"  disk peak during the cold release: {m(peaks):.3f}x the bundle (target <= 1.02x; worst {max(peaks):.3f}x);"
          f" its own files (dist + cache): {m(own_peaks):.3f}x (worst {max(own_peaks):.3f}x)\n"
          f"  warm release {m(warms):.2f}s vs cp {m(cps):.2f}s = {m(warms) / m(cps):.2f}x (target <= 1.2x); "
          f"vs cp+sync {m(cp_syncs):.2f}s = {m(warms) / m(cp_syncs):.2f}x; vs skopeo {m(warms) / m(theirs):.2f}x")
    print("  CPU seconds (user + system), medians: " + ", ".join(f"{k} {m(v):.2f}" for k, v in cpu.items() if v))
    print(f"  process start (interpreter and the release path's imports, before any request or copy): "
          f"labbuild {starts['labbuild']:.2f}s, skopeo {starts['skopeo']:.2f}s; the warm release less that "
          f"start vs cp+sync: {(m(warms) - starts['labbuild']) / m(cp_syncs):.2f}x")
    if baselines:
        print(f"  baseline cold release {m(baselines):.2f}s = {m(baselines) / m(theirs):.2f}x skopeo; "
              f"this one / baseline = {m(ours) / m(baselines):.2f}x (CPU {m(cpu['cold']) / m(cpu['baseline']):.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="unique GiB of layers (default 1.0)")
    ap.add_argument("--keep", action="store_true", help="keep the bench directory's outputs")
    ap.add_argument("--release-only", action="store_true", help="skip the install measurements")
    ap.add_argument("--cold-runs", type=int, default=0, help="only cold release vs skopeo, N runs, medians")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every registry request")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    # byte-compiled, as an installed labbuild is (pip compiles a wheel's modules): with
    # PYTHONDONTWRITEBYTECODE set, an editable checkout would compile every module on every run
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "builder")], check=True,
                   stdout=subprocess.DEVNULL)
    env_path = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    t = time.perf_counter()
    images = build_images(args.gib)
    print(f"layers ready in {time.perf_counter() - t:.1f}s")
    registry = start_registry(WORK / "registry", port=None)
    try:
        t = time.perf_counter()
        pushed = push_images(registry, images)
        print(f"images pushed in {time.perf_counter() - t:.1f}s to {registry.host}")
        if args.cold_runs:
            cold_runs(registry, pushed, args.cold_runs, args.latency)
            return
        lab = WORK / "lab"
        write_lab(lab, registry, pushed)
        run([str(BIN / "labbuild"), "--root", str(lab), "lock"])
        refs = [f"{registry.host}/{p['repo']}:1" for p in pushed.values()]
        image_ids = [p["config"] for p in pushed.values()]
        unique = {l["digest"]: l["size"] for ls in images.values() for l in ls}
        unique_bytes = sum(unique.values()) + sum(p["manifest_size"] + p["config_size"] for p in pushed.values())

        # ---- skopeo copy of the same images into one OCI layout
        skopeo_dir = WORK / "skopeo-layout"
        shutil.rmtree(skopeo_dir, ignore_errors=True)
        drop_caches()
        skopeo_s = skopeo_copy(registry.host, pushed, skopeo_dir)
        shutil.rmtree(skopeo_dir, ignore_errors=True)

        # ---- release, cold then warm
        out = WORK / "dist"
        cache = WORK / "cache"

        def release(label: str, out: Path) -> tuple[float, int, DiskSampler, Path]:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(lab / "lockfiles" / "releases", ignore_errors=True)
            drop_caches()
            with DiskSampler(WORK) as disk:
                wall, rss = run([str(BIN / "labbuild"), "--root", str(lab), "release", "1.0.0", "--with-images",
                                 "--out", str(out)], env={"XDG_CACHE_HOME": str(cache)})
            (bundle,) = out.iterdir()
            print(f"{label}: {wall:.2f}s, peak RSS {rss / MiB:.0f} MiB, disk peak +{disk.peak / MiB:.0f} MiB")
            return wall, rss, disk, bundle

        shutil.rmtree(cache, ignore_errors=True)
        cold_s, cold_rss, cold_disk, bundle = release("cold release", out)
        cache_bytes = sum(f.stat().st_size for f in (cache / "labbuild" / "blobs" / "sha256").iterdir())
        # warm: the cold bundle stays where it was written; its blobs are copied from it
        warm_s, warm_rss, warm_disk, bundle = release("warm release", WORK / "dist-warm")
        bundle_size = bundle.stat().st_size

        # the outer format, by measurement: gzip over already-compressed layers
        t = time.perf_counter()
        gz_size = 0
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        with open(bundle, "rb") as fh:
            while block := fh.read(4 * MiB):
                gz_size += len(comp.compress(block))
        gz_size += len(comp.flush())
        gz_s = time.perf_counter() - t

        if args.release_only:
            print(f"skopeo {skopeo_s:.2f}s; cold {cold_s / skopeo_s:.2f}x; warm {warm_s / skopeo_s:.2f}x")
            return
        # ---- install --no-start vs raw docker load, alternating, best of 2
        raw = WORK / "raw-load.tar"
        extract = WORK / "raw-extract"
        shutil.rmtree(extract, ignore_errors=True)
        extract.mkdir()
        with tarfile.open(bundle) as tar:
            tar.extractall(extract, filter="data")
        (top,) = extract.iterdir()
        with tarfile.open(raw, "w") as tar:   # exactly what docker load needs: manifest.json + blobs
            for item in sorted((top / "images").iterdir()):
                tar.add(item, item.name)
        shutil.rmtree(extract)
        loads, installs = [], []
        for _ in range(2):
            remove_images(refs, image_ids)
            drop_caches()
            wall, _ = run(["docker", "load", "-i", str(raw)])
            loads.append(wall)
            remove_images(refs, image_ids)
            target = WORK / "install"
            shutil.rmtree(target, ignore_errors=True)
            drop_caches()
            wall, inst_rss = run([str(BIN / "labbuild"), "install", str(bundle), "--dir", str(target), "--no-start"],
                                 env=env_path)
            installs.append(wall)
        remove_images(refs, image_ids)
        shutil.rmtree(WORK / "install", ignore_errors=True)
        raw.unlink()

        load_s, install_s = min(loads), min(installs)
        print()
        print(f"unique blobs: {unique_bytes / MiB:.1f} MiB in {len(unique)} layers "
              f"(+{len(pushed)} configs and manifests); images referencing them total "
              f"{sum(l['size'] for ls in images.values() for l in ls) / MiB:.1f} MiB")
        print(f"skopeo copy (3 images -> one OCI layout): {skopeo_s:7.2f}s")
        print(f"release --with-images, cold cache:        {cold_s:7.2f}s  = {cold_s / skopeo_s:.2f}x skopeo"
              f"   (target <= 1.0x)")
        print(f"release --with-images, warm cache:        {warm_s:7.2f}s  = {warm_s / skopeo_s:.2f}x skopeo"
              f"   (target <= 0.2x)")
        print(f"peak RSS of release: cold {cold_rss / MiB:.0f} MiB, warm {warm_rss / MiB:.0f} MiB"
              f"   (target <= 200 MiB); install {inst_rss / MiB:.0f} MiB")
        print(f"bundle: {bundle.name} {bundle_size / MiB:.1f} MiB = unique blobs + {(bundle_size - unique_bytes) / 1024:.1f} KiB"
              f" ({bundle_size / unique_bytes:.4f}x)")
        print(f"outer format: gzip -6 of the .tar would be {gz_size / MiB:.1f} MiB ({gz_size / bundle_size:.4f}x)"
              f" and cost {gz_s:.1f}s more CPU -> .tar")
        print(f"disk during cold release: peak +{cold_disk.peak / MiB:.0f} MiB = {cold_disk.peak / bundle_size:.3f}x"
              f" the bundle (blob cache: {cache_bytes / MiB:.1f} MiB of manifests and configs)   (target <= 1.02x)")
        print(f"disk during warm release: peak +{warm_disk.peak / MiB:.0f} MiB = {warm_disk.peak / bundle_size:.2f}x the bundle"
              f"   (target <= 1.1x)")
        print(f"docker load (raw tar of the same images): {load_s:7.2f}s  (runs: {', '.join(f'{x:.2f}' for x in loads)})")
        print(f"labbuild install --no-start:              {install_s:7.2f}s  = {install_s / load_s:.2f}x docker load"
              f"   (target <= 1.1x; runs: {', '.join(f'{x:.2f}' for x in installs)})")
    finally:
        registry.stop()
        if not args.keep:
            shutil.rmtree(WORK / "dist", ignore_errors=True)
            shutil.rmtree(WORK / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
