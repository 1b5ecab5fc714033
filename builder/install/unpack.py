"""Verify a bundle and load its images in ONE streaming pass; stage its other files.

Built on ``builder.bundle.verify.unpack``: every member is hashed and checked
against manifest.json, SHA256SUMS and the signature. Image blobs for the
host platform are fed to ``docker load`` while they are hashed; the load is
completed only when the whole bundle verified, else aborted so the engine
keeps nothing. The small files are held in memory (``builder.limits`` caps
each and all of them together, SBOMs apart: ``reader.SizeBudget``) and the
caller stages them into the install dir only after its own checks; blobs are
not kept on disk (the engine holds them). Of a base bundle only the files
that verify it are kept.

A delta bundle (``release --since``) carries only what its base lacks: before
anything is loaded the engine must hold every base image it relies on (by
image ID), or ``--base BASE_BUNDLE`` supplies them (``_ImageLoader``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import verify
from ..bundle.reader import ScannedBundle, peek_files
from ..errors import BundleError, InstallError
from ..format.delta import delta_summary
from ..format.files import (
    DOCKER_LOAD_DEFAULT,
    IMAGES_DIR,
    MANIFEST,
    TRUST_FILES,
    docker_load_manifest,
)
from ..format.manifest import Manifest
from ..format.tar import USTAR, padded, padding, tar_header
from ..fsutil import canonical_json, sha256_bytes
from ..host.engine import StreamingLoad, has_image, tag_image
from ..host.labdir import Say
from ..limits import MAX_SMALL_FILE_BYTES
from ..platforms import expected_image_id, match_platform
from ..progress import progress_display


def load_header(name: str, size: int) -> bytes:
    """A member header of the docker load stream: USTAR, what ``docker load`` reads everywhere."""
    return tar_header(name, size, dialect=USTAR)


@dataclass
class Unpacked:
    """What one pass over a bundle produced: its verified small files (in memory), its manifest,
    the images it loaded. Nothing is written to the install dir until ``stage`` is called."""

    contents: dict[str, bytes]
    modes: dict[str, int]
    manifest: Manifest
    loaded: list[str]
    retagged: list[str] = field(default_factory=list)   # a delta's unchanged images, tagged in the engine


class _LoadStream:
    """One blob's bytes into the ``docker load`` tar stream (header already sent)."""

    def __init__(self, load: StreamingLoad, size: int) -> None:
        self._load, self._size = load, size

    def write(self, block: bytes) -> None:
        self._load.put(block)

    def close(self) -> None:
        if self._size % 512:
            self._load.put(padding(self._size))


