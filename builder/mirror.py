"""``labbuild mirror BUNDLE --to REGISTRY[/PREFIX]``: an image bundle's images into a registry, by digest.

The bundle is verified first (``builder.bundle.verify``: every member against
SHA256SUMS and manifest.json, the signature with a key) — all but the image
blobs' bytes, which are read once, by range (``bundle.reader.BlobRanges``),
re-hashed as they stream to the registry (which checks the digest too); a
blob that does not match stops the mirror before any manifest or tag is
pushed. They go through ``builder.registry.RegistryClient``:

- every image of ``images/index.json`` goes to ``REGISTRY/PREFIX/<repository
  path>`` (the image name without its registry host: ``docker.io/library/postgres``
  -> ``REGISTRY/PREFIX/library/postgres``);
- blobs first (``HEAD`` each: present ones are skipped; one concurrent task per
  blob, which pushes it to the first repository needing it and mounts it into
  the others), then the platform manifests and the pinned manifest or index
  by digest — their exact bytes, so every digest stays what the lock says —
  then the tag of the lock (``PUT`` of the same bytes), skipped when the tag
  already points there. A second run only asks (``HEAD``); an interrupted run
  resumes where it stopped.
- A delta bundle's relied-on blobs and manifests must already be in the
  target (mirror its base first), else nothing is pushed.

Plain HTTP only for loopback registries and the insecure registries given
(as for ``lock``); credentials from the Docker config, as for ``lock``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import names
from .blueprint import load_lab
from .bundle.reader import BlobRanges
from .bundle.verify import read_verified
from .errors import BundleError, RegistryError
from .format.files import TRUST_FILES
from .format.manifest import Manifest
from .progress import progress_display
from .registry import INDEX_TYPES, RegistryClient, parse_image_name

INDEX_FILE = "images/index.json"
REF_NAME = "org.opencontainers.image.ref.name"
PUSH_WORKERS = int(os.environ.get("LABBUILD_PUSH_WORKERS", "0") or 0) or 4
_PATH_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class Target:
    registry: str
    prefix: str

    def repository(self, image_name: str) -> str:
        """``REGISTRY/PREFIX/<repository path>`` of a source image name."""
        path = parse_image_name(image_name).repository
        return "/".join(p for p in (self.registry, self.prefix, path) if p)


def parse_target(text: str) -> Target:
    """``REGISTRY[/PREFIX]``; BundleError naming what is wrong."""
    registry, _, prefix = text.strip().rstrip("/").partition("/")
    if why := names.registry_problem(registry):     # the grammar of registry hosts in image and model names
        raise BundleError(f"--to {text!r}: {why}",
                          hint="write REGISTRY[/PREFIX], e.g. registry.example.com:5000/mirror")
    if prefix and not _PATH_RE.match(prefix):
        raise BundleError(f"--to {text!r}: prefix {prefix!r} is not a repository path",
                          hint="lowercase letters, digits, '.', '_', '-' separated by '/'")
    return Target(registry, prefix)


@dataclass
class MirroredImage:
    source: str                 # name:tag in the lock
    target: str                 # mirrored repository
    digest: str
    tag: str
    manifests: list[tuple[str, str, bytes]] = field(default_factory=list, repr=False)  # (digest, media type, bytes), top last
    blobs: dict[str, int] = field(default_factory=dict, repr=False)       # digest -> size (in the bundle or relied on)


@dataclass
class MirrorResult:
    bundle: Path
    target: str
    images: list[MirroredImage]
    blobs_pushed: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_pushed: int = 0
    manifests_pushed: int = 0
    manifests_present: int = 0
    tags_pushed: int = 0

    @property
    def pushed_anything(self) -> bool:
        return bool(self.blobs_pushed or self.blobs_mounted or self.manifests_pushed or self.tags_pushed)

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "bundle": str(self.bundle), "to": self.target,
                "images": [{"source": i.source, "target": f"{i.target}@{i.digest}", "tag": f"{i.target}:{i.tag}"}
                           for i in self.images],
                "blobs": {"pushed": self.blobs_pushed, "mounted": self.blobs_mounted, "present": self.blobs_present,
                          "bytes_pushed": self.bytes_pushed},
                "manifests": {"pushed": self.manifests_pushed, "present": self.manifests_present},
                "tags_pushed": self.tags_pushed}

    def render(self) -> str:
        lines = [f"mirrored {len(self.images)} image(s) of {self.bundle.name} to {self.target}"]
        lines += [f"  {i.source} -> {i.target}@{i.digest[:19]}… (:{i.tag})" for i in self.images]
        lines.append(f"blobs: {self.blobs_pushed} pushed ({self.bytes_pushed / (1 << 20):.1f} MiB), "
                     f"{self.blobs_mounted} mounted, {self.blobs_present} already there; manifests: "
                     f"{self.manifests_pushed} pushed, {self.manifests_present} already there; "
                     f"tags: {self.tags_pushed} set")
        return "\n".join(lines)


def _load_json(data: bytes, where: str) -> dict:
    try:
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return value
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: malformed ({exc})", hint="the bundle is damaged") from None


def plan_mirror(manifest: Manifest, index: bytes, blobs: BlobRanges, target: Target) -> list[MirroredImage]:
    """What to push per image: its manifests (children before the top) and blobs. Reads only
    manifests from the bundle (checked by digest); a delta's relied-on ones are left to the target."""
    relied = manifest.since.blobs if manifest.since else {}
    images = []
    for desc in _load_json(index, INDEX_FILE).get("manifests", []):
        try:
            digest, media_type, ref = desc["digest"], desc["mediaType"], desc["annotations"][REF_NAME]
            name, tag = ref.rsplit(":", 1)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{INDEX_FILE}: a descriptor lacks digest, mediaType or ref name ({exc})") from None
        image = MirroredImage(source=ref, target=target.repository(name), digest=digest, tag=tag)
        top = [(digest, media_type)]
        if media_type in INDEX_TYPES and digest in blobs:
            children = _load_json(blobs.read(digest), f"index {digest}").get("manifests", [])
            top = [(c["digest"], c["mediaType"]) for c in children if c["digest"] in blobs or c["digest"] in relied] + top
        for d, mt in top:
            if d in blobs:
                data = blobs.read(d)
                image.manifests.append((d, mt, data))
                if mt not in INDEX_TYPES:
                    m = _load_json(data, f"manifest {d}")
                    for desc_ in [m.get("config", {}), *m.get("layers", [])]:
                        if "digest" in desc_:
                            image.blobs[desc_["digest"]] = int(desc_.get("size", 0))
            elif d in relied:
                image.manifests.append((d, mt, b""))       # the delta's base: must be in the target
            else:
                raise BundleError(f"{ref}: manifest {d} is not in the bundle",
                                  hint="the bundle is incomplete; rebuild it with --with-images")
        images.append(image)
    if not images:
        raise BundleError("the bundle holds no images", hint="mirror an image bundle (`labbuild release --with-images`)")
    return images


