"""Verify a bundle and load its images in ONE streaming pass; stage its other files.

Built on ``builder.bundle.verify.unpack``: every member is hashed and checked
against manifest.json, SHA256SUMS and the signature. Image blobs for the
host platform are fed to ``docker load`` while they are hashed; the load is
completed only when the whole bundle verified, else aborted so the engine
keeps nothing. The small files are held in memory (``builder.limits`` caps
them) and the caller stages them into the install dir only after its own
checks; blobs are not kept on disk (the engine holds them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..bundle import verify
from ..bundle.layout import DOCKER_LOAD_DEFAULT, IMAGES_DIR, Manifest, docker_load_manifest
from ..bundle.reader import ScannedBundle
from ..errors import InstallError
from ..progress import progress_display
from .engine import StreamingLoad, tar_header
from .state import Say


@dataclass
class Unpacked:
    """What one pass over a bundle produced: its verified small files (in memory), its manifest,
    the images it loaded. Nothing is written to the install dir until ``stage`` is called."""

    contents: dict[str, bytes]
    modes: dict[str, int]
    manifest: Manifest
    loaded: list[str]


class _LoadStream:
    """One blob's bytes into the ``docker load`` tar stream (header already sent)."""

    def __init__(self, load: StreamingLoad, size: int) -> None:
        self._load, self._size = load, size

    def write(self, block: bytes) -> None:
        self._load.put(block)

    def close(self) -> None:
        if self._size % 512:
            self._load.put(b"\0" * (512 - self._size % 512))


class _ImageLoader:
    """Decides, at the first blob, which blobs the host platform needs, and streams them to the engine."""

    def __init__(self, client, platform: str, bundle_name: str, say: Say) -> None:
        self.client, self.platform, self.bundle_name, self.say = client, platform, bundle_name, say
        self.plan: set[str] | None = None
        self.load: StreamingLoad | None = None
        self.tags: list[str] = []

    def _docker_load_manifest(self, scan: ScannedBundle) -> bytes:
        wanted = docker_load_manifest(self.platform)
        raw = scan.kept.get(wanted) or next(
            (scan.kept[n] for n in sorted(scan.kept) if n.startswith(wanted[:-len(".json")] + "_")), None) \
            or scan.kept.get(DOCKER_LOAD_DEFAULT)
        if raw is None:
            raise InstallError(f"{self.bundle_name} holds no images for {self.platform}",
                               hint=f"build it with --with-images --platform {self.platform}")
        return raw

    def _start(self, scan: ScannedBundle) -> set[str]:
        raw = self._docker_load_manifest(scan)
        try:
            entries = json.loads(raw)
            self.tags = sorted(t for e in entries for t in e["RepoTags"])
            plan = {e["Config"] for e in entries} | {layer for e in entries for layer in e["Layers"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise InstallError(f"{self.bundle_name}: images/ has a malformed docker-load manifest ({exc})") from None
        self.load = StreamingLoad(self.client)
        self.load.put(tar_header("manifest.json", len(raw)) + raw + b"\0" * (-len(raw) % 512))
        self.say(f"loading the images for {self.platform} into the engine while verifying")
        return plan

    def stream(self, rel: str, size: int, scan: ScannedBundle) -> _LoadStream | None:
        if self.plan is None:
            self.plan = self._start(scan)
        inner = rel[len(IMAGES_DIR) + 1:]
        if inner not in self.plan:
            return None
        self.load.put(tar_header(inner, size))
        return _LoadStream(self.load, size)

    def abort(self, exc: BaseException) -> None:
        if self.load is not None:
            self.load.abort(exc if isinstance(exc, Exception) else InstallError("interrupted"))

    def finish(self) -> None:
        if self.load is not None:
            self.load.finish()


def unpack_bundle(bundle: Path, key, client, platform: str, say: Say) -> Unpacked:
    """Verify ``bundle`` while loading its images; keep its small files (see the module docstring)."""
    loader = _ImageLoader(client, platform, bundle.name, say)
    say(f"verifying {bundle.name}" + (" and its signature" if key else ""))
    try:
        with progress_display(None) as bars:
            task = bars.add_task(f"verifying {bundle.name}", total=bundle.stat().st_size)
            result = verify.unpack(bundle, key=key, stream=loader.stream,
                                   on_bytes=lambda n: bars.advance(task, n))
    except BaseException as exc:
        loader.abort(exc)
        raise
    loader.finish()
    return Unpacked(result.contents, result.modes, result.manifest, loader.tags)