class _ImageLoader:
    """Decides, at the first blob, which blobs the host platform needs, and streams them to the engine.

    A delta bundle (``manifest.since``) is checked first: every base image it
    relies on for this platform must be in the engine by its image ID (the
    locked config digest), else the install is refused naming the base
    release and the image — unless ``base`` (the base bundle file) supplies
    them: its docker-load entries for the missing images join the load and
    their blobs stream from a verified pass over the base bundle.
    """

    def __init__(self, client, platform: str, bundle_name: str, say: Say, base: Path | None = None) -> None:
        self.client, self.platform, self.bundle_name, self.say = client, platform, bundle_name, say
        self.base = base
        self.plan: set[str] | None = None
        self.load: StreamingLoad | None = None
        self.tags: list[str] = []
        self.sent: set[str] = set()
        self.from_base: set[str] = set()        # blobs (images/-relative) the base bundle must supply
        self.base_sizes: dict[str, int] = {}    # their sizes, from the base's manifest.json
        self.retag: dict[str, str] = {}         # reference -> image ID of the unchanged images of a delta
        self.manifest: Manifest | None = None

    def _docker_load_manifest(self, kept: dict[str, bytes], bundle_name: str | None = None) -> bytes:
        wanted = docker_load_manifest(self.platform)
        raw = kept.get(wanted) or next(
            (kept[n] for n in sorted(kept) if n.startswith(wanted[:-len(".json")] + "_")), None) \
            or kept.get(DOCKER_LOAD_DEFAULT)
        if raw is None:
            raise InstallError(f"{bundle_name or self.bundle_name} holds no images for {self.platform}",
                               hint=f"build it with --with-images --platform {self.platform}")
        return raw

    def _entries(self, raw: bytes, bundle_name: str) -> list[dict]:
        try:
            entries = json.loads(raw)
            for e in entries:
                if not (isinstance(e["Config"], str) and all(isinstance(x, str) for x in e["Layers"] + e["RepoTags"])):
                    raise TypeError("Config, Layers and RepoTags must be strings")
            return entries
        except (ValueError, KeyError, TypeError) as exc:
            raise InstallError(f"{bundle_name}: images/ has a malformed docker-load manifest ({exc})") from None

    def _start(self, kept: dict[str, bytes]) -> set[str]:
        entries = self._entries(self._docker_load_manifest(kept), self.bundle_name)
        try:
            self.manifest = Manifest.loads(kept[MANIFEST])
        except (KeyError, BundleError):
            self.manifest = None            # verification reports it; nothing is loaded then
        if self.manifest is not None and self.manifest.since is not None:
            entries = self._delta_entries(self.manifest, entries) + entries
        elif self.base is not None:
            raise InstallError(f"--base: {self.bundle_name} is not a delta bundle",
                               hint="--base BASE_BUNDLE is for bundles made with `labbuild release --since`")
        self.tags = sorted(t for e in entries for t in e["RepoTags"])
        plan = {e["Config"] for e in entries} | {layer for e in entries for layer in e["Layers"]}
        if entries:
            raw = canonical_json(entries).encode()
            head = load_header("manifest.json", len(raw)) + raw + padding(len(raw))
            blobs = self._stream_bytes(plan)
            self.load = StreamingLoad(self.client, None if blobs is None else len(head) + blobs
                                      + len(StreamingLoad.TRAILER))
            self.load.put(head)
            self.say(f"loading the images for {self.platform} into the engine while verifying")
        return plan

    def _stream_bytes(self, plan: set[str]) -> int | None:
        """The tar bytes the planned blobs will take in the load stream (those the bundle carries
        or the base bundle supplies; a delta's relied-on layers are in the engine already), from
        the sizes manifest.json lists; None when it is not known yet (an old bundle, metadata last)."""
        if self.manifest is None:
            return None
        total = 0
        for blob in plan:
            entry = self.manifest.files.get(f"{IMAGES_DIR}/{blob}")
            size = entry.size if entry is not None else self.base_sizes.get(blob)
            if size is not None:     # what stream() sends for it: header, data, padding
                total += len(load_header(blob, size)) + padded(size)
        return total

    def _delta_entries(self, manifest: Manifest, entries: list[dict]) -> list[dict]:
        """Check the engine for the base images a delta relies on; the base bundle's load
        entries for the missing ones (when ``--base`` is given)."""
        since = manifest.since
        say_delta(self.say, manifest)
        relied = [i for i in since.images if match_platform(self.platform, [i.platform]) is not None]
        missing = [i for i in relied if not has_image(self.client, i.config)]
        loaded = {e["Config"].rsplit("/", 1)[-1] for e in entries}
        for svc, entry in sorted(manifest.services.items()):
            want = expected_image_id(entry.config_digests, self.platform)
            if want is not None and want.split(":", 1)[1] not in loaded:
                self.retag[entry.image] = want
        if not missing:
            self.say(f"the engine holds the {len(relied)} base image(s) of {since.version} this delta relies on")
            return []
        names = ", ".join(f"{i.reference} (image {i.config[:19]}…)" for i in missing)
        if self.base is None:
            raise InstallError(
                f"{self.bundle_name} is a delta since {since.lab} {since.profile} {since.version}, but the engine "
                f"lacks base image(s) it relies on: {names}; nothing was changed",
                hint=f"install the base release first ({since.bundle}), or pass --base {since.bundle} "
                     "to take the missing blobs from the base bundle")
        return self._base_entries(since, missing)

    def _base_entries(self, since, missing) -> list[dict]:
        """Verify the base bundle (its identity is the delta's ``since.manifest_sha256``) and
        return its docker-load entries of the ``missing`` images."""
        self.say(f"verifying the base bundle {self.base.name} for {len(missing)} missing base image(s)")
        result = verify.read_verified(self.base, keep=lambda rel: rel in TRUST_FILES or rel.startswith(
            IMAGES_DIR + "/docker-load/") or rel == DOCKER_LOAD_DEFAULT)
        if not result.ok:
            raise InstallError(f"--base {self.base} failed verification ({len(result.errors)} problem(s))",
                               problems=result.errors, hint="copy the base bundle again")
        if sha256_bytes(result.contents[MANIFEST]) != since.manifest_sha256:
            raise InstallError(f"--base {self.base} is not the base of {self.bundle_name}",
                               hint=f"pass {since.bundle} ({since.lab} {since.profile} {since.version})")
        configs = {i.config.split(":", 1)[1] for i in missing}
        raw = self._docker_load_manifest(result.contents, self.base.name)
        chosen = [e for e in self._entries(raw, self.base.name) if e["Config"].rsplit("/", 1)[-1] in configs]
        self.from_base = {e["Config"] for e in chosen} | {l for e in chosen for l in e["Layers"]}
        base_files = result.manifest.files
        self.base_sizes = {blob: base_files[f"{IMAGES_DIR}/{blob}"].size for blob in self.from_base
                           if f"{IMAGES_DIR}/{blob}" in base_files}
        return chosen

    def prepare(self, kept: dict[str, bytes]) -> None:
        """Decide the load (and check a delta's base) once the small files are read."""
        if self.plan is None:
            self.plan = self._start(kept)

    def stream(self, rel: str, size: int, scan: ScannedBundle) -> _LoadStream | None:
        self.prepare(scan.kept)
        inner = rel[len(IMAGES_DIR) + 1:]
        if inner not in self.plan or inner in self.sent or self.load is None:
            return None
        self.sent.add(inner)
        self.load.put(load_header(inner, size))
        return _LoadStream(self.load, size)

    def fill_from_base(self, on_bytes) -> None:
        """Stream the blobs the base bundle supplies (those the delta did not carry) into the load."""
        if self.plan is None or not (self.from_base - self.sent):
            return
        need = len(self.from_base - self.sent)
        self.say(f"loading {need} blob(s) of the base bundle {self.base.name} while verifying it")
        verify.unpack(self.base, keep=TRUST_FILES.__contains__, stream=self.stream_base, on_bytes=on_bytes)
        if self.from_base - self.sent:
            raise InstallError(f"--base {self.base.name} lacks " + ", ".join(sorted(self.from_base - self.sent)),
                               hint="pass the full base bundle, not a delta")

    def stream_base(self, rel: str, size: int, scan: ScannedBundle) -> _LoadStream | None:
        inner = rel[len(IMAGES_DIR) + 1:]
        if inner not in self.from_base or inner in self.sent:
            return None
        self.sent.add(inner)
        self.load.put(load_header(inner, size))
        return _LoadStream(self.load, size)

    def abort(self, exc: BaseException) -> None:
        if self.load is not None:
            self.load.abort(exc if isinstance(exc, Exception) else InstallError("interrupted"))

    def finish(self) -> None:
        if self.load is not None:
            self.load.finish()
        for reference, image_id in sorted(self.retag.items()):
            tag_image(self.client, image_id, reference)