def lab_insecure_registries(root: Path) -> tuple[str, ...]:
    """lab.toml's ``insecure_registries`` when ``root`` holds a lab, else none."""
    if not (Path(root) / "blueprints" / "lab.toml").is_file():
        return ()
    return tuple(load_lab(root).insecure_registries)


def mirror_bundle(bundle: str | os.PathLike, to: str, *, insecure_registries: Iterable[str] = (),
                  key=None, workers: int = PUSH_WORKERS, progress: bool | None = None,
                  client: RegistryClient | None = None, say: Callable[[str], None] = lambda _: None) -> MirrorResult:
    """Verify ``bundle``, then push its images into ``to`` by digest (see the module docstring)."""
    bundle = Path(bundle)
    target = parse_target(to)
    blobs = BlobRanges(bundle)             # first: refuses a compressed bundle by name
    say(f"verifying {bundle.name} (its blobs as they are pushed)")
    verified = read_verified(bundle, key=key, keep=lambda rel: rel in TRUST_FILES or rel == INDEX_FILE,
                             blob_names=True)
    if not verified.ok:
        raise BundleError(f"{bundle} failed verification: nothing was pushed", problems=verified.errors,
                          hint="copy or rebuild the bundle")
    if INDEX_FILE not in verified.contents:
        raise BundleError(f"{bundle} holds no images", hint="mirror an image bundle (`labbuild release --with-images`)")
    images = plan_mirror(verified.manifest, verified.contents[INDEX_FILE], blobs, target)
    result = MirrorResult(bundle=bundle, target="/".join(p for p in (target.registry, target.prefix) if p),
                          images=images)
    own = client is None
    client = client or RegistryClient(insecure_registries=tuple(insecure_registries), timeout=30.0, deadline=120.0)
    try:
        _push_blobs(client, images, blobs, verified.manifest, result, workers, progress, say)
        _push_manifests(client, images, result, verified.manifest)
    finally:
        if own:
            client.close()
    return result


