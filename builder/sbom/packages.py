"""Installed packages, read from the metadata files package managers leave in an image.

Pure functions from file bytes to ``Package`` records:

- dpkg: ``var/lib/dpkg/status`` and distroless ``var/lib/dpkg/status.d/*``
  (deb822 paragraphs); only packages dpkg reports as installed;
- apk: ``lib/apk/db/installed`` (``P:``/``V:``/``A:`` blocks);
- Python: ``*.dist-info/METADATA``, ``*.egg-info/PKG-INFO`` and single-file
  ``*.egg-info`` (RFC 822 headers ``Name`` and ``Version``);
- Node: ``node_modules/[@scope/]NAME/package.json`` (``name`` and ``version``).

``is_metadata_path`` says which paths of an image to read; ``package_entries``
turns one such file into packages, and into a ``Skipped`` for each entry that
is no valid package: a line that is no field, a name, version or architecture
given twice, continued, absent, not UTF-8 or not a plain token (printable, no
whitespace, no ``/``), a purl that does not read back, a package.json that is
no JSON object. The caller warns and keeps the file's other packages;
``packages_from`` is the packages alone. Whatever the bytes, a reader yields
packages and skips, never raises; it runs in time linear in the file's size
and holds, besides the file, one entry at a time and the packages it yielded
(lines are streamed, never split into a list; a package.json of more than
``MAX_SBOM_JSON_VALUES`` values is not parsed).

Each package carries a purl (package-url spec: ``pkg:deb/<distro>/…?arch=…``,
``pkg:apk/<distro>/…?arch=…``, ``pkg:pypi/<normalised name>@…``,
``pkg:npm/[%40scope/]name@…``), the file it was read from and the digest of
the layer that file came from.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Iterator

from packageurl import PackageURL

from ..limits import MAX_SBOM_JSON_VALUES

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
PATH_MAX = 4096    # Linux: containerd unpacks a layer by full paths, so a longer one is no file of the image

_PY_METADATA = re.compile(r"(^|/)[^/]+\.dist-info/METADATA$|(^|/)[^/]+\.egg-info(/PKG-INFO)?$")
_NODE_PACKAGE = re.compile(r"(^|/)node_modules/(@[^/]+/)?[^/@.][^/]*/package\.json$")
_PEP503 = re.compile(r"[-_.]+")
_FIELD_NAME = re.compile(rb"[!-9;-~]+")      # deb822 and RFC 822: printable ASCII but ':'
_APK_FIELD_NAME = re.compile(rb"[!-9;-~]")   # apk: one character
_DPKG_FIELDS = frozenset({b"package", b"version", b"architecture", b"status"})
_APK_FIELDS = frozenset({b"P", b"V", b"A"})
_PY_FIELDS = frozenset({b"name", b"version"})


@dataclass(frozen=True, order=True)
class Package:
    """One installed package found in an image."""

    ecosystem: str        # "deb" | "apk" | "pypi" | "npm"
    name: str
    version: str
    purl: str
    source: str           # the metadata file it was read from
    layer: str            # digest of the layer that file came from
    group: str | None = None   # npm scope ("@scope"), else None


@dataclass(frozen=True)
class Skipped:
    """An entry of a metadata file that is no valid package, and why."""

    where: str            # "line N" where a file holds several entries, else ""
    reason: str


@dataclass(frozen=True)
class Distro:
    """The image's distribution (os-release ``ID`` and ``VERSION_ID``), for purl namespaces."""

    id: str | None = None
    version_id: str | None = None

    def qualifier(self) -> str | None:
        if self.id and self.version_id:
            return f"{self.id}-{self.version_id}"
        return None


class _Bad(Exception):
    """Raised inside a reader for an entry that is no valid package; becomes a ``Skipped``."""


