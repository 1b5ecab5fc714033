"""Image bundles written in place (builder.bundle.direct): resume after kill -9, and the index of
verified bundles a warm release copies from. Real registry, real `labbuild release` processes; the
fault proxy in front of the registry only counts the blob downloads (and slows them, so that a
kill lands while blobs are in flight)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.blobcache import BlobCache
from builder.blueprint import load_lab
from builder.bundle.fetch import FETCH_WORKERS, DirectBlob, image_files
from builder.bundle.located import index_path, locate
from builder.lockfile import read_lock

from e2e.labkit import AirgapLab, images_lab
from support.faultproxy import FaultProxy

LABBUILD = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "labbuild"


@pytest.fixture
def slow_lab(tmp_path, registry):
    """web (amd64+arm64) and api, locked through a proxy adding 0.15 s to every request."""
    proxy = FaultProxy(registry.host, latency=0.15)
    via = SimpleNamespace(host=proxy.host, client=registry.client, stop=registry.stop)
    lab = images_lab(AirgapLab(root=tmp_path / "lab", registry=via, name=f"direct-{uuid.uuid4().hex[:8]}"))
    try:
        yield lab, proxy
    finally:
        proxy.close()


def sizes_of(lab) -> dict[str, int]:
    lock = read_lock(lab.root / "lockfiles" / "lab.lock.json")
    return {layer.digest: layer.size for rec in lock.services.values() for p in rec.platforms.values()
            for layer in p.layers}


def blob_gets(proxy, start: int) -> list[str]:
    return [p.rsplit("/", 1)[-1] for m, p in proxy.requests[start:] if m == "GET" and "/blobs/sha256:" in p]


def release(root: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.Popen([str(LABBUILD), "--root", str(root), "release", "1.0.0", "--with-images",
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def killed(proc: subprocess.Popen) -> None:
    """kill -9, then let the proxy log what the process sent before it died (a request still in
    the socket's buffer is read after the death)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(0.6)


def fresh_root(lab, where: Path) -> Path:
    """A copy of the lab without release records: each series releases 1.0.0 afresh."""
    shutil.copytree(lab.root, where, ignore=shutil.ignore_patterns("dist", "releases"))
    return where


def journaled(out: Path) -> set[str]:
    done = set()
    for journal in out.glob(".*.journal"):
        for line in journal.read_text().split("\n")[1:]:
            parts = line.split(" ")
            if len(parts) == 3:
                done.add("sha256:" + parts[0])
    return done


def test_kill_9_at_random_points_then_resume_is_byte_identical_and_refetches_only_blobs_in_flight(slow_lab, tmp_path):
    lab, proxy = slow_lab
    sizes = sizes_of(lab)
    for digest in sizes:        # each layer takes a while to come: kills land while layers are in flight
        proxy.add("delay", f"/blobs/{digest}", method="GET", seconds=0.5, times=1000)
    ref_proc = release(fresh_root(lab, tmp_path / "ref"), tmp_path / "ref-out", tmp_path / "ref-cache")
    t0 = time.monotonic()
    assert ref_proc.wait(timeout=300) == 0, ref_proc.stderr.read().decode()
    took = time.monotonic() - t0
    (reference,) = (tmp_path / "ref-out").glob("*.tar")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills = resumed = 0
    for series in range(3):
        root = fresh_root(lab, tmp_path / f"s{series}")
        out, cache = tmp_path / f"s{series}-out", tmp_path / f"s{series}-cache"
        done: set[str] = set()          # journaled by the runs so far
        in_flight: set[str] = set()     # fetched by the last killed run but not journaled
        for attempt in range(4):        # up to three kills, then a run to the end
            mark = len(proxy.requests)
            proc = release(root, out, cache)
            if attempt < 3:
                time.sleep(rng.uniform(0.3, max(0.4, took)))
                killed(proc)
            else:
                assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
            fetched = set(blob_gets(proxy, mark)) & set(sizes)   # layers (configs go through the blob cache)
            assert not fetched & done, (seed, fetched & done)      # nothing journaled is fetched again
            refetched = fetched & in_flight
            assert sum(sizes[d] for d in refetched) <= sum(sizes[d] for d in in_flight), seed
            if proc.returncode != -signal.SIGKILL:
                break                   # it ended before the kill
            kills += 1
            if list(out.glob("*.tar")):     # killed after the rename (writing the record): nothing in flight
                done, in_flight = set(), set()
                continue
            done = journaled(out)
            in_flight = fetched - done
            assert len(in_flight) <= FETCH_WORKERS, (seed, in_flight)
            resumed += len(done & set(sizes))
        (bundle,) = out.glob("*.tar")
        assert bundle.read_bytes() == reference.read_bytes(), seed
        assert sorted(p.name for p in out.iterdir()) == [bundle.name]     # journal and partial are gone
    print(f"seed {seed}: {kills} kills, {resumed} layer blobs taken from journals instead of the registry")


def test_a_warm_release_copies_from_a_noted_bundle_and_distrusts_one_changed_since(slow_lab, tmp_path):
    lab, proxy = slow_lab
    cache = tmp_path / "cache"
    first = release(fresh_root(lab, tmp_path / "a"), tmp_path / "a-out", cache)
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    (bundle,) = (tmp_path / "a-out").glob("*.tar")
    noted = locate_with(cache, sizes_of(lab))
    assert set(noted) == set(sizes_of(lab)) and {w.path for w in noted.values()} == {bundle.resolve()}
    documents = json.loads((cache / "labbuild" / "bundles.json").read_text())["bundles"][str(bundle.resolve())]
    assert len(documents["documents"]) == 3          # web amd64 and arm64, api amd64: the SBOMs, reused below

    # unchanged: every layer is copied from it, none downloaded
    mark = len(proxy.requests)
    warm = release(fresh_root(lab, tmp_path / "b"), tmp_path / "b-out", cache)
    assert warm.wait(timeout=300) == 0, warm.stderr.read().decode()
    assert not set(blob_gets(proxy, mark)) & set(sizes_of(lab))
    (copy,) = (tmp_path / "b-out").glob("*.tar")
    assert copy.read_bytes() == bundle.read_bytes()

    # changed after it was noted (a byte of a layer and of an SBOM, mtime put back): not trusted,
    # the layers are fetched again and the SBOMs made again
    where = noted[max(noted, key=lambda d: noted[d].size)]
    sbom_at, _ = next(iter(documents["documents"].values()))
    st = bundle.stat()
    with open(bundle, "r+b") as fh:     # a byte of the biggest layer, and one of an SBOM's JSON
        for at in (where.offset + where.size // 2, sbom_at + 40):
            fh.seek(at)
            byte = fh.read(1)
            fh.seek(at)
            fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(bundle, ns=(st.st_atime_ns, st.st_mtime_ns))
    expected = copy.read_bytes()
    copy.unlink()        # the warm bundle is noted too: only the changed one may serve
    mark = len(proxy.requests)
    third = release(fresh_root(lab, tmp_path / "c"), tmp_path / "c-out", cache)
    assert third.wait(timeout=300) == 0, third.stderr.read().decode()
    (made,) = (tmp_path / "c-out").glob("*.tar")
    assert set(blob_gets(proxy, mark)) >= set(sizes_of(lab))      # every layer of the changed bundle fetched
    assert made.read_bytes() == expected


def locate_with(cache: Path, sizes, kind: str = "blobs"):
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        assert index_path().is_file()
        return locate(sizes, kind)
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


def test_every_blob_starts_at_once_and_a_lock_without_sizes_still_gives_the_same_bundle(slow_lab, tmp_path):
    """Layers need not wait for manifests and configs (issue 16's early start): the lock gives every
    size, so planning the members of a cold release asks the registry nothing, and the release
    fetches each manifest once, through the manifests API, into the archive. A lock without
    manifest and config sizes (an older labbuild's) has them fetched first: the same images/ and
    sbom/ members (the bundle's lock.json, and so its manifest, differ by those sizes)."""
    lab, proxy = slow_lab
    root = fresh_root(lab, tmp_path / "a")
    lock = read_lock(root / "lockfiles" / "lab.lock.json")
    wanted = {d for rec in lock.services.values() for d in [rec.digest, *(p.manifest for p in rec.platforms.values())]}
    blobs = {d for rec in lock.services.values() for p in rec.platforms.values()
             for d in [p.config, *(layer.digest for layer in p.layers)]}
    mark = len(proxy.requests)
    members = image_files(load_lab(root), lock, sorted(lock.services), progress=False,
                          cache=BlobCache(tmp_path / "planning-cache"), direct=True)
    assert proxy.requests[mark:] == []
    assert {f.digest for f in members if isinstance(f, DirectBlob) and f.manifest} == wanted
    assert {f.digest for f in members if isinstance(f, DirectBlob) and not f.manifest} == blobs

    mark = len(proxy.requests)
    first = release(root, tmp_path / "a-out", tmp_path / "a-cache")
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    (bundle,) = (tmp_path / "a-out").glob("*.tar")
    gets = [p for m, p in proxy.requests[mark:] if m == "GET"]
    assert sorted(p.rsplit("/", 1)[-1] for p in gets if "/manifests/" in p) == sorted(wanted)
    assert sorted(blob_gets(proxy, mark)) == sorted(blobs)          # each once, nothing else asked
    assert all((tmp_path / "a-cache" / "labbuild" / "blobs" / "sha256" / d[7:]).is_file() for d in wanted)

    old = fresh_root(lab, tmp_path / "b")
    data = json.loads((old / "lockfiles" / "lab.lock.json").read_text())
    for rec in data["services"].values():
        for p in rec["platforms"].values():
            p.pop("manifest_size", None)
            p.pop("config_size", None)
    (old / "lockfiles" / "lab.lock.json").write_text(json.dumps(data, indent=2))
    mark = len(proxy.requests)
    second = release(old, tmp_path / "b-out", tmp_path / "b-cache")
    assert second.wait(timeout=300) == 0, second.stderr.read().decode()
    order = [p for m, p in proxy.requests[mark:] if m == "GET"]
    last_manifest = max(i for i, p in enumerate(order) if "/manifests/" in p)
    assert all("/manifests/" not in p for p in order[last_manifest + 1:]) and \
        not {p.rsplit("/", 1)[-1] for p in order[:last_manifest]} & set(sizes_of(lab))   # manifests first, then layers
    assert members_of(tmp_path / "b-out" / bundle.name) == members_of(bundle)


def members_of(bundle: Path) -> dict[str, bytes]:
    """The images/ and sbom/ members of an image bundle, with their bytes."""
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()
                if m.isfile() and m.name.split("/")[1] in ("images", "sbom")}


def test_a_partial_archive_truncated_mid_release_is_a_clean_error_naming_it(slow_lab, tmp_path):
    """Something outside labbuild cuts the partial archive short while a release fills it: the
    release ends with exit 1 and a message naming the file, not a signal (a read through a map of a
    truncated file is SIGBUS) nor a traceback. One layer is held back by the proxy so the release is
    still writing when the file is cut."""
    lab, proxy = slow_lab
    held = min(sizes_of(lab))       # first in archive order: never the last region
    proxy.add("delay", f"/blobs/{held}", method="GET", seconds=4, times=1000)
    out = tmp_path / "out"
    proc = release(fresh_root(lab, tmp_path / "a"), out, tmp_path / "cache")
    deadline = time.monotonic() + 120
    while not journaled(out) - {held}:      # laid out and some blob written: mid-release
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
        time.sleep(0.05)
    (partial,) = out.glob(".*.partial")
    os.truncate(partial, 1000)
    assert proc.wait(timeout=120) == 1
    err = proc.stderr.read().decode()
    assert partial.name in err and "truncated" in err and "Traceback" not in err, err
    assert not list(out.glob("*.tar"))      # main before this exited 0 with a bundle its record's sha256 denied


def release_reusing(root: Path, out: Path, cache: Path, *dirs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    reuse = [arg for d in dirs for arg in ("--reuse-from", str(d))]
    return subprocess.run([str(LABBUILD), "--root", str(root), "release", "1.0.0", "--with-images",
                           "--out", str(out), *reuse], env=env, capture_output=True, text=True, timeout=300)


def test_bundles_in_a_named_directory_are_verified_then_reused_and_a_tampered_one_is_skipped(slow_lab, tmp_path):
    """`release --reuse-from DIR`: a bundle copied there (another file, in no index) serves every
    blob once it verified — a release with the registry stopped succeeds, byte for byte a cold one;
    a tampered bundle is skipped with a warning naming it and its blobs are downloaded; files that
    are not bundles are ignored (a *.tar that is not one is a warning too)."""
    lab, proxy = slow_lab
    cold = release(fresh_root(lab, tmp_path / "a"), tmp_path / "a-out", tmp_path / "a-cache")
    assert cold.wait(timeout=300) == 0, cold.stderr.read().decode()
    (reference,) = (tmp_path / "a-out").glob("*.tar")
    expected = reference.read_bytes()
    noted = locate_with(tmp_path / "a-cache", sizes_of(lab))
    biggest = noted[max(noted, key=lambda d: noted[d].size)]

    shelf = tmp_path / "from-ci"
    shelf.mkdir()
    shutil.copyfile(reference, shelf / reference.name)
    (shelf / "notes.txt").write_text("not a bundle\n")
    (shelf / "old").mkdir()
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    bad = tampered / reference.name
    data = bytearray(expected)
    data[biggest.offset + biggest.size // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    (tampered / "junk.tar").write_bytes(b"not a tar archive\n" * 64)

    mark = len(proxy.requests)
    run = release_reusing(fresh_root(lab, tmp_path / "c"), tmp_path / "c-out", tmp_path / "c-cache", tampered)
    assert run.returncode == 0, run.stderr
    assert f"warning: {bad}: not reused (it fails verification: images/blobs/sha256/" in run.stdout, run.stdout
    assert f"warning: {tampered / 'junk.tar'}: not reused" in run.stdout, run.stdout
    assert set(blob_gets(proxy, mark)) >= set(sizes_of(lab))       # the tampered bundle's layers downloaded
    assert (tmp_path / "c-out" / reference.name).read_bytes() == expected
    index = json.loads((tmp_path / "c-cache" / "labbuild" / "bundles.json").read_text())["bundles"]
    assert str(bad.resolve()) not in index

    proxy.close()       # the registry is out of reach: every blob must come from the shelf
    control = release_reusing(fresh_root(lab, tmp_path / "e"), tmp_path / "e-out", tmp_path / "e-cache")
    assert control.returncode == 1 and "Traceback" not in control.stderr, control.stderr     # without it: no way
    run = release_reusing(fresh_root(lab, tmp_path / "d"), tmp_path / "d-out", tmp_path / "d-cache", shelf)
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stdout, run.stdout          # notes.txt and old/ ignored
    assert (tmp_path / "d-out" / reference.name).read_bytes() == expected
    index = json.loads((tmp_path / "d-cache" / "labbuild" / "bundles.json").read_text())["bundles"]
    assert set(index[str((shelf / reference.name).resolve())]["blobs"]) >= set(sizes_of(lab))
