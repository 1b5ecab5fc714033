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
from .. import names
from ..errors import BundleError
from ..fsutil import atomic_write, canonical_json, read_capped
from ..limits import MAX_RECORD_BYTES
from .layout import Manifest, safe_relative
from .pack import BundlePlan

RECORD_FORMAT = 1
RECORDS_DIR = Path("lockfiles") / "releases"
DELTA_RECORDS_DIR = RECORDS_DIR / "delta"
REQUIRED = frozenset({"format", "profile", "version", "sha256", "tar_sha256", "lock", "manifest", "sources",
                      "mtime", "with_images", "platforms", "labbuild"})


def record_path(root: Path, profile: str, version: str) -> Path:
    """``ROOT/lockfiles/releases/<profile>-<version>.json``, for a valid profile and version only."""
    for kind, value in (("profile", profile), ("version", version)):
        if not names.is_valid(kind, value):
            raise BundleError(names.problem(kind, value))
    return names.inside(Path(root) / RECORDS_DIR, f"{profile}-{version}.json")


def split_spec(spec: str) -> tuple[str, str]:
    """``<profile>-<version>`` -> ``(profile, version)``; BundleError when it is not one."""
    for i, ch in enumerate(spec):
        if ch == "-" and names.is_valid("profile", spec[:i]) and names.is_valid("version", spec[i + 1:]):
            return spec[:i], spec[i + 1:]
    raise BundleError(f"{spec!r} is not PROFILE-VERSION", hint="e.g. --rebuild phase1-0.1.0")


def delta_record_path(root: Path, profile: str, version: str, base_version: str) -> Path:
    """A delta's record: in its own directory, so it never collides with the full release of
    the same version (nor with a prerelease version such as ``1.1.0-since-1.0.0``)."""
    record_path(root, profile, version)      # the same grammar checks
    if not names.is_valid("version", base_version):
        raise BundleError(names.problem("version", base_version))
    return names.inside(Path(root) / DELTA_RECORDS_DIR, f"{profile}-{version}-since-{base_version}.json")


def spec_record_path(root: Path, spec: str) -> tuple[Path, str, str]:
    """``(record path, profile, version)`` of ``<profile>-<version>``, or of the delta
    ``delta/<profile>-<version>-since-<base>``."""
    if spec.startswith("delta/"):
        head, sep, base = spec[len("delta/"):].rpartition("-since-")
        if not sep:
            raise BundleError(f"{spec!r} is not delta/PROFILE-VERSION-since-BASE",
                              hint="e.g. --rebuild delta/phase1-1.1.0-since-1.0.0")
        profile, version = split_spec(head)
        return delta_record_path(root, profile, version, base), profile, version
    profile, version = split_spec(spec)
    return record_path(root, profile, version), profile, version


def make_record(plan: BundlePlan, lab: str, profile: str, version: str, archive_sha: str, tar_sha: str,
                mtime: int, sources: dict[str, str], *, sbom: bool = False,
                git_commit: str | None = None) -> dict[str, Any]:
    """The record of a release just written (``git_commit``: the lab repository's HEAD, for the record only)."""
    extra: dict[str, Any] = {}
    if sbom:
        extra["sbom"] = True
    if git_commit:
        extra["git_commit"] = git_commit
    return {**extra,
        "format": RECORD_FORMAT, "lab": lab, "profile": profile, "version": version,
        "bundle": plan.filename, "sha256": archive_sha, "tar_sha256": tar_sha,
        "manifest_sha256": plan.manifest_sha256, "labbuild": __version__,
        "with_images": not plan.compressed, "platforms": list(plan.platforms), "mtime": mtime,
        "signed_by": plan.signed_by, "lock": plan.lock.to_json(), "manifest": plan.manifest.to_json(),
        "sources": sources,
    }


def read_record(path: Path) -> dict[str, Any]:
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
    return data


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
                    ("lock", isinstance(data["lock"], dict)), ("manifest", isinstance(data["manifest"], dict))):
        if not ok:
            yield key, "missing or of the wrong type"
    if isinstance(data["sources"], dict):
        for rel in data["sources"]:
            if not (isinstance(rel, str) and safe_relative(rel) and rel.startswith("blueprints/")
                    and rel.endswith(".toml")):
                yield f"sources.{rel}", "not a blueprints/*.toml path"


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


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