def is_metadata_path(path: str) -> bool:
    """Whether ``path`` (relative, normalised) is a file ``packages_from`` reads."""
    if len(path) >= PATH_MAX:
        return False
    if path in (DPKG_STATUS, APK_INSTALLED) or path in OS_RELEASE:
        return True
    if path.startswith(DPKG_STATUS_D):
        rest = path[len(DPKG_STATUS_D):]
        return "/" not in rest and not rest.endswith(".md5sums") and bool(rest)
    return bool(_PY_METADATA.search(path) or _NODE_PACKAGE.search(path))


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The lines of ``data`` with their numbers, without line ends, one at a time."""
    for number, line in enumerate(io.BytesIO(data), 1):
        yield number, line.rstrip(b"\r\n")


def parse_os_release(data: bytes) -> Distro:
    """``ID`` and ``VERSION_ID`` of an os-release file (a value that is no plain token is ignored)."""
    values: dict[str, str | None] = {}
    for _, line in _lines(data):
        key, sep, value = line.partition(b"=")
        if sep and key.strip() in (b"ID", b"VERSION_ID"):
            try:
                values[key.strip().decode()] = _token(value.strip().strip(b"'\""), "")
            except _Bad:
                values[key.strip().decode()] = None
    return Distro(id=values.get("ID"), version_id=values.get("VERSION_ID"))


def _quoted(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _kind(value: object) -> str:
    """What a JSON value is, in JSON's words."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _token(value: bytes | str | None | object, what: str) -> str:
    """``value`` as text when it is a plain token: UTF-8, printable, no whitespace, no ``/``."""
    if value is None:
        raise _Bad(f"no {what}")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"{what} is not UTF-8") from None
    if not isinstance(value, str):
        raise _Bad(f"{what} is {_kind(value)}, not a string")
    if not value or not value.isprintable() or " " in value or "/" in value:
        raise _Bad(f"{what} {_quoted(value)} is empty or holds whitespace, '/' or control characters")
    return value


def _purl(**parts) -> str:
    """The purl of ``parts``, checked to read back (the CycloneDX renderer parses it again)."""
    try:
        purl = PackageURL(**parts).to_string()
        PackageURL.from_string(purl)
    except (ValueError, TypeError) as exc:     # UnicodeError is a ValueError
        raise _Bad(f"no valid purl ({exc})") from None
    return purl


def _qualifiers(arch: str | None, distro: Distro) -> dict[str, str]:
    q = {}
    if arch:
        q["arch"] = arch
    if distro.qualifier():
        q["distro"] = distro.qualifier()
    return q


@dataclass
class _Stanza:
    line: int                                             # the line it starts on
    fields: dict[bytes, bytes] = field(default_factory=dict)
    problem: str | None = None                            # the first line that breaks the format


def _stanzas(data: bytes, wanted: frozenset[bytes], *, field_name: re.Pattern = _FIELD_NAME,
             fold_case: bool = True, strict: bool = True) -> Iterator[_Stanza]:
    """The blank-line separated stanzas of ``Name: value`` lines (deb822, apk's database, the
    headers of Python metadata), streamed: each with its ``wanted`` fields (names lower-cased
    when ``fold_case``) and its first problem: a wanted field given twice or continued (a
    continuation line begins with a space or tab), or a line that is no field (``strict``;
    otherwise that line ends the stanzas, as a header block ends where its body begins).
    Comment lines (``#``) are skipped."""
    stanza, previous = None, None
    for number, line in _lines(data):
        if not line.strip():
            if stanza is not None:
                yield stanza
            stanza = previous = None
            continue
        if line.startswith(b"#"):
            continue
        stanza = stanza or _Stanza(number)
        if stanza.problem:
            continue
        if line[:1] in (b" ", b"\t") and previous is not None:
            if previous in wanted:
                stanza.problem = f"line {number}: {previous.decode()} continues on a second line"
            continue
        key, sep, value = line.partition(b":")
        if not (sep and field_name.fullmatch(key)):
            if not strict:
                break
            stanza.problem = f"line {number}: not a 'Field: value' line"
            continue
        previous = key.lower() if fold_case else key
        if previous in wanted:
            if previous in stanza.fields:
                stanza.problem = f"line {number}: {key.decode()} given twice"
            stanza.fields[previous] = value.strip()
    if stanza is not None:
        yield stanza


def dpkg_packages(data: bytes, source: str, layer: str, distro: Distro = Distro()) -> Iterator[Package | Skipped]:
    """Installed packages of a dpkg status file (or one distroless status.d entry), and what is skipped."""
    stanzas = (s for s in _stanzas(data, _DPKG_FIELDS)
               if s.problem or s.fields.get(b"status", b"install ok installed").split()[-1:] == [b"installed"])
    return _database_packages("deb", stanzas, (b"package", b"version", b"architecture"),
                              ("Package", "Version", "Architecture"), source, layer, distro)


def apk_packages(data: bytes, source: str, layer: str, distro: Distro = Distro()) -> Iterator[Package | Skipped]:
    """Installed packages of an apk database (``lib/apk/db/installed``), and what is skipped."""
    stanzas = _stanzas(data, _APK_FIELDS, field_name=_APK_FIELD_NAME, fold_case=False)
    return _database_packages("apk", stanzas, (b"P", b"V", b"A"), ("P: (name)", "V: (version)", "A: (architecture)"),
                              source, layer, distro)


