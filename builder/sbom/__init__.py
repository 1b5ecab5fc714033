"""SBOMs of shipped images: CycloneDX 1.6 documents of the packages in an image's layers.

The pipeline, one module each:
- ``layers``: stream the layer tarballs lowest first, apply OCI whiteouts,
  keep only the small metadata files package managers leave behind;
- ``packages``: turn those files into packages (dpkg, apk, Python, Node),
  each with its purl and the layer it came from;
- ``cyclonedx``: render the deterministic CycloneDX 1.6 JSON with
  cyclonedx-python-lib, and validate documents with its strict validator.

``generate_sbom`` runs the whole pipeline for one image and platform;
``sbom_path`` is where a bundle keeps the document.

Hostile or broken metadata never stops a release: a file or package that
cannot be read, and whatever passes a cap (bytes per file, layer and image,
packages per layer and image: ``builder.limits``), is left out with a
warning. The warnings are part of the result (``ImageScan.warnings``) and of
the document (``labbuild:warning`` properties of its metadata), in an order
fixed by the input: the same layers give the same bytes. Only a layer that
is no readable tarball is a BundleError.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from ..limits import MAX_SBOM_IMAGE_COMPONENTS, MAX_SBOM_LAYER_COMPONENTS
from ..format.files import sbom_path
from .cyclonedx import ImageSubject, components_of, render_cyclonedx, sbom_serial, validation_problem
from .layers import ChainMemo, Layer, MergedFiles, read_layers
from .packages import OS_RELEASE, Distro, Package, Skipped, is_metadata_path, package_entries, parse_os_release

__all__ = ["ChainMemo", "ImageScan", "ImageSubject", "Layer", "Package", "components_of", "generate_sbom", "render_cyclonedx",
           "sbom_path", "sbom_serial", "scan_image", "validation_problem"]



@dataclass
class ImageScan:
    """The packages of one image, and what was left out (skipped files and packages, caps reached)."""

    packages: list[Package] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _collect(merged: MergedFiles, distro: Distro) -> set[Package]:
    """The packages of the merged files, read in path order up to the component caps; what is
    skipped or left out is added to ``merged``'s warnings."""
    found: set[Package] = set()
    per_layer: Counter[str] = Counter()
    full: set[str] = set()          # layers at their cap
    for path, f in sorted(merged.files.items()):
        if path in OS_RELEASE or f.layer in full:
            continue
        skipped, first, over = 0, None, None
        for entry in package_entries(path, f.data, f.layer, distro):
            if isinstance(entry, Skipped):
                skipped, first = skipped + 1, first or entry
            elif entry not in found:
                if len(found) == MAX_SBOM_IMAGE_COMPONENTS:
                    over = f"the image has over {MAX_SBOM_IMAGE_COMPONENTS} packages"
                elif per_layer[f.layer] == MAX_SBOM_LAYER_COMPONENTS:
                    over = f"layer {f.layer} has over {MAX_SBOM_LAYER_COMPONENTS} packages"
                    full.add(f.layer)
                if over:
                    break
                found.add(entry)
                per_layer[f.layer] += 1
        if skipped:
            at = f" at {first.where}" if first.where else ""
            what = f"skipped{at}" if skipped == 1 else f"{skipped} entries skipped, the first{at}"
            merged.warn(f"layer {f.layer}: {path}: {what}: {first.reason}")
        if over:
            merged.warn(f"{over}: the SBOM lists the first, by metadata path; from {path} on, the rest are left out")
            if len(found) == MAX_SBOM_IMAGE_COMPONENTS:
                break
    return found


def scan_image(layers: Iterable[Layer], memo: ChainMemo | None = None) -> ImageScan:
    """The packages installed in the image made of ``layers`` (lowest first), whiteouts applied,
    and the warnings of what was left out. ``memo``: shared with the other images of a release,
    so a common base is read once."""
    merged = read_layers(layers, is_metadata_path, memo)
    release = next((merged.files[p] for p in OS_RELEASE if p in merged.files), None)
    distro = parse_os_release(release.data) if release else Distro()
    packages = sorted(_collect(merged, distro))
    unlisted = [f"{merged.unlisted} more warnings not listed"] if merged.unlisted else []
    return ImageScan(packages=packages, warnings=merged.warnings + unlisted)


def generate_sbom(image: ImageSubject, layers: Iterable[Layer], *, epoch: int, labbuild_version: str,
                  memo: ChainMemo | None = None) -> bytes:
    """The CycloneDX 1.6 JSON bytes for ``image`` built from ``layers`` (lowest first); what was
    left out is listed in its metadata (``labbuild:warning``)."""
    scan = scan_image(layers, memo)
    return render_cyclonedx(image, scan.packages, epoch=epoch, labbuild_version=labbuild_version,
                            warnings=scan.warnings)
