"""Manifests and indexes as served: media types and the verified bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .responses import ErrorFactory

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])


@dataclass(frozen=True)
class ImageManifest:
    """An image manifest or index exactly as served: its bytes hash to ``digest``."""

    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        return json.loads(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def manifest_media_type(data: bytes, content_type: str, error: ErrorFactory) -> str:
    """The manifest's media type: its own ``mediaType`` field, else Content-Type, else its shape."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise error("manifest is not JSON", hint="the registry served something else") from None
    if not isinstance(doc, dict):
        raise error("manifest is not a JSON object")
    media = doc.get("mediaType") or content_type.split(";")[0].strip()
    if media not in INDEX_TYPES | MANIFEST_TYPES:
        if doc.get("schemaVersion") == 1 or "prettyjws" in media:
            raise error("Docker schema1 manifests are not supported",
                        hint="pick a tag pushed with a current Docker or buildkit (schema2/OCI)")
        media = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "config" in doc else media
    if media not in INDEX_TYPES | MANIFEST_TYPES:
        raise error(f"unsupported manifest media type {media!r}")
    return media

