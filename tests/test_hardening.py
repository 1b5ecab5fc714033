"""Issue 10's classes that need a real bundle or engine: bounded work from tiny input (3),
key files that never end included, and an install dir that is never changed before every
check passed (12). The text-file classes are in tests/corpus/ (tests/test_corpus.py)."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from builder.bundle import reader, verify
from builder.bundle.reader import ScannedBundle, walk_bundle
from builder.bundle.release import build_release
from builder.backups.backupcrypt import MAGIC
from builder.format.sums import render_sums
from builder.limits import MAX_PROBLEMS, MAX_SMALL_FILES_TOTAL_BYTES
from builder.render.runbooks import limits_list
from test_bundle_release import run_labbuild
from test_install_backup import _manifest, _service
from test_render import make_lab

VENV_LABBUILD = Path(sys.executable).with_name("labbuild")


def _tar_gz(path: Path, members: dict[str, bytes], top: str = "lab-base-1.0.0") -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(top)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), 9))
    return path


def _peak_rss_mib(*argv: str) -> tuple[int, float, str]:
    """Run argv in a child; its exit code, peak RSS (MiB) and output."""
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024);"
            "print(p.stdout + p.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout
    head, _, text = out.partition("\n")
    rc, rss = head.split()
    return int(rc), float(rss), text


@pytest.mark.parametrize("member,data", [
    ("SHA256SUMS", b"\n" * (8 << 20)),                                    # 8 MiB of newlines
    ("SHA256SUMS", b"x\n" * (2 << 20)),                                   # millions of malformed lines
    ("manifest.json", b"[" * (8 << 20)),                                  # nested beyond any parser
    ("manifest.json", b'{"format": 1, "services": {' + b'"a": 1, ' * (1 << 20) + b'"z": 1}}'),
])
def test_a_tiny_bundle_cannot_make_verify_use_much_memory(tmp_path, member, data):
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", {member: data})
    assert bomb.stat().st_size <= 10 * 1024 * 1.5, bomb.stat().st_size
    rc, rss, text = _peak_rss_mib(str(VENV_LABBUILD), "verify", str(bomb))
    assert rc == 1 and "Traceback" not in text and member in text, text
    assert rss <= 100, f"{rss:.0f} MiB"


def test_problems_reported_are_capped(tmp_path):
    bomb = _tar_gz(tmp_path / "lines.tar.gz", {"SHA256SUMS": b"x\n" * 5000})
    proc = run_labbuild("--json", "verify", str(bomb))
    errors = json.loads(proc.stdout)["errors"]
    assert proc.returncode == 1 and len(errors) == MAX_PROBLEMS + 1
    assert errors[-1]["message"].startswith("and ") and "more" in errors[-1]["message"]


def test_archive_members_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_MEMBERS", 3)
    bomb = _tar_gz(tmp_path / "many.tar.gz", {f"f{i}": b"" for i in range(10)})
    scan = ScannedBundle()
    walk_bundle(bomb, scan, lambda rel, m, fh: None)
    assert any("more than 3 members" in p.message for p in scan.problems)


def test_the_runbook_states_every_limit(tmp_path):
    lab = make_lab(tmp_path / "lab")
    bundle = build_release(lab, "1.0.0", profile="full", out_dir=tmp_path / "dist").bundle
    with tarfile.open(bundle) as tar:
        readme = tar.extractfile("testlab-full-1.0.0/runbooks/README.md").read().decode()
    assert limits_list() in readme


def test_a_bad_bundle_leaves_the_install_dir_untouched(tmp_path, docker_engine):
    lab = make_lab(tmp_path / "lab")
    bundle = build_release(lab, "1.0.0", profile="full", out_dir=tmp_path / "dist").bundle
    members = []
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isreg() else None
            if m.name.endswith("/lab.env"):
                data = data.replace(b"true", b"TRUE")
            members.append((m, data))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gzip.compress(raw.getvalue()))
    target = tmp_path / "inst"
    proc = run_labbuild("install", str(bad), "--dir", str(target))
    assert proc.returncode == 1 and "lab.env" in proc.stderr and "Traceback" not in proc.stderr
    assert not target.exists(), sorted(p.name for p in target.rglob("*"))
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    proc = run_labbuild("install", str(bad), "--dir", str(target))
    assert proc.returncode == 1 and sorted(p.name for p in target.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------- key files that never end (3)

ADDRESS_SPACE = 768 << 20    # what the child may map: labbuild runs in it, a key file read whole does not


def _labbuild_in_bounded_memory(*args: str, stdin=None) -> subprocess.CompletedProcess:
    """The real CLI in a child whose address space is capped (RLIMIT_AS): an unbounded read there
    fails with MemoryError (an "internal error") instead of growing until the kernel kills it."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    return subprocess.run([str(VENV_LABBUILD), *args], stdin=stdin, capture_output=True, text=True, timeout=120,
                          preexec_fn=cap)


