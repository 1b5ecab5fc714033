"""Benchmark of model placement: `install` placing a model into a volume vs a plain copy.

    .venv/bin/python bench/models.py [--gib 1.0] [--keep]

Writes one Ollama-format model whose weights are --gib GiB of random
(incompressible) bytes behind a GGUF header, plus template, params, config
and manifest, into an image-bundle-shaped tar (``images/blobs/sha256/<hex>``),
then measures, each into a fresh volume through a created (never started)
container of a locally imported busybox image:

- ``builder.install.models.place_models`` (the step `labbuild install` runs
  after the bundle verified: a stat per blob, then one archive-API PUT whose
  blob bytes go from the bundle file to the engine with sendfile, each under
  a temporary name then linked to its name, manifest last)
  vs ``docker cp`` of the same blob files into the volume      target <= 1.3x
- peak RSS of the placing process                              target <= 200 MiB

Prints both times and the ratio. Data is kept in $BENCH_DIR
(default /tmp/labbuild-bench-models) so a second run skips the generation.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORK = Path(os.environ.get("BENCH_DIR", "/tmp/labbuild-bench-models"))
MiB = 1 << 20
IMAGE = "labbuild-bench-models-busybox:1"
TOP = "bench-models-1.0.0"      # lab "bench", profile "models"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def write_blob(path: Path, size: int, head: bytes = b"") -> str:
    """Random bytes (streamed, never in memory) into ``path``; its sha256 digest."""
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        fh.write(head)
        h.update(head)
        left = size - len(head)
        while left > 0:
            block = os.urandom(min(8 * MiB, left))
            fh.write(block)
            h.update(block)
            left -= len(block)
    return "sha256:" + h.hexdigest()


def small_blob(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_bundle(gib: float) -> tuple[Path, dict, dict[str, Path]]:
    """The bundle tar, the manifest.json model entry, and digest -> blob file."""
    WORK.mkdir(parents=True, exist_ok=True)
    meta = WORK / "model.json"
    bundle = WORK / "bundle.tar"
    if meta.exists() and bundle.exists():
        saved = json.loads(meta.read_text())
        return bundle, saved["model"], {d: Path(p) for d, p in saved["files"].items()}
    files: dict[str, Path] = {}
    weights = write_blob(WORK / "weights.bin", int(gib * (1 << 30)), b"GGUF")
    files[weights] = WORK / "weights.bin"
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": weights,
               "size": files[weights].stat().st_size}]
    for name, data, media in (("template", b"{{ .Prompt }}", "application/vnd.ollama.image.template"),
                              ("params", b'{"stop":["<|end|>"]}', "application/vnd.ollama.image.params")):
        d = small_blob(WORK / f"{name}.bin", data)
        files[d] = WORK / f"{name}.bin"
        layers.append({"mediaType": media, "digest": d, "size": len(data)})
    config = json.dumps({"model_format": "gguf", "model_family": "bench",
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
    cd = small_blob(WORK / "config.bin", config)
    files[cd] = WORK / "config.bin"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "digest": cd, "size": len(config)}, "layers": layers}).encode()
    md = small_blob(WORK / "manifest.bin", manifest)
    files[md] = WORK / "manifest.bin"
    with tarfile.open(bundle, "w", format=tarfile.PAX_FORMAT) as tar:
        for d, path in sorted(files.items()):
            tar.add(path, f"{TOP}/images/blobs/sha256/{d.removeprefix('sha256:')}")
    model = {"name": "registry.ollama.ai/library/bench", "tag": "1g", "digest": md, "format": "ollama",
             "volume": "data", "path": "models", "role": None, "media_type": DOCKER_MANIFEST,
             "size": len(manifest),
             "blobs": [{"digest": cd, "size": len(config), "media_type": "application/vnd.docker.container.image.v1+json"},
                       *[{"digest": l["digest"], "size": l["size"], "media_type": l["mediaType"]} for l in layers]]}
    meta.write_text(json.dumps({"model": model, "files": {d: str(p) for d, p in files.items()}}))
    return bundle, model, files


def bundle_manifest(model: dict, files: dict[str, Path]) -> dict:
    entries = {f"images/blobs/sha256/{d.removeprefix('sha256:')}": {"sha256": d.removeprefix("sha256:"),
                                                                    "size": p.stat().st_size}
               for d, p in files.items()}
    return {"format": 1, "lab": "bench", "name": TOP, "version": "1.0.0", "profile": "models", "inputs": model["digest"],
            "labbuild": "0", "offline": True, "platforms": ["linux/amd64"], "files": entries,
            "services": {"llm": {"image": IMAGE, "digest": model["digest"], "verified": True, "config_digests": {},
                                 "ports": [], "health": None, "depends_on": [], "secrets": [],
                                 "volumes": [{"name": "data", "volume": "llm_data", "target": "/data",
                                              "read_only": False}],
                                 "runbook": "runbooks/llm.md", "healthcheck": False, "models": [model]}}}


def ensure_image() -> None:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    root = WORK / "rootfs"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    tar = subprocess.run(["tar", "-C", str(root), "-cf", "-", "."], capture_output=True, check=True).stdout
    subprocess.run(["docker", "import", "-", IMAGE], input=tar, check=True, capture_output=True)


def fresh_container(tag: str) -> tuple[str, str]:
    volume = f"labbuild-bench-models-{tag}-{os.getpid()}"
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    cid = subprocess.run(["docker", "create", "-v", f"{volume}:/data", IMAGE, "/bin/busybox", "true"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return cid, volume


def remove(cid: str, volume: str) -> None:
    subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def place_child(bundle: Path, manifest_path: Path, cid: str) -> None:
    """Runs in a child process (so its peak RSS is its own): place the model into ``cid``."""
    import docker

    from builder.format.manifest import Manifest
    from builder.install.models import place_models

    client = docker.from_env(timeout=600)
    manifest = Manifest.loads(manifest_path.read_bytes())
    container = client.containers.get(cid)
    start = time.perf_counter()
    placed = place_models(client, bundle, manifest, {"llm": container}, lambda _: None)
    print(json.dumps({"seconds": time.perf_counter() - start, "written": len(placed["llm"].written),
                      "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def docker_cp(files: dict[str, Path]) -> float:
    """Seconds of ``docker cp`` of the model's blob files into a fresh volume."""
    cid, volume = fresh_container("cp")
    stage = WORK / "cp"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        (stage / "models" / "blobs").mkdir(parents=True)
        for d, p in files.items():
            os.link(p, stage / "models" / "blobs" / f"sha256-{d.removeprefix('sha256:')}")
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        subprocess.run(["docker", "cp", f"{stage}/models", f"{cid}:/data/"], check=True, capture_output=True)
        return time.perf_counter() - start
    finally:
        remove(cid, volume)
        shutil.rmtree(stage, ignore_errors=True)


