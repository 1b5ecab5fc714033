"""SBOMs: packages read from layer tarballs with OCI whiteouts applied, rendered as CycloneDX 1.6
that cyclonedx-python-lib's strict validator accepts, byte-identical run to run."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import resource
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

import builder.sbom
from builder.errors import BundleError
from builder.limits import MAX_SBOM_LAYER_COMPONENTS, MiB
from builder.sbom import (ImageSubject, Layer, components_of, generate_sbom, sbom_path, sbom_serial, scan_image,
                          validation_problem)
from builder.sbom import layers as layers_module
from builder.sbom.packages import Skipped, is_metadata_path, package_entries, packages_from

DPKG_STATUS = b"""Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit
 shared libraries

Package: removed-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
"""
DISTROLESS_TZDATA = b"""Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
"""
APK_INSTALLED = b"""C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
T:the musl c library
o:musl

C:Q1def=
P:busybox
V:1.36.1-r15
A:x86_64
o:busybox
"""
OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def py_metadata(name: str, version: str) -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\nLong description\n".encode()


def npm(name: str, version: str) -> bytes:
    return json.dumps({"name": name, "version": version, "main": "index.js"}).encode()


def write_layer(path: Path, entries: list[tuple[str, bytes | None]], *, gz: bool) -> Layer:
    """A layer tarball: (name, bytes) are files, (name, None) directories (or whiteout markers when named so)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None and not name.rsplit("/", 1)[-1].startswith(".wh."):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    blob = gzip.compress(buf.getvalue(), mtime=0) if gz else buf.getvalue()
    path.write_bytes(blob)
    return Layer(digest="sha256:" + hashlib.sha256(blob).hexdigest(), path=path)


SITE = "usr/lib/python3.11/site-packages"


@pytest.fixture
def image_layers(tmp_path) -> list[Layer]:
    base = write_layer(tmp_path / "l1.tar.gz", [
        ("./etc/", None),
        ("./etc/os-release", OS_RELEASE),
        ("./var/lib/dpkg/status", DPKG_STATUS),
        ("./var/lib/dpkg/status.d/tzdata", DISTROLESS_TZDATA),
        ("./var/lib/dpkg/status.d/tzdata.md5sums", b"d41d8cd98f00b204e9800998ecf8427e  usr/share/zoneinfo/UTC\n"),
        ("./lib/apk/db/installed", APK_INSTALLED),
        (f"./{SITE}/requests-2.31.0.dist-info/METADATA", py_metadata("requests", "2.31.0")),
        (f"./{SITE}/Typing_Extensions-4.9.0.dist-info/METADATA", py_metadata("Typing_Extensions", "4.9.0")),
        (f"./{SITE}/Flask-3.0.0.egg-info/PKG-INFO", py_metadata("Flask", "3.0.0")),
        ("./app/node_modules/express/package.json", npm("express", "4.18.2")),
        ("./app/node_modules/express/lib/package.json", b'{"type": "commonjs"}'),  # no name: not a package
        ("./app/node_modules/@babel/core/package.json", npm("@babel/core", "7.23.9")),
        ("./app/node_modules/express/node_modules/debug/package.json", npm("debug", "2.6.9")),
        ("./opt/old/node_modules/left-pad/package.json", npm("left-pad", "1.3.0")),
        ("./srv/thing/node_modules/is-odd/package.json", npm("is-odd", "3.0.1")),
        ("./usr/bin/tool", b"\x7fELF" + bytes(4096)),
    ], gz=True)
    upper = write_layer(tmp_path / "l2.tar", [
        # whiteout: requests was uninstalled in this layer
        (f"{SITE}/.wh.requests-2.31.0.dist-info", None),
        # opaque directory: everything below opt/old from lower layers vanishes, this layer's entries stay
        ("opt/old/.wh..wh..opq", None),
        ("opt/old/node_modules/lodash/package.json", npm("lodash", "4.17.21")),
        # a plain file replaces the directory srv/thing: what was under it is gone
        ("srv/thing", b"now a file"),
        # an upgrade: the same path written again
        ("app/node_modules/express/package.json", npm("express", "4.19.2")),
    ], gz=False)
    return [base, upper]


