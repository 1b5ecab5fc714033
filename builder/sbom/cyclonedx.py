"""CycloneDX 1.6 JSON of an image's packages, through cyclonedx-python-lib (no serialiser of our own).

Deterministic by construction, so bundles stay reproducible:
- ``serialNumber``: ``urn:uuid:`` uuid5 of the image digest and platform
  (``sbom_serial``), not a random uuid4;
- ``metadata.timestamp``: the build epoch given (SOURCE_DATE_EPOCH style);
- every ``bom-ref`` is set explicitly (the library would otherwise invent
  random ones): the purl, made unique with ``#<metadata file>`` when two
  components share one;
- components sorted (the library's sorted sets), properties sorted.

The document: ``metadata.component`` is the image (type ``container``, purl
``pkg:oci/…``, its platform as a property); ``metadata.tools`` names labbuild;
each package a ``library`` component with its purl and the properties
``labbuild:layer`` (digest of the layer its metadata came from) and
``labbuild:source`` (the metadata file); the image depends on every package.
What the SBOM leaves out (unreadable files and packages, caps reached) is
said in ``labbuild:warning`` properties of ``metadata``, absent when nothing is.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from ..errors import BundleError
from .packages import Package

SBOM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:local-ai-lab:labbuild:sbom")
LAYER_PROPERTY = "labbuild:layer"
SOURCE_PROPERTY = "labbuild:source"
PLATFORM_PROPERTY = "labbuild:platform"
WARNING_PROPERTY = "labbuild:warning"


@dataclass(frozen=True)
class ImageSubject:
    """The image an SBOM describes."""

    name: str          # repository, e.g. "docker.io/qdrant/qdrant"
    digest: str        # the platform manifest digest, "sha256:<hex>"
    platform: str      # "linux/amd64"
    tag: str | None = None


def sbom_serial(digest: str, platform: str) -> uuid.UUID:
    """The SBOM's serial number: a function of the image digest and platform only."""
    return uuid.uuid5(SBOM_NAMESPACE, f"{digest} {platform}")


def _image_purl(image: ImageSubject) -> str:
    last = image.name.rpartition("/")[2]
    os_, _, arch = image.platform.partition("/")
    qualifiers = {"repository_url": image.name}
    if arch:
        qualifiers["arch"] = arch
    if image.tag:
        qualifiers["tag"] = image.tag
    return PackageURL(type="oci", name=last.lower(), version=image.digest, qualifiers=qualifiers).to_string()


def _bom_refs(packages: list[Package]) -> list[str]:
    shared = Counter(p.purl for p in packages)
    return [p.purl if shared[p.purl] == 1 else f"{p.purl}#{p.source}" for p in packages]


def render_cyclonedx(image: ImageSubject, packages: Iterable[Package], *, epoch: int,
                     labbuild_version: str, warnings: Iterable[str] = ()) -> bytes:
    """The CycloneDX 1.6 JSON document (bytes, trailing newline) of ``packages`` in ``image``;
    ``warnings``: what the scan left out, listed in the metadata."""

    ordered = sorted(set(packages))
    root = Component(type=ComponentType.CONTAINER, name=image.name, version=image.digest,
                     bom_ref=_image_purl(image), purl=PackageURL.from_string(_image_purl(image)),
                     properties=[Property(name=PLATFORM_PROPERTY, value=image.platform)])
    tool = Component(type=ComponentType.APPLICATION, name="labbuild", version=labbuild_version,
                     bom_ref=f"labbuild@{labbuild_version}")
    components = [
        Component(type=ComponentType.LIBRARY, name=p.name, version=p.version, group=p.group, bom_ref=ref,
                  purl=PackageURL.from_string(p.purl),
                  properties=[Property(name=LAYER_PROPERTY, value=p.layer),
                              Property(name=SOURCE_PROPERTY, value=p.source)])
        for p, ref in zip(ordered, _bom_refs(ordered))]
    # The graph built directly: Bom.register_dependency searches linearly, O(n^2) for n packages.
    dependencies = [Dependency(ref=root.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in components])]
    dependencies += [Dependency(ref=c.bom_ref) for c in components]
    bom = Bom(serial_number=sbom_serial(image.digest, image.platform), components=components,
              dependencies=dependencies,
              metadata=BomMetaData(component=root, tools=ToolRepository(components=[tool]),
                                   properties=[Property(name=WARNING_PROPERTY, value=w) for w in warnings],
                                   timestamp=_dt.datetime.fromtimestamp(epoch, _dt.timezone.utc)))
    _index_dependency_registration(bom)
    return JsonV1Dot6(bom).output_as_string(indent=2).encode("utf-8") + b"\n"


def _index_dependency_registration(bom) -> None:
    """Make ``bom.register_dependency`` O(1) for targets already in the graph.

    The serializer's ``Bom.validate`` registers every component once more,
    each time by a linear search of the graph: O(n^2), seconds for the
    thousand packages of a large image. Every target here is already
    registered, so the search can be a set lookup; anything else still
    takes the library's path.
    """
    known = {d.ref for d in bom.dependencies}
    register = bom.register_dependency

    def register_dependency(target, depends_on=None) -> None:
        if depends_on or target.bom_ref not in known:
            register(target, depends_on)
            known.update(d.ref for d in bom.dependencies)

    bom.register_dependency = register_dependency


def validation_problem(document: bytes) -> str | None:
    """None when ``document`` passes cyclonedx-python-lib's strict CycloneDX 1.6 JSON validator, else why not."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode("utf-8"))
    return None if error is None else str(error)


def components_of(document: bytes) -> list[dict]:
    """The components of a CycloneDX JSON document, as ``{name, version, purl, layer, source}`` rows
    (strings or None); a BundleError for a document not shaped so."""
    try:
        doc = json.loads(document)
    except (ValueError, RecursionError) as exc:     # not JSON, not UTF-8, too deep
        raise BundleError(f"not a CycloneDX JSON document ({exc})") from None
    listed = doc.get("components", []) if isinstance(doc, dict) else None
    if not isinstance(listed, list):
        raise BundleError("not a CycloneDX JSON document (no list of components)")
    rows = []
    for n, c in enumerate(listed):
        props = c.get("properties", []) if isinstance(c, dict) else None
        if not isinstance(props, list) or not all(isinstance(p, dict) for p in props):
            raise BundleError(f"component {n}: not an object with a list of properties")
        props = {p.get("name"): p.get("value") for p in props if isinstance(p.get("name"), str)}
        row = {"name": c.get("name"), "version": c.get("version"), "purl": c.get("purl"),
               "layer": props.get(LAYER_PROPERTY), "source": props.get(SOURCE_PROPERTY)}
        if c.get("group"):
            row["name"] = f"{c['group']}/{row['name']}"
        wrong = [k for k, v in row.items() if v is not None and not isinstance(v, str)]
        if wrong or not isinstance(c.get("group", ""), (str, type(None))):
            raise BundleError(f"component {n}: {', '.join(wrong) or 'group'} is not a string")
        rows.append(row)
    return rows
