"""Release records on the build side: where they live (``lockfiles/releases/``), the lock that
serialises the releases of one version (``record_lock``), the record of a plan just written
(``make_record``), what makes a new plan differ from a record (``record_differences``;
empty: identical content) and whether the lab's sources are still those of a record but for
update-policy lines (``same_release_sources``). The record itself — the typed ``Record``, its
reader and writer — is format: ``builder.format.record``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from .. import __version__, names
from ..blueprint import without_update_policy
from ..errors import BundleError
from ..format.manifest import Manifest
from ..format.record import Record
from .pack import BundlePlan

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


def record_lock_path(rpath: Path) -> Path:
    """The lock file of release record ``rpath``: ``.<record name>.lock`` beside it."""
    return rpath.with_name(f".{rpath.stem}.lock")


@contextlib.contextmanager
def record_lock(rpath: Path) -> Iterator[None]:
    """Hold the exclusive lock of release record ``rpath`` for the block.

    Releases of one version (or one delta) run one at a time from the look for
    their record to its writing: the one that finds no record is the only one
    that writes a bundle and the record; another waits, then finds that record
    (identical: nothing to do; different: refused). The lock file is removed on
    the way out, so none is left among the records; a waiter that was granted
    the lock of a file removed meanwhile takes the lock of the new one instead.
    Records in a read-only directory are not locked when ``rpath`` exists: such a
    release can only compare itself with the record (and restore the archive).
    """
    path = record_lock_path(rpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS) and rpath.exists():
                fd = None       # read-only records: nobody writes this one, it can only be compared
                break
            raise BundleError(f"{path}: cannot open ({exc.strerror})",
                              hint="the records directory must be writable, and the lock a regular "
                                   "file (labbuild never follows a link there)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)     # while held: a waiter sees it gone and locks the next one
            os.close(fd)


def make_record(plan: BundlePlan, lab: str, profile: str, version: str, archive_sha: str, tar_sha: str,
                mtime: int, sources: dict[str, str], *, sbom: bool = False,
                git_commit: str | None = None) -> Record:
    """The record of a release just written (``git_commit``: the lab repository's HEAD, for the record only)."""
    return Record(lab=lab, profile=profile, version=version, bundle=plan.filename, sha256=archive_sha,
                  tar_sha256=tar_sha, manifest_sha256=plan.manifest_sha256, labbuild=__version__,
                  with_images=not plan.compressed, platforms=tuple(plan.platforms), mtime=mtime,
                  signed_by=plan.signed_by, lock=plan.lock.to_json(), manifest=plan.manifest.to_json(),
                  sources=sources, sbom=sbom, git_commit=git_commit)


def record_differences(record: Record, plan: BundlePlan) -> list[str]:
    """What makes ``plan`` differ from a recorded release (empty: identical content)."""
    out: list[str] = []
    if record.with_images != (not plan.compressed):
        out.append(f"with_images: recorded {record.with_images}, now {not plan.compressed}")
    if record.signed_by != plan.signed_by:
        out.append(f"signature: recorded {record.signed_by or 'unsigned'}, now {plan.signed_by or 'unsigned'}"
                   + (" (pass the same --sign KEY)" if record.signed_by else ""))
    old, new = Manifest.from_json(record.manifest, "release record: manifest"), plan.manifest
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


def same_release_sources(recorded: dict[str, str], current: dict[str, str]) -> bool:
    """Whether the lab's source files are a record's, but for ``[image]`` update-policy lines
    (``track``, ``group``): those say how pins move and no bundle file is made from them, yet
    the provenance names every source file by its sha256. Such a lab releases the recorded
    version again from the recorded sources, byte for byte."""
    return recorded.keys() == current.keys() and all(
        recorded[p] == current[p] or without_update_policy(recorded[p]) == without_update_policy(current[p])
        for p in recorded)
