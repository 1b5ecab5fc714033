"""Bundle file names and versions: every arcname a bundle has, the top directory and
file name of full and delta bundles, the version grammar, and what a safe relative path is."""

from __future__ import annotations

import re

from .. import names
from ..platforms import platform_file

BUNDLE_FORMAT = 1

# --------------------------------------------------------------------------- file names

COMPOSE_FILE = "compose.yaml"
COMPOSE_GPU_FILE = "compose.gpu.yaml"      # only in bundles with a [resources] gpus service
LAB_ENV = "lab.env"
SECRETS_EXAMPLE = "secrets.env.example"
LOCK_FILE = "lock.json"
INSTALL_SCRIPT = "install.sh"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURE = "manifest.json.sig"
SIGSTORE = "manifest.json.sigstore.json"            # the same signature as a Sigstore bundle (v0.3)
PROVENANCE = "provenance.intoto.json"               # DSSE: in-toto Statement v1, SLSA Provenance v1
PROVENANCE_SINCE = "0.2.0"                          # every bundle labbuild made from this version on carries it
OPTIONAL_TARGETS = "observability/prometheus/optional-targets.json"   # bundles with scraped optional services
SBOM_DIR = "sbom"                                   # image bundles: one CycloneDX 1.6 document per image and platform
UNSUMMED = frozenset({SUMS, SIGNATURE, SIGSTORE})   # not in SHA256SUMS (made from manifest.json after it)
UNLISTED = frozenset({MANIFEST, SUMS, SIGNATURE, SIGSTORE, PROVENANCE})   # not in manifest["files"]
TRUST_FILES = (MANIFEST, SUMS, SIGNATURE, SIGSTORE, PROVENANCE)           # what verification reads of a bundle

ACCESS_JSON = "access/lab.json"                     # bundles with the front door on (issue 23)
HOME_PAGE = "access/home/index.html"                # its home page, rendered from access/lab.json
IMAGES_DIR = "images"
IMAGE_BLOBS_PREFIX = "images/blobs/"
IMAGE_SHA256_BLOBS = IMAGE_BLOBS_PREFIX + "sha256/"   # + a blob's hex digest: its path in a bundle
DOCKER_LOAD_DEFAULT = "images/manifest.json"        # docker-load manifest of the first platform
_UNSAFE_SBOM_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def sbom_path(name: str, platform: str) -> str:
    """Where a bundle keeps an image's SBOM: ``sbom/<name>_<os>_<arch>[_<variant>].cdx.json``.

    ``name`` is the service (or any image name; characters outside
    ``[A-Za-z0-9._-]`` become ``-``); the platform is spelt as in the
    bundle's other per-platform files (``builder.platforms.platform_file``).
    """
    return f"{SBOM_DIR}/{_UNSAFE_SBOM_NAME.sub('-', name)}_{platform_file(platform)}.cdx.json"


def runbook_path(service: str) -> str:
    """Where a service's runbook lives in a bundle."""
    return f"runbooks/{service}.md"


def docker_load_manifest(platform: str) -> str:
    """The docker-load manifest of ``platform`` in a bundle."""
    return f"images/docker-load/{platform_file(platform)}.json"


def bundle_top(lab: str, profile: str, version: str) -> str:
    """The bundle's top directory: ``<lab>-<profile>-<version>``."""
    return f"{lab}-{profile}-{version}"


def bundle_filename(lab: str, profile: str, version: str, with_images: bool) -> str:
    """``<top>.tar.gz``; ``<top>.tar`` for image bundles (layers are compressed already)."""
    return bundle_top(lab, profile, version) + (".tar" if with_images else ".tar.gz")


def delta_top(lab: str, profile: str, version: str, base_version: str) -> str:
    """A delta bundle's top directory: ``<lab>-<profile>-<version>-since-<base version>``."""
    return f"{bundle_top(lab, profile, version)}-since-{base_version}"


def delta_filename(lab: str, profile: str, version: str, base_version: str) -> str:
    """``<delta top>.tar`` (a delta always carries images)."""
    return delta_top(lab, profile, version, base_version) + ".tar"


# --------------------------------------------------------------------------- versions

def is_version(version: object) -> bool:
    """SemVer 2.0 (the ``version`` grammar of ``builder.names``), matched in full."""
    return names.is_valid("version", version)


def version_match(version: str) -> re.Match:
    """The SemVer groups of a valid version: 1-3 major.minor.patch, 5 the prerelease."""
    return names.grammar("version")[0].fullmatch(version)


def version_key(version: str) -> tuple:
    """A sort key of a valid version, in SemVer precedence (a prerelease sorts before its release)."""
    m = version_match(version)
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[5]
    pre_key = (1,) if pre is None else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")])
    return (major, minor, patch, pre_key)


def must_carry_provenance(labbuild_version: str) -> bool:
    """Whether a bundle whose manifest.json says ``labbuild_version`` made it must carry
    ``PROVENANCE``: made by ``PROVENANCE_SINCE`` or later, or by a version that is not
    SemVer (nothing labbuild writes: fail closed). The manifest is hashed and signed,
    so this cannot be changed without breaking them, unlike the provenance's own
    line in SHA256SUMS, which nothing signs."""
    return not (is_version(labbuild_version) and version_key(labbuild_version) < version_key(PROVENANCE_SINCE))


def safe_relative(rel: str) -> bool:
    """A bundle-relative POSIX path with no empty, '.', '..' parts, backslashes or control characters."""
    parts = rel.split("/")
    return bool(rel) and not any(p in ("", ".", "..") for p in parts) and "\\" not in rel \
        and not re.search(r"[\x00-\x1f\x7f]", rel)

