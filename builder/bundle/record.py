"""Release records: ``lockfiles/releases/<profile>-<version>.json``, one per released bundle.

A record makes a release immutable and reproducible: it holds the version,
profile, the frozen (closure) lock, the archive sha256, the uncompressed
tar sha256, the labbuild version, with_images, platforms, the archive mtime,
the signer's fingerprint, the manifest, and the text of every blueprint (so
``release --rebuild`` needs nothing else). ``record_differences`` says what
makes a new plan differ from a record (empty: identical content).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BundleError
from ..fsutil import atomic_write, canonical_json
from .layout import Manifest
from .pack import BundlePlan

RECORD_FORMAT = 1
RECORDS_DIR = Path("lockfiles") / "releases"
REQUIRED = frozenset({"format", "profile", "version", "sha256", "tar_sha256", "lock", "manifest", "sources",
                      "mtime", "with_images", "platforms", "labbuild"})


def record_path(root: Path, profile: str, version: str) -> Path:
    return Path(root) / RECORDS_DIR / f"{profile}-{version}.json"


def make_record(plan: BundlePlan, lab: str, profile: str, version: str, archive_sha: str, tar_sha: str,
                mtime: int, sources: dict[str, str]) -> dict[str, Any]:
    """The record of a release just written."""
    return {
        "format": RECORD_FORMAT, "lab": lab, "profile": profile, "version": version,
        "bundle": plan.filename, "sha256": archive_sha, "tar_sha256": tar_sha,
        "manifest_sha256": plan.manifest_sha256, "labbuild": __version__,
        "with_images": not plan.compressed, "platforms": list(plan.platforms), "mtime": mtime,
        "signed_by": plan.signed_by, "lock": plan.lock.to_json(), "manifest": plan.manifest.to_json(),
        "sources": sources,
    }


def read_record(path: Path) -> dict[str, Any]:
    """A release record; BundleError when it is unreadable or not format 1."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no such release record",
                          hint="records live in lockfiles/releases/<profile>-<version>.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})", hint="restore it from version control") from None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or not REQUIRED <= set(data):
        raise BundleError(f"{path}: not a format-{RECORD_FORMAT} release record",
                          hint="restore it from version control")
    return data


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write(path, canonical_json(record))


def record_differences(record: dict, plan: BundlePlan) -> list[str]:
    """What makes ``plan`` differ from a recorded release (empty: identical content)."""
    out: list[str] = []
    if record.get("with_images") != (not plan.compressed):
        out.append(f"with_images: recorded {record.get('with_images')}, now {not plan.compressed}")
    if record.get("signed_by") != plan.signed_by:
        out.append(f"signature: recorded {record.get('signed_by') or 'unsigned'}, now {plan.signed_by or 'unsigned'}"
                   + (" (pass the same --sign KEY)" if record.get("signed_by") else ""))
    old, new = Manifest.from_json(record.get("manifest"), "release record: manifest"), plan.manifest
    for key in ("labbuild", "inputs", "platforms"):
        if getattr(old, key) != getattr(new, key):
            out.append(f"{key}: {getattr(old, key)} -> {getattr(new, key)}")
    for name in sorted(set(old.services) - set(new.services)):
        out.append(f"service removed: {name}")
    for name in sorted(set(new.services) - set(old.services)):
        out.append(f"service added: {name}")
    for name in sorted(set(old.services) & set(new.services)):
        a, b = old.services[name], new.services[name]
        if (a.image, a.digest) != (b.image, b.digest):
            out.append(f"{name} image: {a.image}@{a.digest[:19]} -> {b.image}@{b.digest[:19]}")
    for name in sorted(set(old.files) | set(new.files)):
        if name not in new.files:
            out.append(f"file removed: {name}")
        elif name not in old.files:
            out.append(f"file added: {name}")
        elif old.files[name] != new.files[name]:
            out.append(f"file changed: {name}")
    if not out and old.dumps() != plan.manifest_bytes:
        out.append("manifest.json changed")
    return out
