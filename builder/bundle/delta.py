"""Delta bundles (build side): ship only the blobs a base release lacks.

``release VERSION --with-images --since BASE`` builds
``<lab>-<profile>-<version>-since-<base version>.tar``. ``read_base`` finds
what the base shipped — from its release record
(``lockfiles/releases/<profile>-<version>.json``: the frozen lock and the
manifest, no base file needed) or from a base bundle file (verified first).
``plan_delta`` decides, before anything is downloaded, which blobs the delta
relies on instead of carrying; ``delta_members`` drops them from the
``images/`` members and trims the docker-load manifests.

What the base provides on a host is what ``docker load`` keeps: images (by
image ID = config digest) and layer *chains*. So:

- a config is relied on when the base has that very image (same config on
  the same platform); such an image leaves the docker-load manifest (nothing
  of it is carried: install tags the engine's copy);
- a layer is relied on when the base has an image of the same platform whose
  bottom layers are the same chain (the same digests up to and including it):
  ``docker load`` skips a layer whose chain exists, but a base layer under a
  changed lower layer is a new chain and is carried;
- every other blob under ``images/blobs/`` (manifests, and model blobs) is
  relied on when the base shipped (or itself relied on) the same digest.

The delta's manifest names the base (``format.manifest.DeltaBase``) with every relied
blob and the base images whose presence install checks
(``builder.install.unpack``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from ..errors import BundleError
from ..format.files import (
    DOCKER_LOAD_DEFAULT,
    IMAGE_SHA256_BLOBS,
    IMAGES_DIR,
    LOCK_FILE,
    MANIFEST,
    TRUST_FILES,
    is_version,
)
from ..format.manifest import DeltaBase, Manifest, ReliedImage
from ..format.record import Record
from ..fsutil import canonical_json, sha256_bytes
from ..lockfile import Lock, lock_from_json
from .archive import BundleFile
from .fetch import PlannedImage
from .record import record_path
from .verify import read_verified


@dataclass(frozen=True)
class Base:
    """What a base release put on a host (see the module docstring)."""

    manifest: Manifest
    manifest_sha256: str
    bundle: str                     # its archive's file name
    lock: Lock                      # its frozen (closure) lock

    @property
    def blobs(self) -> frozenset[str]:
        """Every blob digest the base shipped or (a delta itself) relied on."""
        relied = set(self.manifest.since.blobs) if self.manifest.since else set()
        return frozenset(set(self.manifest.carried_blobs) | relied)


def read_base(root: Path, base: str, lab: str, profile: str) -> Base:
    """The base of a delta: a base bundle file, or the version of a recorded release of ``profile``."""
    path = Path(base)
    if path.is_file():
        result = read_verified(path, keep=lambda rel: rel in TRUST_FILES or rel == LOCK_FILE)
        if not result.ok:
            raise BundleError(f"base bundle {path} failed verification", problems=result.errors,
                              hint="a delta's base must be an intact bundle; run `labbuild verify` on it")
        manifest, raw = result.manifest, result.contents[MANIFEST]
        lock = lock_from_json(json.loads(result.contents[LOCK_FILE]), f"{path}: {LOCK_FILE}")
        found = Base(manifest, sha256_bytes(raw), path.name, lock)
    elif is_version(base):
        rpath = record_path(root, profile, base)
        if not rpath.exists():
            raise BundleError(f"--since {base}: no release record {rpath}",
                              hint="pass a recorded version of this profile, or the base bundle file")
        record = Record.read(rpath)
        manifest = Manifest.from_json(record.manifest, f"{rpath}: manifest")
        found = Base(manifest, record.manifest_sha256, record.bundle,
                     lock_from_json(record.lock, f"{rpath}: lock"))
    else:
        raise BundleError(f"--since {base!r}: neither a bundle file nor a version",
                          hint="pass the version of a recorded release (e.g. 1.0.0) or a base bundle's path")
    m = found.manifest
    if (m.lab, m.profile) != (lab, profile):
        raise BundleError(f"--since {base}: the base is {m.lab} {m.profile}, this release is {lab} {profile}",
                          hint="a delta's base is an earlier release of the same lab and profile")
    return found


@dataclass(frozen=True)
class DeltaPlan:
    """What a delta relies on instead of carrying, decided before any download."""

    relied: dict[str, int]              # blob digest -> size (configs, layers, manifests)
    images: tuple[ReliedImage, ...]     # the base images those blobs come from


def _base_images(base: Base) -> tuple[dict, dict]:
    """``{(platform, config): reference}`` and ``{(platform, layer chain): (reference, config)}``
    of the base's images on the platforms it shipped."""
    configs: dict[tuple[str, str], str] = {}
    chains: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}
    for _, rec in sorted(base.lock.services.items()):
        for platform, prec in sorted(rec.platforms.items()):
            if platform not in base.manifest.platforms:
                continue
            configs.setdefault((platform, prec.config), rec.reference)
            digests = tuple(l.digest for l in prec.layers)
            for i in range(1, len(digests) + 1):
                chains.setdefault((platform, digests[:i]), (rec.reference, prec.config))
    return configs, chains


