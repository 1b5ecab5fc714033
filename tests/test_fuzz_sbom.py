"""Fuzz the SBOM readers the way tests/test_fuzz_loaders.py fuzzes the loaders: whatever the
bytes, each package-metadata reader (dpkg status, apk database, Python METADATA, package.json,
os-release) yields packages and skips and never raises, and what it yields renders as a
strictly valid CycloneDX document; a layer tarball is read or refused with a BundleError;
``components_of`` answers rows of strings or a BundleError.

CI runs a fast round; `pytest -m nightly tests/test_fuzz_sbom.py` runs >= 10k examples per
reader (LABBUILD_FUZZ_EXAMPLES sets the count).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packageurl import PackageURL

from builder.errors import BundleError
from builder.sbom import ImageSubject, Layer, components_of, render_cyclonedx, scan_image, validation_problem
from builder.sbom.packages import Distro, Package, Skipped, package_entries, parse_os_release
from test_fuzz_loaders import FAST, JSON, NIGHTLY

ROUNDS = [pytest.param(FAST, id="fast"), pytest.param(NIGHTLY, id="nightly", marks=pytest.mark.nightly)]
IMAGE = ImageSubject(name="docker.io/library/demo", digest="sha256:" + "1" * 64, platform="linux/amd64")
WORDS = st.one_of(st.from_regex(r"[a-z0-9][a-z0-9+.~:-]{0,10}", fullmatch=True), st.text(max_size=12),
                  st.sampled_from(["@scope/x", "a b", "", "é", "\x00", "/", "%", "@", "?&=#", "\u2028"]))


def _stanzas(named: list[str], other: list[str], sep: str) -> st.SearchStrategy[bytes]:
    """Blank-line separated stanzas shaped like the real format: the ``named`` keys (name,
    version) and some ``other`` ones, in any order, with odd values, now and then a stray line;
    or any bytes."""
    def field(keys: list[str]) -> st.SearchStrategy[str]:
        return st.builds(lambda k, v: f"{k}{sep}{v}", st.sampled_from(keys), WORDS)
    stray = st.one_of(st.sampled_from(["  continued", "#", "no field", ":", "-----BEGIN PGP SIGNED MESSAGE-----"]),
                      st.text(max_size=20))
    lines = st.builds(lambda a, b, c: a + b + c, st.tuples(*[field([k]) for k in named]).map(list),
                      st.lists(field(other), max_size=3), st.lists(stray, max_size=1))
    stanza = lines.flatmap(st.permutations).map("\n".join)
    text = st.lists(stanza, max_size=6).map("\n\n".join)
    return st.one_of(st.binary(max_size=400), text.map(lambda t: t.encode("utf-8", "surrogatepass")))


def _package_json() -> st.SearchStrategy[bytes]:
    doc = st.dictionaries(st.sampled_from(["name", "version", "main"]), st.one_of(WORDS, JSON), max_size=3)
    return st.one_of(st.binary(max_size=300), JSON.map(lambda d: json.dumps(d).encode()),
                     doc.map(lambda d: json.dumps(d).encode()))


READERS = {
    "var/lib/dpkg/status": _stanzas(["Package: ", "Version: "], ["Architecture: ", "Status: install ok installed",
                                                                "Status: ", "package:"], ""),
    "lib/apk/db/installed": _stanzas(["P", "V"], ["A", "C", "PP", "P"], ":"),
    "usr/lib/python3/site-packages/x-1.dist-info/METADATA": _stanzas(["Name", "Version"], ["Summary", "name"], ": "),
    "app/node_modules/x/package.json": _package_json(),
}
OS_RELEASE = st.one_of(st.binary(max_size=200), st.builds(
    lambda i, v: f"ID={i}\nVERSION_ID=\"{v}\"\n".encode("utf-8", "surrogatepass"), WORDS, WORDS))


def _read(path: str, data: bytes, distro: Distro) -> None:
    entries = list(package_entries(path, data, "sha256:" + "2" * 64, distro))
    assert all(isinstance(e, (Package, Skipped)) for e in entries)
    packages = [e for e in entries if isinstance(e, Package)]
    for p in packages:
        assert PackageURL.from_string(p.purl).to_string() == p.purl
        for token in (p.name, p.version, p.group or "@x"):
            assert token and token.isprintable() and " " not in token and "/" not in token
    if packages:
        doc = render_cyclonedx(IMAGE, packages, epoch=0, labbuild_version="0.1.0",
                               warnings=[f"{s.where}: {s.reason}" for s in entries if isinstance(s, Skipped)])
        assert validation_problem(doc) is None


@pytest.mark.parametrize("cfg", ROUNDS)
@pytest.mark.parametrize("path", sorted(READERS))
def test_a_metadata_reader_never_raises(cfg, path):
    cfg(given(READERS[path], st.one_of(st.just(Distro()), OS_RELEASE.map(parse_os_release)))(
        lambda data, distro: _read(path, data, distro)))()


@pytest.mark.parametrize("cfg", ROUNDS)
def test_os_release_gives_plain_tokens_or_none(cfg):
    def check(data: bytes) -> None:
        distro = parse_os_release(data)
        for value in (distro.id, distro.version_id):
            assert value is None or (value.isprintable() and value and not {" ", "/"} & set(value))
    cfg(given(OS_RELEASE)(check))()


def _tar(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PAX_RECORDS = st.lists(st.one_of(
    st.sampled_from(["GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.size=9", "GNU.sparse.map=1,x",
                     "GNU.sparse.numblocks=1", "GNU.sparse.offset=a", "path=var/lib/dpkg/status", "size=-1"]),
    st.builds("{}={}".format, st.text(max_size=8), st.text(max_size=8))), max_size=5).map(
    lambda records: b"".join(b"%d %s\n" % (len(r.encode()) + 2 + len(str(len(r.encode()) + 2)), r.encode())
                             for r in records))
HEADERS = st.lists(st.tuples(st.sampled_from([tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                                              tarfile.GNUTYPE_SPARSE, tarfile.REGTYPE]),
                             st.one_of(PAX_RECORDS, st.binary(max_size=64)), st.integers(1, 1500)), max_size=4)


def _headers(specs: list[tuple[bytes, bytes, int]]) -> bytes:
    """Tar headers of odd types and contents (pax records, sparse maps, long names), each repeated:
    tarfile follows a chain of extended headers recursively."""
    out = []
    for kind, payload, repeat in specs:
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.type, info.size = kind, len(payload)
        out.append((info.tobuf(format=tarfile.GNU_FORMAT) + payload + bytes(-len(payload) % 512)) * repeat)
    return b"".join(out) + _tar([("var/lib/dpkg/status", b"Package: a\nVersion: 1\n")])


SEED = _tar([("var/lib/dpkg/status", b"Package: a\nVersion: 1\n"), ("x/.wh.y", b""),
             ("n/node_modules/" + "d/" * 60 + "node_modules/x/package.json", b'{"name": "x", "version": "1"}')])


def _mutate(blob: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(blob)
    for at, data in cuts:
        out[at:at + len(data)] = data
    return bytes(out)


@pytest.mark.parametrize("cfg", ROUNDS)
def test_a_layer_tarball_is_read_or_refused_never_crashes(cfg, tmp_path):
    mutated = st.builds(lambda cuts, blob: _mutate(blob, cuts),
                        st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.binary(min_size=1, max_size=8)),
                                 max_size=6), st.sampled_from([SEED, SEED[:1536]]))
    layer_bytes = st.one_of(mutated, mutated.map(lambda b: gzip.compress(b, mtime=0)), st.binary(max_size=2048),
                            HEADERS.map(_headers))

    def check(blob: bytes) -> None:
        (tmp_path / "layer").write_bytes(blob)
        try:
            scan_image([Layer("sha256:" + "3" * 64, tmp_path / "layer")])
        except BundleError:
            pass
    cfg(given(layer_bytes)(check))()


@pytest.mark.parametrize("cfg", ROUNDS)
def test_components_of_answers_rows_of_strings_or_a_bundle_error(cfg):
    component = st.dictionaries(st.sampled_from(["name", "version", "purl", "group", "properties"]),
                                st.one_of(JSON, st.lists(st.dictionaries(st.sampled_from(["name", "value"]), JSON,
                                                                         max_size=2), max_size=2)), max_size=5)
    document = st.one_of(st.binary(max_size=200), JSON.map(lambda d: json.dumps(d).encode()),
                         st.lists(component, max_size=3).map(lambda c: json.dumps({"components": c}).encode()))

    def check(data: bytes) -> None:
        try:
            rows = components_of(data)
        except BundleError:
            return
        assert all(v is None or isinstance(v, str) for row in rows for v in row.values())
    cfg(given(document)(check))()