@contextlib.contextmanager
def _endless(kind: str, tmp_path: Path):
    """A key path that is far bigger than memory allows, or never ends."""
    if kind == "dev-zero":
        yield Path("/dev/zero")
    elif kind == "sparse-2GiB":
        path = tmp_path / "huge.pem"
        with open(path, "wb") as fh:
            fh.truncate(2 << 30)
        yield path
    else:                           # a FIFO a writer fills forever (what `--key <(yes)` hands over)
        fifo = tmp_path / "endless.pem"
        os.mkfifo(fifo)
        writer = subprocess.Popen(["sh", "-c", 'exec yes > "$1"', "sh", str(fifo)])
        try:
            yield fifo
        finally:
            writer.kill()
            writer.wait()


def _installed(tmp_path: Path) -> Path:
    """An install dir holding one release (no engine needed until a backup starts)."""
    inst = tmp_path / "inst"
    (inst / "releases" / "1.0.0").mkdir(parents=True)
    (inst / "releases" / "1.0.0" / "manifest.json").write_bytes(_manifest(web=_service("web:1")).dumps())
    (inst / "current").symlink_to("releases/1.0.0")
    return inst


@pytest.fixture(scope="module")
def small_lab(tmp_path_factory) -> Path:
    return make_lab(tmp_path_factory.mktemp("keys") / "lab")


@pytest.mark.parametrize("kind", ["dev-zero", "sparse-2GiB", "endless-fifo"])
@pytest.mark.parametrize("option", ["verify --key", "release --sign", "backup --recipient", "restore --identity"])
def test_a_key_file_that_never_ends_is_refused_not_read_into_memory(option, kind, tmp_path, small_lab, request):
    if option == "restore --identity":
        request.getfixturevalue("docker_engine")        # restore asks the engine before it opens the backup
    inst = _installed(tmp_path)
    sealed = tmp_path / "lab.backup.tar.age"
    sealed.write_bytes(MAGIC + bytes(64))
    with _endless(kind, tmp_path) as key:
        args = {"verify --key": ["verify", str(sealed), "--key", str(key)],
                "release --sign": ["--root", str(small_lab), "release", "1.0.0", "--profile", "full",
                                   "--out", str(tmp_path / "dist"), "--sign", str(key)],
                "backup --recipient": ["backup", "--dir", str(inst), "--recipient", str(key)],
                "restore --identity": ["restore", str(sealed), "--dir", str(inst), "--identity", str(key)]}[option]
        proc = _labbuild_in_bounded_memory(*args)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert f"error: {key}" in text and "not a " in text and "hint: " in text, text
    assert not (tmp_path / "dist").exists() and not (inst / "backups").exists()


# --------------------------------------------------------------------------- a small-file bomb (3)

ZEROS = 60 << 20           # each "small file" of a bomb: 60 MiB of zeros
BOMB_FILES = [f"config/x{i:02}.txt" for i in range(30)] + [f"sbom/s{i:02}_linux_amd64.cdx.json" for i in range(30)]


@functools.cache
def _zero_run() -> tuple[bytes, str, bytes]:
    """ZEROS zero bytes, their sha256, and their raw deflate (from a fresh state, ending in a
    full flush: a segment that may be put anywhere in a deflate stream cut by full flushes)."""
    run = bytes(ZEROS)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return run, hashlib.sha256(run).hexdigest(), c.compress(run) + c.flush(zlib.Z_FULL_FLUSH)


