"""Release records (``lockfiles/releases/<profile>-<version>.json``): the typed ``Record``,
its one reader (``Record.read``: bounded, format 1, every field that later reaches a path,
a file or a check verified) and its one writer (``Record.write``: canonical JSON, atomic).

A record makes a release immutable and reproducible: it holds the version, profile, the
frozen (closure) lock, the archive sha256, the uncompressed tar sha256, the labbuild
version, with_images, platforms, the archive mtime, the signer's fingerprint, the
manifest, and the text of every blueprint (so ``release --rebuild`` needs nothing else).
``lock`` and ``manifest`` stay parsed JSON here: the lock's reader is build-side
(``builder.lockfile``), the manifest's is ``Manifest.from_json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import names
from ..errors import BundleError
from ..fsutil import atomic_write, canonical_json, read_capped
from ..limits import MAX_RECORD_BYTES
from .files import safe_relative

RECORD_FORMAT = 1
REQUIRED = frozenset({"format", "profile", "version", "sha256", "tar_sha256", "lock", "manifest", "sources",
                      "mtime", "with_images", "platforms", "labbuild"})


@dataclass(frozen=True)
class Record:
    """One release record. ``lab``, ``bundle`` and ``manifest_sha256`` are absent (None) only in
    records older than labbuild 0.2; ``sbom`` and ``git_commit`` are written only when set."""

    profile: str
    version: str
    sha256: str                     # of the archive
    tar_sha256: str                 # of the uncompressed tar stream
    labbuild: str                   # the labbuild version that made it (``--rebuild`` needs the same)
    with_images: bool
    platforms: tuple[str, ...]
    mtime: int                      # every member's mtime (SOURCE_DATE_EPOCH)
    lock: dict[str, Any]            # the frozen closure lock (``lockfile.lock_from_json`` reads it)
    manifest: dict[str, Any]        # manifest.json as parsed JSON (``Manifest.from_json`` reads it)
    sources: dict[str, str]         # blueprints/*.toml path -> text
    lab: str | None = None
    bundle: str | None = None       # the archive's file name
    manifest_sha256: str | None = None
    signed_by: str | None = None    # the signing key's fingerprint
    sbom: bool = False
    git_commit: str | None = None   # the lab repository's HEAD, for the record only

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.sbom:
            extra["sbom"] = True
        if self.git_commit:
            extra["git_commit"] = self.git_commit
        return {**extra,
                "format": RECORD_FORMAT, "lab": self.lab, "profile": self.profile, "version": self.version,
                "bundle": self.bundle, "sha256": self.sha256, "tar_sha256": self.tar_sha256,
                "manifest_sha256": self.manifest_sha256, "labbuild": self.labbuild,
                "with_images": self.with_images, "platforms": list(self.platforms), "mtime": self.mtime,
                "signed_by": self.signed_by, "lock": self.lock, "manifest": self.manifest, "sources": self.sources}

    def write(self, path: Path) -> None:
        atomic_write(path, canonical_json(self.to_json()))

    @classmethod
    def read(cls, path: Path) -> "Record":
        """A release record; BundleError naming the key when it is unreadable, not format 1,
        or holds a field of the wrong type or grammar (records are trusted by ``--rebuild``)."""
        try:
            data = json.loads(read_capped(path, MAX_RECORD_BYTES))
        except FileNotFoundError:
            raise BundleError(f"{path}: no such release record",
                              hint="records live in lockfiles/releases/<profile>-<version>.json") from None
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BundleError(f"{path}: not a readable release record ({type(exc).__name__}: {str(exc)[:200]})",
                              hint="restore it from version control") from None
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or not REQUIRED <= set(data):
            raise BundleError(f"{path}: not a format-{RECORD_FORMAT} release record",
                              hint="restore it from version control")
        for key, problem in _field_problems(data):
            raise BundleError(f"{path}: {key}: {problem}", hint="restore it from version control")
        return cls(profile=data["profile"], version=data["version"], sha256=data["sha256"],
                   tar_sha256=data["tar_sha256"], labbuild=data["labbuild"], with_images=data["with_images"],
                   platforms=tuple(data["platforms"]), mtime=data["mtime"], lock=data["lock"],
                   manifest=data["manifest"], sources=data["sources"], lab=data.get("lab"),
                   bundle=data.get("bundle"), manifest_sha256=data.get("manifest_sha256"),
                   signed_by=data.get("signed_by"), sbom=bool(data.get("sbom")), git_commit=data.get("git_commit"))


def _field_problems(data: dict[str, Any]):
    """``(key, problem)`` for every record field that later reaches a path, a file or a check."""
    for kind, key in (("profile", "profile"), ("version", "version")):
        if not names.is_valid(kind, data[key]):
            yield key, names.problem(kind, data[key])
    for key, ok in (("sha256", _is_hex(data["sha256"])), ("tar_sha256", _is_hex(data["tar_sha256"])),
                    ("mtime", isinstance(data["mtime"], int) and not isinstance(data["mtime"], bool)
                     and 0 <= data["mtime"] < 1 << 33),
                    ("with_images", isinstance(data["with_images"], bool)),
                    ("labbuild", isinstance(data["labbuild"], str)),
                    ("signed_by", data.get("signed_by") is None or isinstance(data["signed_by"], str)),
                    ("platforms", isinstance(data["platforms"], list)
                     and all(names.is_valid("platform", p) for p in data["platforms"])),
                    ("sources", isinstance(data["sources"], dict)
                     and all(isinstance(k, str) and isinstance(v, str) for k, v in data["sources"].items())),
                    ("lock", isinstance(data["lock"], dict)), ("manifest", isinstance(data["manifest"], dict)),
                    ("lab", data.get("lab") is None or isinstance(data["lab"], str)),
                    ("bundle", data.get("bundle") is None or isinstance(data["bundle"], str)),
                    ("manifest_sha256", data.get("manifest_sha256") is None or _is_hex(data["manifest_sha256"])),
                    ("git_commit", data.get("git_commit") is None or isinstance(data["git_commit"], str))):
        if not ok:
            yield key, "missing or of the wrong type"
    if isinstance(data["sources"], dict):
        for rel in data["sources"]:
            if not (isinstance(rel, str) and safe_relative(rel) and rel.startswith("blueprints/")
                    and rel.endswith(".toml")):
                yield f"sources.{rel}", "not a blueprints/*.toml path"


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