def _push_blobs(client: RegistryClient, images: list[MirroredImage], blobs: BlobRanges, manifest: Manifest,
                result: MirrorResult, workers: int, progress: bool | None, say) -> None:
    wanted: dict[tuple[str, str], int] = {(i.target, d): s for i in images for d, s in i.blobs.items()}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        present = dict(zip(wanted, pool.map(lambda k: client.has_blob(k[0], k[1]), wanted)))
    result.blobs_present = sum(present.values())
    missing: dict[str, list[str]] = {}
    for (repo, digest), here in sorted(present.items()):
        if not here:
            missing.setdefault(digest, []).append(repo)
    absent = sorted(d for d in missing if d not in blobs)
    if absent:
        base = manifest.since
        raise BundleError(f"{len(absent)} blob(s) this bundle does not carry are not in {result.target} "
                          f"(e.g. {absent[0]} for {missing[absent[0]][0]}): nothing was pushed",
                          hint=(f"it is a delta since {base.version}: mirror the base bundle {base.bundle} first"
                                if base else "the bundle is incomplete; rebuild it with --with-images"))
    if not missing:
        return
    total = sum(blobs.size(d) for d in missing)
    say(f"pushing {len(missing)} blob(s), {total / (1 << 20):.1f} MiB, to {result.target}")
    counted = threading.Lock()
    with progress_display(progress) as bars:
        task = bars.add_task(f"pushing to {result.target}", total=total)

        def push(digest: str) -> None:
            repos = missing[digest]
            size = blobs.size(digest)
            client.push_blob(repos[0], digest, size, lambda: blobs.chunks(digest, lambda n: bars.advance(task, n)))
            mounted = 0
            for repo in repos[1:]:
                how = client.push_blob(repo, digest, size, lambda: blobs.chunks(digest), mount_from=
                                       parse_image_name(repos[0]).repository)
                mounted += how == "mounted"
            with counted:
                result.blobs_pushed += 1 + (len(repos) - 1 - mounted)
                result.blobs_mounted += mounted
                result.bytes_pushed += size

        biggest_first = sorted(missing, key=lambda d: (-blobs.size(d), d))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for future in [pool.submit(push, d) for d in biggest_first]:
                future.result()


def _push_manifests(client: RegistryClient, images: list[MirroredImage], result: MirrorResult,
                    manifest: Manifest) -> None:
    for image in images:
        for digest, media_type, data in image.manifests:
            if client.manifest_digest(image.target, digest) == digest:
                result.manifests_present += 1
                continue
            if not data:
                raise BundleError(f"{image.source}: manifest {digest} (relied on from the base) is not in "
                                  f"{image.target}", hint=f"mirror the base bundle {manifest.since.bundle} first")
            try:
                client.push_manifest(image.target, digest, data, media_type)
            except RegistryError as exc:
                if media_type in INDEX_TYPES:
                    raise RegistryError(f"{exc.message}; the index of {image.source} lists platforms this "
                                        "bundle does not ship, and a registry may refuse an index whose "
                                        "manifests it lacks", hint="release the bundle with every platform of "
                                        "the image (--platform), or mirror from the source registry",
                                        registry=exc.registry, image=exc.image, digest=exc.digest,
                                        status=exc.status) from None
                raise
            result.manifests_pushed += 1
        top_digest, top_type, top = image.manifests[-1]
        if client.manifest_digest(image.target, image.tag) != image.digest:
            if not top:
                raise BundleError(f"{image.source}: cannot tag {image.target}:{image.tag}: its manifest is the base's",
                                  hint=f"mirror the base bundle {manifest.since.bundle} first")
            client.push_manifest(image.target, image.tag, top, top_type)
            result.tags_pushed += 1