def expected(base: str, upper: str) -> list[tuple]:
    deb = "?arch={}&distro=debian-12"
    return sorted([
        ("deb", "base-files", "12.4+deb12u5", "pkg:deb/debian/base-files@12.4%2Bdeb12u5" + deb.format("amd64"), base),
        ("deb", "libssl3", "3.0.11-1~deb12u2", "pkg:deb/debian/libssl3@3.0.11-1~deb12u2" + deb.format("amd64"), base),
        ("deb", "tzdata", "2024a-0+deb12u1", "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1" + deb.format("all"), base),
        ("apk", "musl", "1.2.4-r2", "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12", base),
        ("apk", "busybox", "1.36.1-r15", "pkg:apk/debian/busybox@1.36.1-r15?arch=x86_64&distro=debian-12", base),
        ("pypi", "Typing_Extensions", "4.9.0", "pkg:pypi/typing-extensions@4.9.0", base),
        ("pypi", "Flask", "3.0.0", "pkg:pypi/flask@3.0.0", base),
        ("npm", "core", "7.23.9", "pkg:npm/%40babel/core@7.23.9", base),
        ("npm", "debug", "2.6.9", "pkg:npm/debug@2.6.9", base),
        ("npm", "express", "4.19.2", "pkg:npm/express@4.19.2", upper),
        ("npm", "lodash", "4.17.21", "pkg:npm/lodash@4.17.21", upper),
    ])


def test_the_image_yields_exactly_its_packages_with_whiteouts_applied(image_layers):
    scan = scan_image(image_layers)
    got = sorted((p.ecosystem, p.name, p.version, p.purl, p.layer) for p in scan.packages)
    assert got == expected(image_layers[0].digest, image_layers[1].digest)
    assert scan.warnings == []