def plan_delta(base: Base, plans: Iterable[PlannedImage]) -> DeltaPlan:
    """Which blobs of ``plans`` the base provides (see the module docstring). Pure."""
    configs, chains = _base_images(base)
    sizes: dict[str, int] = {}
    carried: set[str] = set()
    images: dict[tuple[str, str], ReliedImage] = {}

    def need(digest: str, size: int, relied: bool) -> None:
        sizes[digest] = size
        if not relied:
            carried.add(digest)

    for plan in plans:
        need(plan.record.digest, plan.record.size, plan.record.digest in base.blobs)
        for platform, prec in sorted(plan.platforms.items()):
            need(prec.manifest, prec.manifest_size, prec.manifest in base.blobs)
            digests = tuple(l.digest for l in prec.layers)
            whole = configs.get((platform, prec.config))
            if whole is not None:
                relied_layers, source = len(digests), (whole, prec.config)
            else:
                relied_layers = max((i for i in range(1, len(digests) + 1) if (platform, digests[:i]) in chains),
                                    default=0)
                source = chains.get((platform, digests[:relied_layers]))
            need(prec.config, prec.config_size, whole is not None)
            for i, layer in enumerate(prec.layers):
                need(layer.digest, layer.size, i < relied_layers)
            if source is not None:
                key = (platform, source[1])
                prior = images.get(key)
                images[key] = ReliedImage(
                    reference=source[0], platform=platform, config=source[1],
                    layers=max(relied_layers, prior.layers if prior else 0),
                    whole=whole is not None or bool(prior and prior.whole))
    return DeltaPlan(relied={d: s for d, s in sorted(sizes.items()) if d not in carried},
                     images=tuple(images[k] for k in sorted(images)))


def _digest_of(arcname: str) -> str | None:
    return "sha256:" + arcname[len(IMAGE_SHA256_BLOBS):] if arcname.startswith(IMAGE_SHA256_BLOBS) else None


def delta_members(files: Iterable[BundleFile], relied: dict[str, int],
                  base_blobs: frozenset[str]) -> tuple[list[BundleFile], dict[str, int]]:
    """Drop relied blobs from the ``images/`` members; trim the docker-load manifests to the
    images whose config is carried. Blobs ``plan_delta`` did not know (e.g. model blobs)
    are relied on when the base has them. Returns ``(members, every relied blob -> size)``."""
    relied = dict(relied)
    kept: list[BundleFile] = []
    for f in files:
        digest = _digest_of(f.arcname)
        if digest is not None and (digest in relied or digest in base_blobs):
            relied.setdefault(digest, f.size)
            continue
        kept.append(f)
    carried = {_digest_of(f.arcname) for f in kept} - {None}
    out = []
    for f in kept:
        if f.arcname.startswith(IMAGES_DIR + "/") and _is_docker_load(f):
            entries = [e for e in json.loads(f.data) if "sha256:" + e["Config"].rsplit("/", 1)[-1] in carried]
            f = replace(f, data=canonical_json(entries).encode())
        out.append(f)
    return out, dict(sorted(relied.items()))


def _is_docker_load(f: BundleFile) -> bool:
    return f.data is not None and (f.arcname == DOCKER_LOAD_DEFAULT
                                   or f.arcname.startswith(f"{IMAGES_DIR}/docker-load/"))


def delta_base(base: Base, plan: DeltaPlan, relied: dict[str, int]) -> DeltaBase:
    """The ``since`` field of the delta's manifest."""
    m = base.manifest
    return DeltaBase(lab=m.lab, profile=m.profile, version=m.version, manifest_sha256=base.manifest_sha256,
                     bundle=base.bundle, blobs=relied, images=plan.images)

