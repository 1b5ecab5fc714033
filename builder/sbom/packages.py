"""Installed packages, read from the metadata files package managers leave in an image.

Pure functions from file bytes to ``Package`` records:

- dpkg: ``var/lib/dpkg/status`` and distroless ``var/lib/dpkg/status.d/*``
  (deb822 paragraphs, parsed with python-debian); only packages dpkg
  reports as installed;
- apk: ``lib/apk/db/installed`` (``P:``/``V:``/``A:`` blocks);
- Python: ``*.dist-info/METADATA``, ``*.egg-info/PKG-INFO`` and single-file
  ``*.egg-info`` (RFC 822 headers ``Name`` and ``Version``);
- Node: ``node_modules/[@scope/]NAME/package.json`` (``name`` and ``version``).

``is_metadata_path`` says which paths of an image to read; ``packages_from``
turns one such file into packages. Each package carries a purl (package-url
spec: ``pkg:deb/<distro>/…?arch=…``, ``pkg:apk/<distro>/…?arch=…``,
``pkg:pypi/<normalised name>@…``, ``pkg:npm/[%40scope/]name@…``), the file it
was read from and the digest of the layer that file came from.
"""

from __future__ import annotations

import email.parser
import json
import re
from dataclasses import dataclass

from debian.deb822 import Deb822
from packageurl import PackageURL

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")

_PY_METADATA = re.compile(r"(^|/)[^/]+\.dist-info/METADATA$|(^|/)[^/]+\.egg-info(/PKG-INFO)?$")
_NODE_PACKAGE = re.compile(r"(^|/)node_modules/(@[^/]+/)?[^/@.][^/]*/package\.json$")
_PEP503 = re.compile(r"[-_.]+")


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
class Distro:
    """The image's distribution (os-release ``ID`` and ``VERSION_ID``), for purl namespaces."""

    id: str | None = None
    version_id: str | None = None

    def qualifier(self) -> str | None:
        if self.id and self.version_id:
            return f"{self.id}-{self.version_id}"
        return None


def is_metadata_path(path: str) -> bool:
    """Whether ``path`` (relative, normalised) is a file ``packages_from`` reads."""
    if path in (DPKG_STATUS, APK_INSTALLED) or path in OS_RELEASE:
        return True
    if path.startswith(DPKG_STATUS_D):
        rest = path[len(DPKG_STATUS_D):]
        return "/" not in rest and not rest.endswith(".md5sums") and bool(rest)
    return bool(_PY_METADATA.search(path) or _NODE_PACKAGE.search(path))


def parse_os_release(data: bytes) -> Distro:
    """``ID`` and ``VERSION_ID`` of an os-release file."""
    values = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    return Distro(id=values.get("ID") or None, version_id=values.get("VERSION_ID") or None)


def _qualifiers(arch: str | None, distro: Distro) -> dict[str, str]:
    q = {}
    if arch:
        q["arch"] = arch
    if distro.qualifier():
        q["distro"] = distro.qualifier()
    return q


def dpkg_packages(data: bytes, source: str, layer: str, distro: Distro = Distro()) -> list[Package]:
    """Installed packages of a dpkg status file (or one distroless status.d entry)."""
    namespace = distro.id or "debian"
    found = []
    for para in Deb822.iter_paragraphs(data.decode("utf-8", "replace").splitlines(keepends=True)):
        name, version = para.get("Package"), para.get("Version")
        status = para.get("Status", "install ok installed").split()
        if not name or not version or status[-1:] != ["installed"]:
            continue
        arch = para.get("Architecture")
        purl = PackageURL(type="deb", namespace=namespace, name=name, version=version,
                          qualifiers=_qualifiers(arch, distro)).to_string()
        found.append(Package("deb", name, version, purl, source, layer))
    return found


def apk_packages(data: bytes, source: str, layer: str, distro: Distro = Distro()) -> list[Package]:
    """Installed packages of an apk database (``lib/apk/db/installed``)."""
    namespace = distro.id or "alpine"
    found = []
    for block in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and len(key) == 1:
                fields.setdefault(key, value)
        name, version = fields.get("P"), fields.get("V")
        if name and version:
            purl = PackageURL(type="apk", namespace=namespace, name=name, version=version,
                              qualifiers=_qualifiers(fields.get("A"), distro)).to_string()
            found.append(Package("apk", name, version, purl, source, layer))
    return found


def python_packages(data: bytes, source: str, layer: str) -> list[Package]:
    """The distribution a METADATA / PKG-INFO file describes (none when it names none)."""
    headers = email.parser.BytesHeaderParser().parsebytes(data)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return []
    name, version = str(name).strip(), str(version).strip()
    purl = PackageURL(type="pypi", name=_PEP503.sub("-", name).lower(), version=version).to_string()
    return [Package("pypi", name, version, purl, source, layer)]


def node_packages(data: bytes, source: str, layer: str) -> list[Package]:
    """The package a ``node_modules/…/package.json`` describes (none without name and version)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return []
    name, version = (doc.get("name"), doc.get("version")) if isinstance(doc, dict) else (None, None)
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return []
    scope, _, bare = name.rpartition("/") if name.startswith("@") else (None, "", name)
    purl = PackageURL(type="npm", namespace=scope or None, name=bare, version=version).to_string()
    return [Package("npm", bare, version, purl, source, layer, group=scope or None)]


def packages_from(path: str, data: bytes, layer: str, distro: Distro = Distro()) -> list[Package]:
    """The packages the metadata file ``path`` (as ``is_metadata_path`` selects) describes."""
    if path == DPKG_STATUS or path.startswith(DPKG_STATUS_D):
        return dpkg_packages(data, path, layer, distro)
    if path == APK_INSTALLED:
        return apk_packages(data, path, layer, distro)
    if _NODE_PACKAGE.search(path):
        return node_packages(data, path, layer)
    if _PY_METADATA.search(path):
        return python_packages(data, path, layer)
    return []
