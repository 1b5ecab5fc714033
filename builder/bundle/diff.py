"""What changed between two releases: a pure function on two BundleViews.

``read_bundle_view(path)`` reads what diff compares from a verified archive
or an extracted bundle directory (through ``builder.bundle.verify``).

``diff_bundles(a, b)`` compares manifests and lab.env settings: services
added/removed, image tag and digest changes, published ports, non-secret
settings (keys and values), secret *names* (never values: bundles hold
none), volumes, models (added, removed, re-pinned) and every file whose
sha256 changed. ``BundleDiff.to_json``
and ``BundleDiff.render_text`` are two views of the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..escape import parse_env_file
from ..format.files import LAB_ENV, MANIFEST, SBOM_DIR, TRUST_FILES
from ..format.manifest import Manifest, ManifestService
from ..fsutil import CapExceeded, read_capped
from ..limits import MAX_SMALL_FILE_BYTES
from .inventory import ImageInventory, inventory_of, is_sbom_document, package_changes
from .reader import SizeBudget
from .verify import read_verified


@dataclass(frozen=True)
class BundleView:
    """What ``diff`` compares: the manifest and the non-secret settings of one bundle."""

    path: str
    manifest: Manifest
    lab_env: dict[str, str]
    inventory: tuple[ImageInventory, ...] = ()     # the SBOMs' components (image bundles)


def read_bundle_view(path: str | Path) -> BundleView:
    """A verified archive, or an extracted bundle directory, as a BundleView."""
    path = Path(path)
    if path.is_dir():
        kept, budget = {}, SizeBudget()      # unverified: each file's size admitted before it is read
        rels = [MANIFEST, LAB_ENV] + [f"{SBOM_DIR}/{p.name}" for p in sorted((path / SBOM_DIR).glob("*.cdx.json"))]
        for rel in rels:
            try:
                size = (path / rel).stat().st_size
                if budget.admit(rel, size) is not None:
                    raise budget.error(path)
                kept[rel] = read_capped(path / rel, MAX_SMALL_FILE_BYTES)
            except FileNotFoundError:
                raise BundleError(f"{path}: no {rel}", hint="pass a bundle archive or an extracted bundle") from None
            except CapExceeded as exc:      # not a regular file, or too big a one
                raise BundleError(str(exc), hint="pass a bundle archive or an extracted bundle") from None
        manifest = Manifest.loads(kept[MANIFEST], f"{path}: {MANIFEST}")
    else:
        result = read_verified(path, keep=lambda rel: rel in TRUST_FILES or rel == LAB_ENV or is_sbom_document(rel))
        if not result.ok:
            raise BundleError(f"{path}: bundle failed verification", problems=result.errors,
                              hint="diff only verified bundles; run `labbuild verify`")
        kept, manifest = result.contents, result.manifest
    return BundleView(path=str(path), manifest=manifest,
                      lab_env=parse_env_file(kept.get(LAB_ENV, b"").decode("utf-8", "replace")),
                      inventory=tuple(inventory_of(kept)))


def _port_specs(service: ManifestService | None) -> list[str]:
    ports = service.ports if service else ()
    return sorted(f"{p.name} {f'{p.bind}:{p.host}' if p.host else 'internal'}->{p.container}/{p.protocol}"
                  for p in ports)


def _model_specs(service: ManifestService | None) -> dict[str, str]:
    """``{name:tag: digest}`` of a service's models."""
    return {m.reference: m.digest for m in (service.models if service else ())}


def _volume_specs(service: ManifestService | None) -> list[str]:
    volumes = service.volumes if service else ()
    return sorted(f"{v.volume}:{v.target}" + (":ro" if v.read_only else "") for v in volumes)


