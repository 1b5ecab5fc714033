"""What software a bundle ships (read side): the components of its ``sbom/`` documents.

``read_inventory(path, service=None)`` verifies the bundle (one pass, keeping
only the trust files and the SBOMs, within ``builder.limits``' total for SBOMs)
and returns one ``ImageInventory`` per SBOM document: the service it was made
for, the platform, and its components (name, version, purl, the layer each
came from). ``package_changes(a, b)`` compares two inventories by package
(purl without version) for ``diff``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
from ..format.files import SBOM_DIR, TRUST_FILES
from ..sbom import components_of
from .verify import read_verified

_SBOM_NAME = re.compile(rf"{SBOM_DIR}/(?P<service>[A-Za-z0-9._-]+?)_(?P<platform>[a-z0-9]+_[a-z0-9_]+)\.cdx\.json")


@dataclass(frozen=True)
class ImageInventory:
    path: str                     # sbom/<service>_<os>_<arch>.cdx.json
    service: str
    platform: str                 # linux/amd64
    components: tuple[dict, ...]

    def to_json(self) -> dict:
        return {"sbom": self.path, "service": self.service, "platform": self.platform,
                "components": list(self.components)}


def is_sbom_document(rel: str) -> bool:
    """Whether ``rel`` is an SBOM document ``inventory_of`` reads (the only members kept for it)."""
    return _SBOM_NAME.fullmatch(rel) is not None


def inventory_of(contents: dict[str, bytes]) -> list[ImageInventory]:
    """The inventories of a bundle's kept files (pure)."""
    out = []
    for rel, data in sorted(contents.items()):
        m = _SBOM_NAME.fullmatch(rel)
        if not m:
            continue
        try:
            components = components_of(data)
        except BundleError as exc:
            raise BundleError(f"{rel}: {exc.message}", hint="the bundle is damaged; run `labbuild verify`") from None
        out.append(ImageInventory(rel, m["service"], m["platform"].replace("_", "/"),
                                  tuple(sorted(components, key=lambda c: (c["purl"] or "", c["name"] or "")))))
    return out


def read_inventory(path: str | Path, service: str | None = None) -> list[ImageInventory]:
    """The SBOM inventories of a verified bundle archive (all services, or one)."""
    result = read_verified(Path(path), keep=lambda rel: rel in TRUST_FILES or is_sbom_document(rel))
    if not result.ok:
        raise BundleError(f"{path}: bundle failed verification", problems=result.errors,
                          hint="read SBOMs only from verified bundles; run `labbuild verify`")
    found = inventory_of(result.contents)
    if service is not None:
        known = sorted({i.service for i in found})
        found = [i for i in found if i.service == service]
        if not found:
            raise BundleError(f"{path}: no SBOM for service {service!r}",
                              hint="services with SBOMs: " + (", ".join(known) or "none (not an image bundle? "
                                                                                 "release with --with-images or --sbom)"))
    return found


def _versions(inventories: list[ImageInventory]) -> dict[tuple[str, str], str]:
    out = {}
    for inv in inventories:
        for c in inv.components:
            key = (inv.service, (c["purl"] or c["name"] or "").split("@", 1)[0].split("?", 1)[0])
            out[key] = c["version"] or ""
    return out


def package_changes(a: list[ImageInventory], b: list[ImageInventory]) -> list[dict]:
    """Packages added, removed or changed in version from ``a`` to ``b``, per service."""
    va, vb = _versions(a), _versions(b)
    return [{"service": svc, "package": pkg, "before": va.get((svc, pkg)), "after": vb.get((svc, pkg))}
            for svc, pkg in sorted(set(va) | set(vb)) if va.get((svc, pkg)) != vb.get((svc, pkg))]
