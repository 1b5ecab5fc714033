"""verify_bundle and safe_extract: every tampered byte and every evil member is caught,
named, and nothing is written."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.bundle.release import build_release
from builder.bundle.verify import safe_extract, verify_bundle
from builder.errors import BundleError
from test_bundle_release import run_labbuild
from test_render import make_lab

TOP = "testlab-full-1.0.0"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("verify")
    return build_release(make_lab(tmp / "lab"), "1.0.0", profile="full", out_dir=tmp / "dist").bundle


def read_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar.getmembers()]


def write_members(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def flipped(bundle: Path, out: Path, rel: str, offset: int = 0) -> Path:
    members = []
    for info, data in read_members(bundle):
        if info.name == f"{TOP}/{rel}":
            pos = offset if offset >= 0 else len(data) // 2
            data = data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]
        members.append((info, data))
    return write_members(out, members)


def test_a_fresh_bundle_verifies_and_extracts(bundle, tmp_path):
    result = verify_bundle(bundle)
    assert result.ok, [e.render() for e in result.errors]
    assert result.manifest.name == TOP and not result.signed
    dest = safe_extract(bundle, tmp_path / "out" / "release")
    assert (dest / "compose.yaml").is_file() and (dest / "install.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / "lab.env").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["release"]  # no temp dir left behind
    proc = run_labbuild("verify", str(bundle))
    assert proc.returncode == 0 and "OK" in proc.stdout


KINDS = ["compose.yaml", "lab.env", "secrets.env.example", "lock.json", "manifest.json", "install.sh",
         "runbooks/README.md", "runbooks/web.md", "config/web/web.conf", "observability/prometheus/prometheus.yml",
         "observability/prometheus/rules/lab-alerts.yml", "observability/grafana/dashboards/lab-overview.json",
         "observability/grafana/provisioning/datasources/prometheus.yml", "SHA256SUMS"]


@pytest.mark.parametrize("rel", KINDS)
def test_flipping_one_byte_of_any_file_fails_verification_naming_it(bundle, tmp_path, rel):
    bad = flipped(bundle, tmp_path / "bad.tar.gz", rel, offset=-1)
    result = verify_bundle(bad)
    assert not result.ok
    named = {e.file for e in result.errors}
    if rel == "SHA256SUMS":  # the changed line names the file it lists, or the sums file itself
        assert named and all(e.message for e in result.errors)
    else:
        assert rel in named, [e.render() for e in result.errors]
    with pytest.raises(BundleError):
        safe_extract(bad, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]
    proc = run_labbuild("--json", "verify", str(bad))
    assert proc.returncode == 1 and '"ok": false' in proc.stdout


def test_extra_and_missing_files_are_named(bundle, tmp_path):
    members = read_members(bundle)
    extra = write_members(tmp_path / "extra.tar.gz", members + [regular(f"{TOP}/runbooks/evil.md", b"hi")])
    errors = {(e.file, e.message) for e in verify_bundle(extra).errors}
    assert ("runbooks/evil.md", "present but not listed in SHA256SUMS") in errors
    assert ("runbooks/evil.md", "present but not listed in manifest.json") in errors
    missing = write_members(tmp_path / "missing.tar.gz", [m for m in members if m[0].name != f"{TOP}/lab.env"])
    errors = {(e.file, e.message) for e in verify_bundle(missing).errors}
    assert ("lab.env", "listed in SHA256SUMS but missing") in errors
    assert ("lab.env", "listed in manifest.json but missing") in errors


def test_truncated_and_non_archives_are_errors_not_tracebacks(bundle, tmp_path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    assert not verify_bundle(cut).ok
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    proc = run_labbuild("verify", str(junk))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "not a readable bundle" in proc.stderr
    proc = run_labbuild("verify", str(tmp_path / "nope.tar.gz"))
    assert proc.returncode == 1 and "no such bundle" in proc.stderr


def _evil(kind: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    def special(name: str, type_: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = type_, linkname
        return info, None
    return {
        "traversal": [regular(f"{TOP}/../escaped.txt", b"x")],
        "absolute": [regular("/tmp/labbuild-evil-absolute.txt", b"x")],
        "symlink-escape": [special(f"{TOP}/runbooks/link", tarfile.SYMTYPE, "../../../../etc/passwd")],
        "symlink-inside": [special(f"{TOP}/runbooks/link", tarfile.SYMTYPE, "README.md")],
        "hardlink": [special(f"{TOP}/runbooks/hard", tarfile.LNKTYPE, "/etc/passwd")],
        "device": [special(f"{TOP}/dev-null", tarfile.CHRTYPE)],
        "fifo": [special(f"{TOP}/fifo", tarfile.FIFOTYPE)],
        "duplicate": [regular(f"{TOP}/lab.env", b"LAB_NAME='evil'\n")],
        "outside-top": [regular("other-top/file.txt", b"x")],
    }[kind]


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink-escape", "symlink-inside", "hardlink",
                                  "device", "fifo", "duplicate", "outside-top"])
def test_evil_archives_are_refused_and_nothing_is_written(bundle, tmp_path, kind):
    evil = write_members(tmp_path / "evil.tar.gz", read_members(bundle) + _evil(kind))
    result = verify_bundle(evil)
    assert not result.ok
    assert any("refused" in e.message or "outside" in e.message for e in result.errors), \
        [e.render() for e in result.errors]
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BundleError):
        safe_extract(evil, work / "dest")
    assert list(work.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/labbuild-evil-absolute.txt").exists()
    proc = run_labbuild("verify", str(evil))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_safe_extract_refuses_an_existing_destination(bundle, tmp_path):
    (tmp_path / "dest").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        safe_extract(bundle, tmp_path / "dest")


def test_gnu_tar_reads_the_bundle_like_we_do(bundle, tmp_path):
    proc = subprocess.run(["tar", "-xzf", str(bundle), "-C", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / TOP, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_manifest_model_round_trips_and_names_a_malformed_key(bundle, tmp_path):
    import json as _json
    from builder.format.manifest import Manifest
    members = read_members(bundle)
    raw = next(d for m, d in members if m.name == f"{TOP}/manifest.json")
    model = Manifest.from_json(_json.loads(raw))
    assert model.dumps() == raw and model.services["web"].health.host_port == 18080
    data = _json.loads(raw)
    del data["services"]["web"]["runbook"]
    broken = [(m, _json.dumps(data).encode()) if m.name == f"{TOP}/manifest.json" else (m, d) for m, d in members]
    for m, d in broken:
        if d is not None:
            m.size = len(d)
    result = verify_bundle(write_members(tmp_path / "broken.tar.gz", broken))
    assert any(e.file == "manifest.json" and "services.web" in e.message for e in result.errors), \
        [e.render() for e in result.errors]


def test_an_extracted_bundle_directory_verifies_and_tampering_is_named(bundle, tmp_path):
    dest = safe_extract(bundle, tmp_path / "installed-1.0.0")
    assert verify_bundle(dest).ok
    (dest / "lab.env").write_text((dest / "lab.env").read_text() + "EXTRA='1'\n")
    (dest / "runbooks" / "link.md").symlink_to("/etc/passwd")
    errors = {e.file for e in verify_bundle(dest).errors}
    assert {"lab.env", "runbooks/link.md"} <= errors
    proc = run_labbuild("verify", str(dest))
    assert proc.returncode == 1 and "lab.env" in proc.stderr