def test_images_on_the_same_base_read_it_once_and_see_the_same_packages(image_layers, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from builder.sbom import ChainMemo
    base, upper = image_layers
    other = write_layer(tmp_path / "l3.tar", [("app/node_modules/left-pad/package.json", npm("left-pad", "1.3.0"))],
                        gz=False)
    alone = [sorted(p.purl for p in scan_image(layers).packages) for layers in ([base, upper], [base, other])]
    opened: list[str] = []
    real = layers_module._scan_layer
    monkeypatch.setattr(layers_module, "_scan_layer", lambda layer, *a: (opened.append(layer.digest), real(layer, *a))[1])
    memo = ChainMemo()
    with ThreadPoolExecutor(2) as pool:       # both images at once: one reads the base, the other waits for it
        shared = list(pool.map(lambda layers: sorted(p.purl for p in scan_image(layers, memo).packages),
                               ([base, upper], [base, other])))
    assert shared == alone and "pkg:npm/left-pad@1.3.0" in shared[1]
    assert sorted(opened) == sorted([base.digest, upper.digest, other.digest])


IMAGE = ImageSubject(name="docker.io/library/demo", digest="sha256:" + "1" * 64, platform="linux/amd64", tag="1.0")


def test_the_cyclonedx_document_is_strictly_valid_and_names_each_layer(image_layers):
    doc = generate_sbom(IMAGE, image_layers, epoch=1767225600, labbuild_version="0.1.0")
    assert validation_problem(doc) is None
    data = json.loads(doc)
    assert data["bomFormat"] == "CycloneDX" and data["specVersion"] == "1.6"
    assert data["serialNumber"] == f"urn:uuid:{sbom_serial(IMAGE.digest, IMAGE.platform)}"
    assert data["metadata"]["timestamp"].startswith("2026-01-01T00:00:00")
    assert data["metadata"]["component"]["type"] == "container"
    assert data["metadata"]["component"]["purl"].startswith("pkg:oci/demo@sha256:" + "1" * 64 + "?arch=amd64")
    rows = {(r["name"], r["version"]): r for r in components_of(doc)}
    assert rows[("@babel/core", "7.23.9")]["purl"] == "pkg:npm/%40babel/core@7.23.9"
    assert rows[("express", "4.19.2")]["layer"] == image_layers[1].digest
    assert rows[("libssl3", "3.0.11-1~deb12u2")] == {
        "name": "libssl3", "version": "3.0.11-1~deb12u2", "layer": image_layers[0].digest,
        "source": "var/lib/dpkg/status",
        "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"}
    assert len(rows) == len(expected("", ""))
    (dep,) = [d for d in data["dependencies"] if d["ref"] == data["metadata"]["component"]["bom-ref"]]
    assert len(dep["dependsOn"]) == len(rows)


def test_the_strict_validator_is_not_a_rubber_stamp(image_layers):
    data = json.loads(generate_sbom(IMAGE, image_layers, epoch=0, labbuild_version="0.1.0"))
    data["components"][0]["type"] = "gadget"
    assert validation_problem(json.dumps(data).encode()) is not None


def test_same_input_gives_identical_bytes(image_layers, tmp_path):
    first = generate_sbom(IMAGE, image_layers, epoch=1767225600, labbuild_version="0.1.0")
    assert first == generate_sbom(IMAGE, image_layers, epoch=1767225600, labbuild_version="0.1.0")
    assert first.endswith(b"}\n")
    other = generate_sbom(ImageSubject(IMAGE.name, IMAGE.digest, "linux/arm64"), image_layers, epoch=1767225600,
                          labbuild_version="0.1.0")
    assert json.loads(other)["serialNumber"] != json.loads(first)["serialNumber"]


def test_an_image_without_package_metadata_has_an_empty_valid_sbom(tmp_path):
    layer = write_layer(tmp_path / "l.tar", [("bin/busybox", b"\x7fELF")], gz=False)
    doc = generate_sbom(IMAGE, [layer], epoch=0, labbuild_version="0.1.0")
    assert validation_problem(doc) is None and components_of(doc) == []


def test_the_same_package_twice_gets_unique_bom_refs(tmp_path):
    layer = write_layer(tmp_path / "l.tar", [("a/node_modules/ms/package.json", npm("ms", "2.1.3")),
                                             ("b/node_modules/ms/package.json", npm("ms", "2.1.3"))], gz=False)
    doc = generate_sbom(IMAGE, [layer], epoch=0, labbuild_version="0.1.0")
    assert validation_problem(doc) is None
    refs = [c["bom-ref"] for c in json.loads(doc)["components"]]
    assert sorted(refs) == ["pkg:npm/ms@2.1.3#a/node_modules/ms/package.json",
                            "pkg:npm/ms@2.1.3#b/node_modules/ms/package.json"]


def test_an_oversized_metadata_file_is_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(layers_module, "MAX_SBOM_METADATA_BYTES", 64)
    layer = write_layer(tmp_path / "l.tar", [("var/lib/dpkg/status", DPKG_STATUS)], gz=False)
    scan = scan_image([layer])
    assert scan.packages == [] and "var/lib/dpkg/status" in scan.warnings[0] and "cap" in scan.warnings[0]


@pytest.mark.parametrize("blob, message", [(b"not a tarball at all" * 10, "not a tar archive"),
                                           (b"\x28\xb5\x2f\xfd" + bytes(60), "zstd")])
def test_unreadable_layers_are_clear_errors(tmp_path, blob, message):
    (tmp_path / "bad").write_bytes(blob)
    with pytest.raises(BundleError, match=message):
        scan_image([Layer(digest="sha256:" + "0" * 64, path=tmp_path / "bad")])


def test_a_truncated_gzip_layer_is_a_clear_error(tmp_path):
    layer = write_layer(tmp_path / "l.tar.gz", [("var/lib/dpkg/status", DPKG_STATUS), ("big", bytes(200000))], gz=True)
    (tmp_path / "cut.tar.gz").write_bytes(layer.path.read_bytes()[:300])
    with pytest.raises(BundleError, match="corrupt or truncated"):
        scan_image([Layer(digest=layer.digest, path=tmp_path / "cut.tar.gz")])


@pytest.mark.parametrize("path, wanted", [
    ("var/lib/dpkg/status", True), ("var/lib/dpkg/status-old", False),
    ("var/lib/dpkg/status.d/libc6", True), ("var/lib/dpkg/status.d/libc6.md5sums", False),
    ("lib/apk/db/installed", True),
    ("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", True),
    ("usr/lib/python3/dist-packages/six-1.16.0.dist-info/RECORD", False),
    ("usr/lib/python3/dist-packages/six-1.16.0.egg-info", True),
    ("usr/lib/python3/dist-packages/six.egg-info/PKG-INFO", True),
    ("node_modules/@scope/pkg/package.json", True), ("node_modules/.bin/package.json", False),
    ("node_modules/pkg/dist/package.json", False), ("package.json", False),
    ("a/" * 2046 + "node_modules/x/package.json", False),     # over PATH_MAX: no file an image can hold
])
def test_which_files_are_read(path, wanted):
    assert is_metadata_path(path) is wanted


def test_a_hostile_package_json_is_no_package_and_no_crash():
    assert packages_from("node_modules/x/package.json", b"[" * 100_000 + b"]" * 100_000, "sha256:x") == []


def test_a_single_file_egg_info_is_a_package():
    (pkg,) = packages_from("usr/lib/python3/dist-packages/zope.interface-5.0.egg-info",
                           py_metadata("zope.interface", "5.0"), "sha256:x")
    assert pkg.purl == "pkg:pypi/zope-interface@5.0"


def test_sbom_paths_are_safe_file_names():
    assert sbom_path("qdrant", "linux/amd64") == "sbom/qdrant_linux_amd64.cdx.json"
    assert sbom_path("docker.io/x/y", "linux/arm/v7") == "sbom/docker.io-x-y_linux_arm_v7.cdx.json"
    assert isinstance(sbom_serial("sha256:" + "1" * 64, "linux/amd64"), uuid.UUID)


def test_a_corrupted_gzip_layer_fails_its_crc_check(tmp_path):
    layer = write_layer(tmp_path / "l.tar.gz", [("var/lib/dpkg/status", DPKG_STATUS)], gz=True)
    blob = bytearray(layer.path.read_bytes())
    blob[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    (tmp_path / "bad.tar.gz").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="corrupt or truncated|not a tar archive"):
        scan_image([Layer(digest=layer.digest, path=tmp_path / "bad.tar.gz")])


def test_a_multi_member_gzip_layer_is_read_whole(tmp_path):
    plain = write_layer(tmp_path / "p.tar", [("a/node_modules/x/package.json", npm("x", "1.0.0")),
                                             ("b/node_modules/y/package.json", npm("y", "2.0.0"))], gz=False)
    data = plain.path.read_bytes()
    (tmp_path / "m.tar.gz").write_bytes(gzip.compress(data[:700], mtime=0) + gzip.compress(data[700:], mtime=0))
    scan = scan_image([Layer(digest=plain.digest, path=tmp_path / "m.tar.gz")])
    assert [p.name for p in scan.packages] == ["x", "y"]


def test_the_fast_dependency_registration_changes_no_byte(image_layers, monkeypatch):
    from builder.sbom import cyclonedx
    fast = generate_sbom(IMAGE, image_layers, epoch=0, labbuild_version="0.1.0")
    monkeypatch.setattr(cyclonedx, "_index_dependency_registration", lambda bom: None)
    assert generate_sbom(IMAGE, image_layers, epoch=0, labbuild_version="0.1.0") == fast


def test_a_hard_link_to_metadata_counts_and_a_symlink_replaces_it(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = npm("ms", "2.1.3")
        info = tarfile.TarInfo("a/node_modules/ms/package.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("b/node_modules/ms/package.json")
        link.type, link.linkname = tarfile.LNKTYPE, "a/node_modules/ms/package.json"
        tar.addfile(link)
    (tmp_path / "l1.tar").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        sym = tarfile.TarInfo("a/node_modules/ms/package.json")
        sym.type, sym.linkname = tarfile.SYMTYPE, "/dev/null"
        tar.addfile(sym)
    (tmp_path / "l2.tar").write_bytes(buf.getvalue())
    lower = Layer(digest="sha256:" + "1" * 64, path=tmp_path / "l1.tar")
    assert [p.source for p in scan_image([lower]).packages] == ["a/node_modules/ms/package.json",
                                                               "b/node_modules/ms/package.json"]
    upper = Layer(digest="sha256:" + "2" * 64, path=tmp_path / "l2.tar")
    assert [p.source for p in scan_image([lower, upper]).packages] == ["b/node_modules/ms/package.json"]


def _one_layer(tmp_path, entries: list[tuple[str, bytes | None]]) -> list[Layer]:
    return [write_layer(tmp_path / "l.tar", entries, gz=False)]


def _sbom_in_a_child(layers: list[Layer], *, cpu_seconds: int, memory: int) -> dict:
    """``generate_sbom`` for ``layers`` in a child process held to ``cpu_seconds`` of CPU time and
    ``memory`` bytes of address space (rlimits, not timing), as a parsed document."""
    code = ("import json, sys\n"
            "from builder.sbom import ImageSubject, Layer, generate_sbom\n"
            "layers = [Layer(digest, path) for digest, path in json.loads(sys.argv[1])]\n"
            "image = ImageSubject('docker.io/library/demo', 'sha256:' + '1' * 64, 'linux/amd64')\n"
            "sys.stdout.buffer.write(generate_sbom(image, layers, epoch=0, labbuild_version='0.1.0'))\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    proc = subprocess.run([sys.executable, "-c", code, json.dumps([[x.digest, str(x.path)] for x in layers])],
                          capture_output=True, preexec_fn=limit, timeout=10 * cpu_seconds)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return json.loads(proc.stdout)


def _warnings_of(doc: dict) -> list[str]:
    return [p["value"] for p in doc["metadata"].get("properties", []) if p["name"] == "labbuild:warning"]


def test_deep_metadata_paths_cost_memory_linear_in_their_length(tmp_path):
    """Whiteouts are applied without listing every ancestor of every path (1,000 paths 3,000
    characters deep used to cost 2.5 GB)."""
    deep = "a/" * 1500
    lower = write_layer(tmp_path / "l1.tar.gz", [(f"b{i}/{deep}node_modules/x/package.json", npm("x", "1.0.0"))
                                                for i in range(1000)], gz=True)
    upper = write_layer(tmp_path / "l2.tar", [("b0/.wh.a", None), (f"b1/{deep}node_modules/x", b"now a file")],
                        gz=False)
    doc = _sbom_in_a_child([lower, upper], cpu_seconds=60, memory=600 * MiB)
    assert len(doc["components"]) == 998 and _warnings_of(doc) == []


def _pax_record(keyword: bytes, value: bytes) -> bytes:
    body = b" %s=%s\n" % (keyword, value)
    return b"%d%s" % (len(body) + len(str(len(body) + len(str(len(body))))), body)   # LENGTH counts itself


def _pax_layer(path: Path, records: bytes, *, count: int = 1, kind: bytes = tarfile.XHDTYPE) -> Layer:
    """A layer of ``count`` members, each behind a pax header holding ``records``."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = kind, len(records)
    member = tarfile.TarInfo("var/lib/dpkg/status")
    path.write_bytes((pax.tobuf() + records + bytes(-len(records) % 512) + member.tobuf()) * count + bytes(1024))
    return Layer("sha256:" + "0" * 64, path)


@pytest.mark.parametrize("records, count, message", [
    # tarfile before Python 3.11.10 parses these in quadratic time (CVE-2024-6232): 64 KiB of
    # "2 2 2 ..." cost 2.6 s and 1 GB; 100 headers of 16 KiB of digits 40 s
    (b"2 " * (32 * 1024) + b"=x\n", 1, "record at byte 0 is not LENGTH KEYWORD=VALUE"),
    (_pax_record(b"comment", b"9" * 16000), 100, "a run of over 64 digits"),
    (_pax_record(b"comment", b"x" * 300 * 1024), 1, "extended headers of over 262144 bytes"),
])
def test_a_hostile_pax_header_is_a_clear_error_in_linear_time(tmp_path, records, count, message):
    with pytest.raises(BundleError, match=message):
        scan_image([_pax_layer(tmp_path / "pax.tar", records, count=count)])


def test_global_pax_headers_count_for_the_whole_layer(tmp_path):
    record = _pax_record(b"comment", b"x" * 100 * 1024)
    scan_image([_pax_layer(tmp_path / "one.tar", record, count=2)])           # per member: fits
    with pytest.raises(BundleError, match="extended headers of over"):
        scan_image([_pax_layer(tmp_path / "g.tar", record, count=3, kind=tarfile.XGLTYPE)])


def test_byte_caps_per_layer_and_per_image_skip_files_with_a_warning(tmp_path, monkeypatch):
    files = [(f"n/node_modules/p{i}/package.json", npm(f"p{i}", "1.0.0")) for i in range(3)]
    cost = len(files[0][1]) + len(files[0][0]) + 512
    monkeypatch.setattr(layers_module, "MAX_SBOM_LAYER_BYTES", 2 * cost)
    monkeypatch.setattr(layers_module, "MAX_SBOM_IMAGE_BYTES", 3 * cost)
    lower = write_layer(tmp_path / "l1.tar", files, gz=False)
    upper = write_layer(tmp_path / "l2.tar", [(p.replace("n/", "m/"), d) for p, d in files], gz=False)
    scan = scan_image([lower, upper])
    assert [p.source for p in scan.packages] == ["m/node_modules/p0/package.json", "n/node_modules/p0/package.json",
                                                 "n/node_modules/p1/package.json"]
    assert [w.split(", ")[-1] for w in scan.warnings] == [
        f"past the {2 * cost}-byte cap per layer: skipped", f"past the {3 * cost}-byte cap per image: skipped",
        f"past the {3 * cost}-byte cap per image: skipped"]


def test_warnings_are_listed_up_to_a_cap_and_the_rest_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(layers_module, "MAX_SBOM_WARNINGS", 2)
    monkeypatch.setattr(layers_module, "MAX_SBOM_METADATA_BYTES", 1)
    scan = scan_image(_one_layer(tmp_path, [(f"node_modules/p{i}/package.json", b"[]") for i in range(5)]))
    assert len(scan.warnings) == 3 and scan.warnings[-1] == "3 more warnings not listed"


def test_malformed_apk_entries_are_skipped_with_a_warning_and_the_rest_kept(tmp_path):
    db = (APK_INSTALLED + b"\n"
          + b"P:no-version\nA:x86_64\n\n"                   # line 14: V: missing
          + b"P:twice\nV:1-r0\nP:again\n\n"                  # line 17: P: repeated
          + b"P:caf\xe9\nV:1-r0\n\n"                        # line 21: not UTF-8
          + b"P:bad-line\nV:1-r0\nthis is no field\n\n"     # line 24: a bad line
          + b"P:two words\nV:1-r0\n\n"                      # line 28: whitespace in the name
          + b"P:zlib\nV:1.3.1-r0\nA:x86_64\n")
    skipped = [e for e in package_entries("lib/apk/db/installed", db, "sha256:x") if isinstance(e, Skipped)]
    assert [(s.where, s.reason) for s in skipped] == [
        ("line 14", "no V: (version)"), ("line 17", "line 19: P given twice"),
        ("line 21", "P: (name) is not UTF-8"), ("line 24", "line 26: not a 'Field: value' line"),
        ("line 28", "P: (name) 'two words' is empty or holds whitespace, '/' or control characters")]
    scan = scan_image(_one_layer(tmp_path, [("lib/apk/db/installed", db)]))
    assert [p.name for p in scan.packages] == ["busybox", "musl", "zlib"]
    assert len(scan.warnings) == 1 and "lib/apk/db/installed: 5 entries skipped, the first at line 14: no V:" \
        in scan.warnings[0]


@pytest.mark.parametrize("doc, reason", [
    (b"[1, 2]", "an array, not a JSON object"),
    (b"42", "a number, not a JSON object"),
    (b'{"name": ["x"], "version": "1.0.0"}', "name is an array, not a string"),
    (b'{"name": "x", "version": {"major": 1}}', "version is an object, not a string"),
    (b'{"name": "@scope/", "version": "1.0.0"}', "name '' is empty"),
    (b'{"name": "@scope", "version": "1.0.0"}', "has a scope but no '/'"),
    (b'{"name": "a/b", "version": "1.0.0"}', "holds whitespace, '/'"),
    (b'{"name": "x", "version": "1.0\\u0000"}', "control characters"),
    (b'{"name": "\\ud800", "version": "1.0.0"}', "control characters"),
    (b'{"name": "x", "version": 1' + b"0" * 5000 + b"}", "not JSON"),
    (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "not JSON"),
    (b'{"name": "caf\xe9", "version": "1"}', "not JSON"),
    (b"[" + b"{}," * 200_000 + b"{}]", "JSON values: not read"),
])
def test_malformed_package_json_is_skipped_with_a_warning_and_the_rest_kept(tmp_path, doc, reason):
    scan = scan_image(_one_layer(tmp_path, [("app/node_modules/bad/package.json", doc),
                                            ("app/node_modules/ms/package.json", npm("ms", "2.1.3"))]))
    assert [p.purl for p in scan.packages] == ["pkg:npm/ms@2.1.3"]
    (warning,) = scan.warnings
    assert warning.startswith("layer sha256:") and "app/node_modules/bad/package.json: skipped: " in warning
    assert reason in warning


def test_a_package_json_without_name_or_version_is_no_package_and_no_warning(tmp_path):
    scan = scan_image(_one_layer(tmp_path, [("node_modules/fixture/package.json", b'{"main": "index.js"}')]))
    assert scan.packages == [] and scan.warnings == []


def test_malformed_dpkg_paragraphs_are_skipped_with_a_warning_and_the_rest_kept(tmp_path):
    status = (b"garbage that is no field\n\n"                            # used to hide every package after it
              + b"-----BEGIN PGP SIGNED MESSAGE-----\n\n"               # used to merge what follows into one
              + b"Package: twice\nPackage: again\nVersion: 1\n\n"
              + b"Package: caf\xe9\nVersion: 1\n\n"
              + b"Package: folded\nVersion: 1\n 2\n\n"
              + b"Package: no-version\nStatus: install ok installed\n\n"
              + b"Package: gone\nStatus: deinstall ok config-files\n\n"  # not installed: no package, no warning
              + DPKG_STATUS)
    scan = scan_image(_one_layer(tmp_path, [("var/lib/dpkg/status", status)]))
    assert [p.name for p in scan.packages] == ["base-files", "libssl3"]
    (warning,) = scan.warnings
    assert "var/lib/dpkg/status: 6 entries skipped, the first at line 1: line 1: not a 'Field: value' line" in warning


def test_malformed_python_metadata_is_skipped_with_a_warning(tmp_path):
    scan = scan_image(_one_layer(tmp_path, [
        (f"{SITE}/a-1.dist-info/METADATA", b"Name: caf\xe9\nVersion: 1\n"),
        (f"{SITE}/b-1.dist-info/METADATA", b"Name: b\nName: c\nVersion: 1\n"),
        (f"{SITE}/c-1.dist-info/METADATA", b"Name: c\nVersion: 1\n  .2\n"),
        (f"{SITE}/d-1.dist-info/METADATA", b"Metadata-Version: 2.1\nSummary: names nothing\n"),
        (f"{SITE}/e-1.dist-info/METADATA", b"Name: e\nVersion: 1\nnot a header: the body begins\n\nName: x\n"),
    ]))
    assert [p.name for p in scan.packages] == ["e"]
    assert [w.split(": ", 2)[2] for w in scan.warnings] == [
        "skipped: Name is not UTF-8", "skipped: line 2: Name given twice",
        "skipped: line 3: version continues on a second line"]


def test_what_the_scan_left_out_is_listed_in_the_document(tmp_path):
    layers = _one_layer(tmp_path, [("node_modules/bad/package.json", b"[]"),
                                   ("node_modules/ms/package.json", npm("ms", "2.1.3"))])
    doc = generate_sbom(IMAGE, layers, epoch=0, labbuild_version="0.1.0")
    assert validation_problem(doc) is None and doc == generate_sbom(IMAGE, layers, epoch=0, labbuild_version="0.1.0")
    assert _warnings_of(json.loads(doc)) == scan_image(layers).warnings != []
    assert [r["name"] for r in components_of(doc)] == ["ms"]


def _dpkg_status(count: int) -> bytes:
    return b"".join(b"Package: p%d\nVersion: 1\n\n" % i for i in range(count))


def test_an_8_mib_layer_of_crafted_metadata_is_read_in_bounded_memory(tmp_path):
    """1 GiB of zeros that inflate from 1 MiB of gzip, then a dpkg status of 8 MiB naming
    350,000 packages: under 600 MB of address space the SBOM is made, capped per layer."""
    status = _dpkg_status(350_000)
    zeros, big = tarfile.TarInfo("usr/share/zeros"), 64 * 16 * MiB
    zeros.size = big
    meta = tarfile.TarInfo("var/lib/dpkg/status")
    meta.size = len(status)
    tail = meta.tobuf() + status + bytes(-len(status) % 512) + bytes(1024)
    zero_member = gzip.compress(bytes(16 * MiB), mtime=0)      # gzip members follow each other
    blob = gzip.compress(zeros.tobuf(), mtime=0) + zero_member * (big // (16 * MiB)) + gzip.compress(tail, mtime=0)
    assert len(blob) < 8 * MiB and len(status) > 8_000_000
    (tmp_path / "bomb.tar.gz").write_bytes(blob)
    layer = Layer("sha256:" + hashlib.sha256(blob).hexdigest(), tmp_path / "bomb.tar.gz")
    doc = _sbom_in_a_child([layer], cpu_seconds=60, memory=600 * MiB)
    assert len(doc["components"]) == MAX_SBOM_LAYER_COMPONENTS
    assert [w for w in _warnings_of(doc) if f"over {MAX_SBOM_LAYER_COMPONENTS} packages" in w]


def test_150k_tiny_dpkg_paragraphs_take_linear_time(tmp_path):
    layer = write_layer(tmp_path / "l.tar.gz", [("var/lib/dpkg/status", _dpkg_status(150_000))], gz=True)
    assert layer.path.stat().st_size < 1 * MiB
    doc = _sbom_in_a_child([layer], cpu_seconds=20, memory=2048 * MiB)
    assert len(doc["components"]) == MAX_SBOM_LAYER_COMPONENTS
    (warning,) = _warnings_of(doc)
    assert warning.startswith(f"layer {layer.digest} has over {MAX_SBOM_LAYER_COMPONENTS} packages: the SBOM lists")


def test_component_caps_keep_the_first_packages_by_path_and_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(builder.sbom, "MAX_SBOM_LAYER_COMPONENTS", 3)
    monkeypatch.setattr(builder.sbom, "MAX_SBOM_IMAGE_COMPONENTS", 5)
    lower = write_layer(tmp_path / "l1.tar", [(f"a/node_modules/p{i}/package.json", npm(f"p{i}", "1.0.0"))
                                              for i in range(6)], gz=False)
    upper = write_layer(tmp_path / "l2.tar", [(f"b/node_modules/q{i}/package.json", npm(f"q{i}", "1.0.0"))
                                              for i in range(6)], gz=False)
    scan = scan_image([lower, upper])
    assert [p.name for p in scan.packages] == ["p0", "p1", "p2", "q0", "q1"]
    assert scan.warnings == [
        f"layer {lower.digest} has over 3 packages: the SBOM lists the first, by metadata path; "
        "from a/node_modules/p3/package.json on, the rest are left out",
        "the image has over 5 packages: the SBOM lists the first, by metadata path; "
        "from b/node_modules/q2/package.json on, the rest are left out"]
    doc = generate_sbom(IMAGE, [lower, upper], epoch=0, labbuild_version="0.1.0")
    assert validation_problem(doc) is None and len(components_of(doc)) == 5
    assert sorted(_warnings_of(json.loads(doc))) == sorted(scan.warnings)
    assert doc == generate_sbom(IMAGE, [lower, upper], epoch=0, labbuild_version="0.1.0")


@pytest.mark.parametrize("document", [
    b'{"components": {}}', b'{"components": [1]}', b'{"components": [{"properties": {}}]}',
    b'{"components": [{"properties": [{"name": ["x"], "value": "y"}], "name": "x"}, {"properties": [2]}]}',
    b'{"components": [{"name": {"a": 1}}]}', b'{"components": [{"name": "x", "group": 7}]}',
    b'{"components": [{"name": "x", "properties": [{"name": "labbuild:layer", "value": []}]}]}',
])
def test_a_misshapen_cyclonedx_document_is_a_clear_error(document):
    with pytest.raises(BundleError, match="not a CycloneDX JSON document|component [01]: "):
        components_of(document)


def test_a_release_says_what_its_sboms_left_out():
    """The SBOM documents carry their warnings (labbuild:warning); the release lists them too."""
    from builder.bundle.archive import BundleFile
    from builder.bundle.sboms import sbom_warnings
    from builder.sbom import ImageSubject, render_cyclonedx

    subject = ImageSubject(name="example.org/web", digest="sha256:" + "a" * 64, platform="linux/amd64", tag="1")
    data = render_cyclonedx(subject, [], epoch=0, labbuild_version="test", warnings=["lib/apk/db/installed: bad entry"])
    clean = render_cyclonedx(subject, [], epoch=0, labbuild_version="test", warnings=[])
    files = [BundleFile("sbom/web_linux_amd64.cdx.json", data=data), BundleFile("sbom/api_linux_amd64.cdx.json", data=clean),
             BundleFile("compose.yaml", data=b"services: {}\n")]
    assert sbom_warnings(files) == ["sbom/web_linux_amd64.cdx.json: lib/apk/db/installed: bad entry"]