class _GzipOfZeros:
    """A gzip file written as a tar is: every run of ZEROS zero bytes is the same deflate segment
    (made once), so 3.6 GB of members take a few seconds and 4 MB."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")
        self.fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        self.deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.crc = self.size = 0

    def write(self, data: bytes) -> None:
        self.fh.write(self.deflate.compress(data) + self.deflate.flush(zlib.Z_FULL_FLUSH))
        self.crc, self.size = zlib.crc32(data, self.crc), self.size + len(data)

    def zeros(self) -> None:
        run, _, segment = _zero_run()
        self.fh.write(segment)
        self.crc, self.size = zlib.crc32(run, self.crc), self.size + ZEROS

    def close(self) -> None:
        self.fh.write(self.deflate.flush() + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        self.fh.close()


class _SparseTar:
    """A plain tar (an image bundle's kind) whose zero runs are holes: 3.6 GB in no disk space."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "wb")

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def zeros(self) -> None:
        self.fh.seek(ZEROS, os.SEEK_CUR)

    def close(self) -> None:
        self.fh.truncate(self.fh.tell())
        self.fh.close()


def _bomb(path: Path, kind: str) -> Path:
    """An unsigned bundle of BOMB_FILES (60 MiB of zeros each) whose SHA256SUMS and manifest.json
    agree with them. ``gzip``/``plain``: manifest.json lists their true sizes (first in the gzip,
    last in the plain tar, as labbuild writes it); ``lying``: it lists 1 KiB each; ``unlisted``:
    it does not list them (nor does SHA256SUMS)."""
    zeros_sha = _zero_run()[1]
    manifest = _manifest().to_json()
    top = manifest["name"]
    if kind != "unlisted":
        size = 1024 if kind == "lying" else ZEROS
        manifest["files"] = {rel: {"sha256": zeros_sha, "size": size} for rel in BOMB_FILES}
    raw = json.dumps(manifest).encode()
    sums = render_sums({"manifest.json": hashlib.sha256(raw).hexdigest(), **{
        rel: zeros_sha for rel in (BOMB_FILES if kind != "unlisted" else [])}})
    out = _SparseTar(path) if kind in ("plain", "unlisted") else _GzipOfZeros(path)

    def header(name: str, size: int, dir: bool = False) -> None:
        info = tarfile.TarInfo(f"{top}/{name}" if name else top)
        info.size, info.mode = size, 0o755 if dir else 0o644
        info.type = tarfile.DIRTYPE if dir else tarfile.REGTYPE
        out.write(info.tobuf(tarfile.PAX_FORMAT))

    def small(name: str, data: bytes) -> None:
        header(name, len(data))
        out.write(data + bytes(-len(data) % 512))

    header("", 0, dir=True)
    trust = [("manifest.json", raw), ("SHA256SUMS", sums)]
    for name, data in trust if kind in ("gzip", "lying") else []:
        small(name, data)
    for rel in BOMB_FILES:
        header(rel, ZEROS)
        out.zeros()
    for name, data in trust if kind in ("plain", "unlisted") else []:
        small(name, data)
    out.write(bytes(1024))
    out.close()
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("bombs")
    made = {kind: _bomb(where / f"{kind}.tar{'.gz' if kind in ('gzip', 'lying') else ''}", kind)
            for kind in ("gzip", "plain", "lying", "unlisted")}
    assert all(p.stat().st_blocks * 512 < 8_000_000 for p in made.values())     # the sparse ones: on disk
    return made


OVER_CLAIMED = "manifest.json: files: lists 1800 MiB of files outside images/blobs/ (SBOMs apart): over the cap of 64 MiB"
BOMB_REFUSALS = {   # what each bomb is refused with: the total and the cap, or the member that stopped reading
    "gzip": OVER_CLAIMED,
    "plain": OVER_CLAIMED,
    "lying": "config/x00.txt: 62,914,560 bytes, more than the 1,024 manifest.json lists: reading stopped",
    "unlisted": "config/x01.txt: files outside images/blobs/ (SBOMs apart) come to more than the cap of 64 MiB",
}


@pytest.mark.parametrize("kind", sorted(BOMB_REFUSALS))
@pytest.mark.parametrize("command", ["verify", "install", "export", "sbom"])
def test_a_small_file_bomb_is_refused_by_every_reader_in_bounded_memory(command, kind, bombs, tmp_path, request):
    if command == "install":
        request.getfixturevalue("docker_engine")
    bomb, target = bombs[kind], tmp_path / "out"
    args = {"verify": ["verify", str(bomb)], "sbom": ["sbom", str(bomb)],
            "install": ["install", str(bomb), "--no-start", "--dir", str(target)],
            "export": ["export", "helm", str(bomb), "--out", str(target)]}[command]
    proc = _labbuild_in_bounded_memory(*args)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert BOMB_REFUSALS[kind] in text, text
    assert not target.exists(), sorted(str(p) for p in target.rglob("*"))


@pytest.mark.parametrize("kind", sorted(BOMB_REFUSALS))
def test_a_small_file_bomb_is_read_no_further_than_the_cap(kind, bombs):
    read: list[int] = []
    result = verify.read_verified(bombs[kind], keep=lambda rel: True, on_bytes=read.append)
    assert not result.ok and result.errors[0].render().startswith(BOMB_REFUSALS[kind]), result.errors
    assert len(result.errors) == 1 and sum(len(d) for d in result.contents.values()) <= MAX_SMALL_FILES_TOTAL_BYTES
    assert sum(read) <= MAX_SMALL_FILES_TOTAL_BYTES


@pytest.mark.parametrize("command", ["verify", "export", "diff"])
def test_an_extracted_bundle_with_a_sparse_file_is_refused_before_it_is_read(command, tmp_path):
    bundle = tmp_path / "lab-x-all-1.0.0"
    (bundle / "config").mkdir(parents=True)
    (bundle / "sbom").mkdir()
    (bundle / "manifest.json").write_bytes(_manifest().dumps())
    (bundle / "lab.env").write_text("")
    big = bundle / ("sbom/web_linux_amd64.cdx.json" if command == "diff" else "config/big.txt")
    with open(big, "wb") as fh:
        fh.truncate(2 << 30)                     # 2 GiB that take no disk
    target = tmp_path / "out"
    args = {"verify": ["verify", str(bundle)], "diff": ["diff", str(bundle), str(bundle)],
            "export": ["export", "helm", str(bundle), "--out", str(target)]}[command]
    proc = _labbuild_in_bounded_memory(*args)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text and "internal error" not in text, text
    what = "SBOM documents (sbom/*.cdx.json) come to more than the cap of 256 MiB" if command == "diff" \
        else "files outside images/blobs/ (SBOMs apart) come to more than the cap of 64 MiB"
    assert f"{big.relative_to(bundle)}: {what}" in text, text
    assert not target.exists()