def _database_packages(ecosystem: str, stanzas: Iterator[_Stanza], keys: tuple[bytes, bytes, bytes],
                       labels: tuple[str, str, str], source: str, layer: str,
                       distro: Distro) -> Iterator[Package | Skipped]:
    """A package per stanza of a package manager's database (name, version, architecture under
    ``keys``), or a Skipped. A stanza given again is read once (a purl costs ~0.1 ms)."""
    namespace = distro.id or {"deb": "debian", "apk": "alpine"}[ecosystem]
    seen: set[tuple] = set()      # as many as packages yielded: the caller stops at its cap
    for stanza in stanzas:
        values = tuple(stanza.fields.get(k) for k in keys)
        if not stanza.problem and values in seen:
            continue
        try:
            if stanza.problem:
                raise _Bad(stanza.problem)
            name, version = _token(values[0], labels[0]), _token(values[1], labels[1])
            arch = None if values[2] is None else _token(values[2], labels[2])
            purl = _purl(type=ecosystem, namespace=namespace, name=name, version=version,
                         qualifiers=_qualifiers(arch, distro))
        except _Bad as bad:
            yield Skipped(f"line {stanza.line}", str(bad))
            continue
        seen.add(values)
        yield Package(ecosystem, name, version, purl, source, layer)


def python_packages(data: bytes, source: str, layer: str) -> Iterator[Package | Skipped]:
    """The distribution a METADATA / PKG-INFO file describes (none when it names none)."""
    headers = next(_stanzas(data, _PY_FIELDS, strict=False), None)
    if headers is None or not (headers.problem or _PY_FIELDS <= headers.fields.keys()):
        return
    try:
        if headers.problem:
            raise _Bad(headers.problem)
        name, version = _token(headers.fields[b"name"], "Name"), _token(headers.fields[b"version"], "Version")
        purl = _purl(type="pypi", name=_PEP503.sub("-", name).lower(), version=version)
    except _Bad as bad:
        yield Skipped("", str(bad))
        return
    yield Package("pypi", name, version, purl, source, layer)


def _json_object(data: bytes) -> dict:
    # each value after the first follows a '[', ',' or ':': json.loads builds no more than this counts
    if data.count(b",") + data.count(b":") + data.count(b"[") > MAX_SBOM_JSON_VALUES:
        raise _Bad(f"over {MAX_SBOM_JSON_VALUES} JSON values: not read")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):     # not JSON, not UTF-8, an integer of over 4300 digits, too deep
        raise _Bad("not JSON") from None
    if not isinstance(doc, dict):
        raise _Bad(f"{_kind(doc)}, not a JSON object")
    return doc


def node_packages(data: bytes, source: str, layer: str) -> Iterator[Package | Skipped]:
    """The package a ``node_modules/…/package.json`` describes (none without name and version)."""
    try:
        doc = _json_object(data)
        name, version = doc.get("name"), doc.get("version")
        if name is None or version is None:    # no package: test fixtures, stubs
            return
        scope, bare = None, name
        if isinstance(name, str) and name.startswith("@"):      # "@scope/name"
            scope, slash, bare = name[1:].partition("/")
            if not slash:
                raise _Bad(f"name {_quoted(name)} has a scope but no '/'")
            scope = "@" + _token(scope, "name's scope")
        bare, version = _token(bare, "name"), _token(version, "version")
        purl = _purl(type="npm", namespace=scope, name=bare, version=version)
    except _Bad as bad:
        yield Skipped("", str(bad))
        return
    yield Package("npm", bare, version, purl, source, layer, group=scope)


def package_entries(path: str, data: bytes, layer: str, distro: Distro = Distro()) -> Iterator[Package | Skipped]:
    """The packages the metadata file ``path`` (as ``is_metadata_path`` selects) describes, and a
    ``Skipped`` for each entry of it that is no valid package, in file order."""
    if path == DPKG_STATUS or path.startswith(DPKG_STATUS_D):
        return dpkg_packages(data, path, layer, distro)
    if path == APK_INSTALLED:
        return apk_packages(data, path, layer, distro)
    if _NODE_PACKAGE.search(path):
        return node_packages(data, path, layer)
    if _PY_METADATA.search(path):
        return python_packages(data, path, layer)
    return iter(())


def packages_from(path: str, data: bytes, layer: str, distro: Distro = Distro()) -> list[Package]:
    """The packages the metadata file ``path`` describes (``package_entries`` without the skips)."""
    return [e for e in package_entries(path, data, layer, distro) if isinstance(e, Package)]