def say_delta(say: Say, manifest: Manifest) -> None:
    """Carried vs relied-on blobs of a delta bundle."""
    say(delta_summary(manifest).render())


def _plans_load(rel: str) -> bool:
    """The small files that decide a load: manifest.json and the docker-load manifests."""
    return rel == MANIFEST or (rel.startswith(IMAGES_DIR + "/") and rel.endswith(".json")
                               and not rel.startswith(IMAGES_DIR + "/blobs/"))


def unpack_bundle(bundle: Path, key, client, platform: str, say: Say, base: Path | None = None) -> Unpacked:
    """Verify ``bundle`` while loading its images; keep its small files (see the module docstring).

    ``base``: for a delta bundle, the base bundle file that supplies the base
    images the engine lacks (verified like any bundle, and it must be the
    delta's base by its manifest's sha256)."""
    loader = _ImageLoader(client, platform, bundle.name, say, base)
    say(f"verifying {bundle.name}" + (" and its signature" if key else ""))
    # blobs lead an image bundle: what to load is decided from its small files, read first by seeking
    plan_files = peek_files(bundle, _plans_load, MAX_SMALL_FILE_BYTES)
    try:
        if any(rel.startswith(IMAGES_DIR + "/") for rel in plan_files):
            loader.prepare(plan_files)
        with progress_display(None) as bars:
            task = bars.add_task(f"verifying {bundle.name}", total=bundle.stat().st_size)
            result = verify.unpack(bundle, key=key, stream=loader.stream,
                                   on_bytes=lambda n: bars.advance(task, n))
            changed = sorted(rel for rel, data in plan_files.items() if result.contents.get(rel) != data)
            if changed:
                raise InstallError(f"{bundle.name}: {changed[0]} changed while the bundle was read",
                                   hint="the bundle file is being written or replaced: copy it again")
            if any(rel.startswith(IMAGES_DIR + "/") for rel in result.contents):
                loader.prepare(result.contents)     # a delta carrying no blob still checks its base
            if base is not None and loader.from_base:
                task = bars.add_task(f"verifying {base.name}", total=base.stat().st_size)
                loader.fill_from_base(lambda n: bars.advance(task, n))
    except BaseException as exc:
        loader.abort(exc)
        raise
    loader.finish()
    return Unpacked(result.contents, result.modes, result.manifest, loader.tags, sorted(loader.retag))
