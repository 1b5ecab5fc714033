"""Model formats, as a table: the one place that knows how a model format lays its files out
in a volume, which names it accepts and how it lists them. The blueprint schema's
``models.format`` enum, the blueprint rules, lock, pack, install and render all ask
``MODEL_FORMATS`` (a test keeps the schema's enum equal to its keys). A second format
(a Hugging Face GGUF file, say) is one more entry here.

Ollama's layout, from its source: ``manifest.BlobsPath`` (``sha256:`` -> ``sha256-``;
ollama/ollama ``manifest/paths.go``, formerly ``server/modelpath.go GetBlobsPath``) and
``Name.Filepath()`` = ``host/namespace/model/tag`` under ``manifests/``
(``types/model/name.go``; a registry port stays in the host part: ``127.0.0.1:5000/...``).
Newer Ollama also writes ``manifests-v2/`` but still reads the legacy ``manifests/`` path
(``resolveManifestPath``), which every version reads — so that is what is written::

    <root>/blobs/sha256-<hex>                          config and every layer
    <root>/manifests/<host>/<namespace>/<model>/<tag>  the exact manifest bytes

Also here: where model blobs live in an image bundle and which models a bundle ships.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import names
from ..errors import InstallError
from .files import IMAGE_BLOBS_PREFIX

if TYPE_CHECKING:
    from .manifest import Manifest, ManifestModel

_HEX = re.compile(r"^sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class ModelFormat:
    """How one model format is named, laid out in a volume and listed back."""

    name: str
    default_hosts: tuple[str, ...]     # the format's own registry: names there are shown short
    manifest_dirs: tuple[str, ...]     # the directories under a root that hold manifests (listing)

    def blob_path(self, digest: str) -> str:
        """``sha256:<hex>`` -> ``blobs/sha256-<hex>`` (Ollama's ``BlobsPath``)."""
        m = _HEX.match(digest)
        if not m:
            raise InstallError(f"{digest!r} is not a sha256 digest Ollama can store")
        return f"blobs/sha256-{m[1]}"

    def manifest_path(self, name: str, tag: str) -> str:
        """``registry.ollama.ai/library/qwen2.5`` + ``0.5b`` -> ``manifests/registry.ollama.ai/library/qwen2.5/0.5b``.

        ``Name.Filepath()``: host/namespace/model/tag; the host keeps its port
        (``127.0.0.1:5000``), a literal colon in the directory name.
        """
        parts = name.split("/")
        if len(parts) != 3 or not all(parts) or not tag or any(p in (".", "..") for p in (*parts, tag)):
            raise InstallError(f"{name}:{tag} is not host/namespace/model:tag",
                               hint="Ollama's layout holds exactly one namespace")
        return "manifests/" + "/".join((*parts, tag))

    def reference_of(self, rel: str) -> str | None:
        """The inverse: ``manifests/<host>/<ns>/<model>/<tag>`` -> ``host/ns/model:tag`` (else None)."""
        parts = rel.strip("/").split("/")
        if len(parts) != 5 or parts[0] not in self.manifest_dirs or parts[-1].startswith("."):
            return None
        return "/".join(parts[1:4]) + ":" + parts[4]

    def name_problem(self, name: str) -> tuple[str, str] | None:
        """``(message, hint)`` when the format cannot hold a model of this name: first the registry
        and repository grammar every image name has (``names.repository_problem``), then the
        layout's own rules. Validate and the manifest reader both ask this, so they accept the same names."""
        if why := names.repository_problem(name):
            return why, (f"name the registry, e.g. {self.default_hosts[0]}/{name}"
                         if names.is_valid("repository", name) else names.describe("repository"))
        host, *rest = name.split("/")
        if len(rest) != 2:
            return (f"{name!r} is not host/namespace/model",
                    "Ollama's layout (manifests/<host>/<namespace>/<model>/<tag>) has exactly "
                    "one namespace, e.g. registry.ollama.ai/library/qwen2.5")
        if "." in rest[0] or len(host) > 350 or len(rest[1]) > 80:
            return (f"{name!r} is not a name Ollama accepts",
                    "the namespace may not contain '.', the model name is at most 80 characters")
        return None

    def display_name(self, name: str, tag: str) -> str:
        """The name the model server lists and serves: ``qwen2.5:0.5b`` for Ollama's own
        registry's library, else ``host/namespace/model:tag`` (Ollama's ``DisplayShortest``)."""
        host, _, rest = name.partition("/")
        if host in self.default_hosts:
            return f"{rest.removeprefix('library/')}:{tag}"
        return f"{name}:{tag}"


OLLAMA = ModelFormat(name="ollama", default_hosts=("registry.ollama.ai", "ollama.com"),
                     manifest_dirs=("manifests", "manifests-v2"))
MODEL_FORMATS: dict[str, ModelFormat] = {OLLAMA.name: OLLAMA}
DEFAULT_MODEL_FORMAT = OLLAMA.name        # what a [[models]] entry without ``format`` is


def model_format(name: str) -> ModelFormat | None:
    """The format called ``name``, or None when this labbuild knows no such format."""
    return MODEL_FORMATS.get(name)


# --------------------------------------------------------------------------- models in bundles

def model_blob_path(digest: str) -> str:
    """Where a model blob (manifest, config or layer) lives in an image bundle."""
    return f"{IMAGE_BLOBS_PREFIX}sha256/{digest.removeprefix('sha256:')}"


def shipped_models(manifest: Manifest) -> dict[str, tuple[ManifestModel, ...]]:
    """``{service: models}`` of the services whose model blobs the bundle carries
    (an image bundle); a bundle without images ships none."""
    return {svc: s.models for svc, s in sorted(manifest.services.items())
            if s.models and all(model_blob_path(d) in manifest.files
                                for m in s.models for d in (m.digest, *(b.digest for b in m.blobs)))}


def model_bytes(manifest: Manifest) -> int:
    """Bytes of every distinct model blob (manifests included) the bundle ships: what
    placing its models writes into volumes at most (``doctor`` counts them against
    free space; blobs already present are skipped at install)."""
    sizes: dict[str, int] = {}
    for models in shipped_models(manifest).values():
        for m in models:
            sizes[m.digest] = m.size
            sizes.update({b.digest: b.size for b in m.blobs})
    return sum(sizes.values())