def placement(bundle: Path, manifest_path: Path, model: dict, files: dict[str, Path]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of placing the model into a fresh volume, in a child process."""
    cid, volume = fresh_container("place")
    try:
        subprocess.run(["sync"], check=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(manifest_path), cid],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"placement failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        # read back the manifest at Ollama's path: proof that it landed
        got = subprocess.run(["docker", "cp", f"{cid}:/data/models/manifests/registry.ollama.ai/library/bench/1g", "-"],
                             capture_output=True, check=True).stdout
        assert files[model["digest"]].read_bytes() in got, "the manifest bytes are not in place"
        return result["seconds"], result["rss_kib"] / 1024
    finally:
        remove(cid, volume)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        place_child(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true", help="keep the generated data in $BENCH_DIR")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are compared")
    args = ap.parse_args()
    bundle, model, files = make_bundle(args.gib)
    manifest_path = WORK / "manifest.json"
    manifest_path.write_text(json.dumps(bundle_manifest(model, files)))
    ensure_image()

    peers, ours_runs, rss_runs = [], [], []
    for _ in range(args.rounds):      # alternate, so a busy neighbour slows both alike
        peers.append(docker_cp(files))
        seconds, rss = placement(bundle, manifest_path, model, files)
        ours_runs.append(seconds)
        rss_runs.append(rss)
    peer, ours = statistics.median(peers), statistics.median(ours_runs)
    size = sum(p.stat().st_size for p in files.values())
    ratio = ours / peer
    rss = max(rss_runs)
    print("runs (s): docker cp " + ", ".join(f"{s:.2f}" for s in peers)
          + "; placement " + ", ".join(f"{s:.2f}" for s in ours_runs))
    print(f"model bytes placed                               {size / MiB:10.1f} MiB")
    print(f"docker cp of the same blobs into a volume        {peer:10.2f} s")
    print(f"labbuild placement (archive API, sendfile)      {ours:10.2f} s")
    print(f"ratio placement / docker cp                      {ratio:10.2f} x   target <= 1.3x   "
          f"{'OK' if ratio <= 1.3 else 'MISSED'}")
    print(f"peak RSS of the placing process                  {rss:10.1f} MiB target <= 200 MiB "
          f"{'OK' if rss <= 200 else 'MISSED'}")
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0 if ratio <= 1.3 and rss <= 200 else 1


if __name__ == "__main__":
    sys.exit(main())