@dataclass
class BundleDiff:
    a: dict[str, Any]
    b: dict[str, Any]
    services_added: list[str] = field(default_factory=list)
    services_removed: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    packages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.services_added or self.services_removed or self.images or self.ports or self.env
                    or self.secrets or self.volumes or self.models or self.files_added or self.files_removed
                    or self.files_changed or self.packages)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "identical": self.identical,
            "services": {"added": self.services_added, "removed": self.services_removed},
            "images": self.images, "ports": self.ports, "env": self.env, "secrets": self.secrets,
            "volumes": self.volumes, "models": self.models,
            "files": {"added": self.files_added, "removed": self.files_removed, "changed": self.files_changed},
            "packages": self.packages,
        }

    def render_text(self) -> str:
        head = f"{self.a['name']} -> {self.b['name']}"
        if self.identical:
            return head + "\nno differences"
        lines = [head]
        for s in self.services_added:
            lines.append(f"+ service {s}")
        for s in self.services_removed:
            lines.append(f"- service {s}")
        for i in self.images:
            b, a = i["before"], i["after"]
            what = []
            if i["tag_changed"]:
                what.append(f"{b['image']} -> {a['image']}")
            if i["digest_changed"]:
                what.append(f"digest {b['digest'][:19]}… -> {a['digest'][:19]}…")
            lines.append(f"~ image {i['service']}: " + ", ".join(what))
        def listed(kind: str, change: dict) -> str:
            return (f"~ {kind} {change['service']}: {', '.join(change['before']) or 'none'} -> "
                    f"{', '.join(change['after']) or 'none'}")

        lines += [listed("ports", p) for p in self.ports]
        for e in self.env:
            if e["before"] is None:
                lines.append(f"+ env {e['key']}={e['after']}")
            elif e["after"] is None:
                lines.append(f"- env {e['key']} (was {e['before']})")
            else:
                lines.append(f"~ env {e['key']}: {e['before']} -> {e['after']}")
        for s in self.secrets:
            for k in s["added"]:
                lines.append(f"+ secret {k} (generated at install)")
            for k in s["removed"]:
                lines.append(f"- secret {k}")
        lines += [listed("volumes", v) for v in self.volumes]
        for m in self.models:
            if m["before"] is None:
                lines.append(f"+ model {m['service']}: {m['model']}@{m['after'][:19]}…")
            elif m["after"] is None:
                lines.append(f"- model {m['service']}: {m['model']}")
            else:
                lines.append(f"~ model {m['service']}: {m['model']} digest {m['before'][:19]}… -> {m['after'][:19]}…")
        for f in self.files_added:
            lines.append(f"+ file {f}")
        for f in self.files_removed:
            lines.append(f"- file {f}")
        for f in self.files_changed:
            lines.append(f"~ file {f}")
        for p in self.packages:
            sign = "+" if p["before"] is None else "-" if p["after"] is None else "~"
            lines.append(f"{sign} package {p['service']}: {p['package']} "
                         f"{p['before'] or ''}{' -> ' if p['before'] and p['after'] else ''}{p['after'] or ''}")
        return "\n".join(lines)


def _identity(view: BundleView) -> dict[str, Any]:
    m = view.manifest
    return {"path": view.path, "name": m.name, "version": m.version, "profile": m.profile}


def diff_bundles(a: BundleView, b: BundleView) -> BundleDiff:
    """Everything that differs from release ``a`` to release ``b``."""
    d = BundleDiff(a=_identity(a), b=_identity(b))
    sa, sb = a.manifest.services, b.manifest.services
    d.services_added = sorted(set(sb) - set(sa))
    d.services_removed = sorted(set(sa) - set(sb))
    for name in sorted(set(sa) | set(sb)):
        x, y = sa.get(name), sb.get(name)
        if x and y and (x.image, x.digest) != (y.image, y.digest):
            d.images.append({"service": name,
                             "before": {"image": x.image, "digest": x.digest},
                             "after": {"image": y.image, "digest": y.digest},
                             "tag_changed": x.image != y.image, "digest_changed": x.digest != y.digest})
        if x and y and _port_specs(x) != _port_specs(y):
            d.ports.append({"service": name, "before": _port_specs(x), "after": _port_specs(y)})
        if x and y and _volume_specs(x) != _volume_specs(y):
            d.volumes.append({"service": name, "before": _volume_specs(x), "after": _volume_specs(y)})
        ma, mb = _model_specs(x), _model_specs(y)
        for ref in sorted(set(ma) | set(mb)):
            if ma.get(ref) != mb.get(ref):
                d.models.append({"service": name, "model": ref, "before": ma.get(ref), "after": mb.get(ref)})
        ka, kb = set(x.secrets if x else ()), set(y.secrets if y else ())
        if x and y and ka != kb:
            d.secrets.append({"service": name, "added": sorted(kb - ka), "removed": sorted(ka - kb)})
    for key in sorted(set(a.lab_env) | set(b.lab_env)):
        before, after = a.lab_env.get(key), b.lab_env.get(key)
        if before != after:
            d.env.append({"key": key, "before": before, "after": after})
    fa, fb = a.manifest.files, b.manifest.files
    d.files_added = sorted(set(fb) - set(fa))
    d.files_removed = sorted(set(fa) - set(fb))
    d.files_changed = sorted(n for n in set(fa) & set(fb) if fa[n].sha256 != fb[n].sha256)
    d.packages = package_changes(list(a.inventory), list(b.inventory))
    return d
