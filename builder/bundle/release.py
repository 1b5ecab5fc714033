"""Releases: build, record and rebuild the immutable bundle of a profile.

- ``build_release(root, version, *, profile=None, out_dir=None, with_images=False,
  platforms=None, sign_key=None, progress=None) -> ReleaseResult`` — renders the
  profile's closure, writes the archive into a temp file beside the output
  (fsync, rename: an interrupted release leaves nothing at the final path) and
  records it in ``lockfiles/releases/<profile>-<version>.json``, all under the record's
  lock (``record.record_lock``: one release of a version at a time). With images it
  calls ``builder.bundle.fetch.image_files`` and ``builder.bundle.models.add_model_files``. The lock must be fresh
  (``stale_services``) and the version SemVer 2.0. When the record exists:
  identical content is a no-op (``noop=True``; the archive is rewritten only
  when missing at the output path), different content is a BundleError naming
  each difference and the next free version.
- ``build_release(..., since=BASE)`` builds a delta bundle (``builder.bundle.delta``).
- ``rebuild_release(root, "<profile>-<version>", ...)`` (``"delta/<profile>-<version>-since-<base>"``
  for a delta) rebuilds a past release
  from its record alone and refuses unless the sha256 is reproduced.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable


from .. import __version__, names
from ..blueprint import Lab, lab_paths, load_lab
from ..errors import BundleError, LockError, Problem
from ..format.delta import DeltaSummary, delta_summary
from ..format.files import is_version, version_key, version_match
from ..format.manifest import DeltaBase, Manifest
from ..format.record import Record
from ..fsutil import sha256_file
from ..lockfile import LOCK_PATH, Lock, lock_from_json, read_lock, stale_services
from ..render import ReleaseInput
from ..signing import load_private_key
from .archive import BundleFile, source_date_epoch
from .delta import Base, delta_base, delta_members, plan_delta, read_base
from .fetch import (
    BLOB_ORDER,
    fetch_to_cache,
    image_files,
    plan_images,
    wait_for_downloads,
)
from .models import add_model_files
from .direct import DirectArchive
from .reuse import index_directories
from .pack import BundlePlan, bundle_names, plan_bundle, write_archive
from .record import (
    RECORDS_DIR,
    delta_record_path,
    make_record,
    record_differences,
    record_lock,
    same_release_sources,
    record_path,
    spec_record_path,
)
from .sboms import sbom_members, sbom_warnings


def check_version(version: str) -> str:
    """``version`` when it is SemVer 2.0, else a BundleError saying what a version looks like."""
    if not is_version(version):
        raise BundleError(f"{version!r} is not a SemVer 2.0 version",
                          hint="use MAJOR.MINOR.PATCH, e.g. 0.1.0 or 1.2.0-rc.1")
    return version


def next_version(version: str, taken: Iterable[str] = ()) -> str:
    """The next free patch version after ``version`` and every taken one (prereleases count up)."""
    versions = [v for v in {version, *taken} if is_version(v)]
    top = max(versions, key=version_key)
    m = version_match(top)
    pre = m[5]
    if pre and (num := re.search(r"(\d+)$", pre)):
        return f"{m[1]}.{m[2]}.{m[3]}-{pre[:num.start()]}{int(num[1]) + 1}"
    if pre:
        return f"{m[1]}.{m[2]}.{m[3]}"
    return f"{m[1]}.{m[2]}.{int(m[3]) + 1}"


@dataclass(frozen=True)
class ReleaseResult:
    bundle: Path
    sha256: str
    tar_sha256: str
    version: str
    profile: str
    noop: bool
    record: Path | None = None
    restored: bool = False          # noop, but the archive was (re)written at ``bundle``
    signed_by: str | None = None
    with_images: bool = False
    services: tuple[str, ...] = ()
    delta: DeltaSummary | None = None
    warnings: tuple[str, ...] = ()      # what the SBOMs left out (sbom/NAME: warning)

    def to_json(self) -> dict[str, Any]:
        out = {"bundle": str(self.bundle), "sha256": self.sha256, "tar_sha256": self.tar_sha256,
               "version": self.version, "profile": self.profile, "noop": self.noop,
               "record": str(self.record) if self.record else None, "restored": self.restored,
               "signed_by": self.signed_by, "with_images": self.with_images,
               "services": list(self.services)}
        if self.delta is not None:
            out["delta"] = self.delta.to_json()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _delta_of(plan: BundlePlan) -> DeltaSummary | None:
    return delta_summary(plan.manifest) if plan.manifest.since is not None else None


def _image_members(lab: Lab, lock: Lock, services: tuple[str, ...], platforms: tuple[str, ...],
                   progress: Any, base: Base | None = None, since: DeltaBase | None = None,
                   direct: bool = False) -> tuple[list[BundleFile], DeltaBase | None]:
    """The ``images/`` members; for a delta (``base``: a new one, ``since``: rebuilt from its
    record) only what the base lacks, and the manifest's ``since``. ``direct``: blobs are
    ``fetch.DirectBlob``s, for ``direct.DirectArchive`` to write in place."""
    if base is None and since is None:
        images = list(image_files(lab, lock, services, platforms, progress, direct=direct))
        return add_model_files(lab, lock, services, images, progress, direct=direct), None
    if base is not None:
        plan = plan_delta(base, plan_images(lock, services, platforms))
        relied, base_blobs = plan.relied, base.blobs
    else:
        relied, base_blobs = since.blobs, frozenset(since.blobs)
    members = image_files(lab, lock, services, platforms, progress, exclude=frozenset(relied), direct=direct)
    members = add_model_files(lab, lock, services, members, progress, direct=direct)
    members, relied = delta_members(members, relied, base_blobs)
    return members, (delta_base(base, plan, relied) if base is not None else replace(since, blobs=relied))


def _platforms(lab: Lab, lock: Lock, platforms: Iterable[str] | None) -> tuple[str, ...]:
    if not platforms:
        return tuple(sorted(lock.platforms))
    chosen = tuple(sorted(set(platforms)))
    unknown = [p for p in chosen if p not in lock.platforms]
    if unknown:
        raise BundleError(f"platform {', '.join(unknown)} is not in the lock",
                          hint="locked platforms: " + ", ".join(sorted(lock.platforms)))
    return chosen


def _plan_release(lab: Lab, lock: Lock, profile: str, version: str, *, with_images: bool,
                  platforms: Iterable[str] | None, sign_key, progress, sources: dict[str, str], epoch: int,
                  sbom: bool = False, base: Base | None = None, since: DeltaBase | None = None,
                  early: Callable[[str, str, list[BundleFile]], None] | None = None) -> BundlePlan:
    """Everything a release holds. Image bundles (and ``sbom``) carry an SBOM per image and
    platform, made from the layers where they lie, each as soon as its image's layers are
    there. A delta (``base``/``since``) carries no SBOMs: its layers are not all fetched (its
    base has them). ``early(top, filename, blobs)`` is called once an image bundle's blob
    members are known, before they have downloaded (``build_release`` then writes them in place:
    ``direct.DirectArchive``; the members are ``fetch.DirectBlob``s)."""
    ri = ReleaseInput(lab=lab, lock=lock, profile=profile, version=version,
                      labbuild_version=__version__, offline=with_images)
    missing = [s for s in ri.services if s not in lock.services]
    if missing:
        raise LockError(f"not in the lock: {', '.join(missing)}", hint="run `labbuild lock`")
    chosen = _platforms(lab, lock, platforms)
    members: list[BundleFile] = []
    delta = None
    documents: list[BundleFile] = []
    if with_images:
        members, delta = _image_members(lab, ri.lock, ri.services, chosen, progress, base, since,
                                        direct=early is not None)
        if early is not None:   # the archive's blobs can be written now, while they download
            early(*bundle_names(ri, delta), [f for f in members if f.order == BLOB_ORDER])
        if delta is None:   # each image's SBOM as soon as its layers are in, while the rest download
            documents = sbom_members(plan_images(ri.lock, ri.services, chosen), epoch=epoch, pending=members)
        wait_for_downloads(members)
    elif sbom:
        documents = sbom_members(fetch_to_cache(lab, ri.lock, ri.services, chosen, progress), epoch=epoch)
    members += documents
    return plan_bundle(ri, platforms=chosen, image_members=members, sign_key=sign_key, sources=sources,
                       epoch=epoch, since=delta)


def git_commit(root: Path) -> str | None:
    """The lab repository's HEAD commit, when ``root`` is a git checkout (recorded in the release
    record, not in the bundle: the bundle's bytes depend only on the lab's content)."""
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", commit) else None


def _lab_sources(root: Path) -> dict[str, str]:
    lab_file, files = lab_paths(root)
    # bytes decoded, not read_text(): universal newlines would turn \r\n into \n
    return {p.relative_to(root).as_posix(): p.read_bytes().decode("utf-8") for p in [lab_file, *files]}


def build_release(root: str | Path, version: str, *, profile: str | None = None,
                  out_dir: str | Path | None = None, with_images: bool = False,
                  platforms: Iterable[str] | None = None, sign_key: str | Path | None = None,
                  progress: Any = None, sbom: bool = False, since: str | None = None,
                  reuse_from: Iterable[str | Path] = ()) -> ReleaseResult:
    """Build, write and record release ``version`` of ``profile`` (see the module docstring).

    ``reuse_from``: directories of image bundles (``reuse``) whose verified blobs are copied
    instead of downloaded; a bundle there that fails verification is a warning, not an error.

    ``sbom``: without images, fetch the layers anyway to ship ``sbom/`` (image bundles always do).

    Same profile+version with identical content: a no-op (the archive is
    rewritten only when missing at the output path). Different content:
    BundleError naming what differs and the next free version. Releases of one
    version are serialised (``record.record_lock``, from the look for the record
    to its writing): of two at once, one writes the bundle and the record, the
    other then finds that record, so no bundle is ever left that its record does
    not describe.

    ``since``: a delta bundle (``builder.bundle.delta``) relying on that base: a
    recorded version of ``profile`` or a base bundle file. Recorded apart from
    the full release of the same version, in
    ``lockfiles/releases/delta/<profile>-<version>-since-<base version>.json``.
    """
    root = Path(root)
    check_version(version)
    lab = load_lab(root)
    profile = profile or lab.default_profile
    lab.profile_closure(profile)  # unknown profile -> BlueprintError listing the known ones
    lock = read_lock(root / LOCK_PATH)
    stale = stale_services(lab, lock)
    if stale:
        raise LockError("the lock is stale: " + "; ".join(f"{n}: {why}" for n, why in stale.items()),
                        hint="run `labbuild lock` (and commit lockfiles/lab.lock.json), then release again")
    key = _load_sign_key(sign_key)
    base = None
    if since is not None:
        if not with_images:
            raise BundleError("--since builds a delta of an image bundle", hint="add --with-images")
        base = read_base(root, since, lab.name, profile)
    reuse_warnings: list[str] = []
    if reuse_from:
        if not with_images:
            raise BundleError("--reuse-from reuses image blobs", hint="add --with-images")
        _, reuse_warnings = index_directories((Path(d) for d in reuse_from), progress)
    rpath = (record_path(root, profile, version) if base is None
             else delta_record_path(root, profile, version, base.manifest.version))
    with record_lock(rpath):    # held until the bundle and the record are written
        record = Record.read(rpath) if rpath.exists() else None
        mtime = record.mtime if record is not None else source_date_epoch()
        sources = _lab_sources(root)
        if record is not None and sources != record.sources and same_release_sources(record.sources, sources):
            # only [image] track/group lines changed since: the recorded release stands, made from
            # the sources it recorded (its provenance names them by sha256)
            sources = record.sources
        out = Path(out_dir) if out_dir is not None else root / "dist"
        begun: list[DirectArchive] = []

        def early(top: str, filename: str, blobs: list[BundleFile]) -> None:
            begun.append(DirectArchive(names.inside(out, filename), top, filename, blobs, mtime=mtime,
                                       progress=progress, insecure_registries=tuple(lab.insecure_registries)))

        try:
            plan = _plan_release(lab, lock, profile, version, with_images=with_images, platforms=platforms,
                                 sign_key=key, progress=progress, sources=sources, epoch=mtime, sbom=sbom, base=base,
                                 early=early if with_images and record is None else None)
        except BaseException as exc:
            for archive in begun:
                archive.abort(exc)
            raise
        dest = names.inside(out, plan.filename)
        if record is not None:
            return _release_again(plan, record, rpath, dest, version, profile, progress, sources)
        if begun:
            archive_sha, tar_sha = begun[0].finish(plan)
        else:
            archive_sha, tar_sha = write_archive(plan, dest, mtime=mtime, progress=progress)
        make_record(plan, lab.name, profile, version, archive_sha, tar_sha, mtime, sources,
                    sbom=sbom, git_commit=git_commit(root)).write(rpath)
        return ReleaseResult(bundle=dest, sha256=archive_sha, tar_sha256=tar_sha, version=version,
                             profile=profile, noop=False, record=rpath, signed_by=plan.signed_by,
                             with_images=with_images, services=tuple(plan.manifest.services), delta=_delta_of(plan),
                             warnings=(*reuse_warnings, *sbom_warnings(plan.files)))


def _load_sign_key(sign_key):
    return None if sign_key is None else load_private_key(Path(sign_key))


def _release_again(plan: BundlePlan, record: Record, rpath: Path, dest: Path, version: str,
                   profile: str, progress: Any = None, sources: dict[str, str] | None = None) -> ReleaseResult:
    """The record exists: no-op when the content is identical, else refuse (a changed source
    file changes the provenance, which names each by its sha256)."""
    differences = record_differences(record, plan) + [
        f"source changed: {path}" for path in sorted(set(record.sources) | set(sources or record.sources))
        if record.sources.get(path) != (sources or record.sources).get(path)]
    if differences:
        taken = [p.stem[len(profile) + 1:].split("-since-")[0] for p in rpath.parent.glob(f"{profile}-*.json")]
        raise BundleError(
            f"release {profile} {version} already exists ({rpath}) with different content",
            problems=[Problem(file=str(rpath), path="", message=d) for d in differences],
            hint=f"releases are immutable: bump the version, e.g. `labbuild release {next_version(version, taken)}`")
    result = dict(bundle=dest, sha256=record.sha256, tar_sha256=record.tar_sha256, version=version,
                  profile=profile, noop=True, record=rpath, signed_by=plan.signed_by,
                  with_images=record.with_images, services=tuple(plan.manifest.services), delta=_delta_of(plan))
    if dest.is_file() and sha256_file(dest) == record.sha256:
        return ReleaseResult(**result)

    def same_as_record(archive_sha: str, tar_sha: str) -> None:
        if tar_sha != record.tar_sha256:
            raise BundleError(f"rebuilt {dest.name} does not match its record (tar sha256 {tar_sha})",
                              hint="the labbuild installation differs from the one that made the release")

    archive_sha, _ = write_archive(plan, dest, mtime=record.mtime, accept=same_as_record, progress=progress)
    return ReleaseResult(**{**result, "sha256": archive_sha, "restored": True})






def rebuild_release(root: str | Path, spec: str, *, out_dir: str | Path | None = None,
                    sign_key: str | Path | None = None, progress: Any = None) -> ReleaseResult:
    """Rebuild release ``<profile>-<version>`` from its record; refuse unless the sha256 matches.

    Uses only the record: the blueprints' text, the frozen lock, the mtime and
    the options it was made with. The current blueprints and lock are not read.
    """
    root = Path(root)
    rpath, profile, version = spec_record_path(root, spec)
    if not rpath.exists():
        known = sorted(p.relative_to(root / RECORDS_DIR).with_suffix("").as_posix()
                       for p in (root / RECORDS_DIR).glob("**/*.json"))
        raise BundleError(f"no release record {rpath}",
                          hint="recorded releases: " + (", ".join(known) or "none"))
    record = Record.read(rpath)
    if (record.profile, record.version) != (profile, version):
        raise BundleError(f"{rpath}: records {record.profile}-{record.version}, not {spec}",
                          hint="restore it from version control")
    if record.labbuild != __version__:
        raise BundleError(f"{rpath.name} was made by labbuild {record.labbuild}, this is {__version__}",
                          hint=f"install labbuild {record.labbuild} to reproduce it byte for byte")
    key = _load_sign_key(sign_key)
    if record.signed_by and key is None:
        raise BundleError(f"{rpath.name} was signed by {record.signed_by}",
                          hint="pass --sign with the same private key")
    with tempfile.TemporaryDirectory(prefix="labbuild-rebuild-") as tmp:
        for rel, text in record.sources.items():
            target = names.inside(Path(tmp), rel)   # Record.read admits only blueprints/*.toml paths
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))
        lab = load_lab(Path(tmp))
        lock = lock_from_json(record.lock, str(rpath))
        since = Manifest.from_json(record.manifest, f"{rpath}: manifest").since
        plan = _plan_release(lab, lock, record.profile, record.version,
                             with_images=record.with_images, platforms=record.platforms,
                             sign_key=key, progress=progress, sources=record.sources, epoch=record.mtime,
                             sbom=record.sbom, since=since)
    differences = record_differences(record, plan)
    if differences:
        raise BundleError(f"{rpath.name} cannot be reproduced", hint="see the differences above",
                          problems=[Problem(file=str(rpath), path="", message=d) for d in differences])
    out = Path(out_dir) if out_dir is not None else root / "dist"
    dest = names.inside(out, plan.filename)

    def reproduced(archive_sha: str, tar_sha: str) -> None:
        if tar_sha != record.tar_sha256 or archive_sha != record.sha256:
            raise BundleError(f"rebuilt {plan.filename} has sha256 {archive_sha}, the record says {record.sha256}",
                              hint="the archive recipe or zlib differs from the one that made the release")

    archive_sha, tar_sha = write_archive(plan, dest, mtime=record.mtime, accept=reproduced, progress=progress)
    return ReleaseResult(bundle=dest, sha256=archive_sha, tar_sha256=tar_sha, version=record.version,
                         profile=record.profile, noop=False, record=rpath, signed_by=plan.signed_by,
                         with_images=record.with_images, services=tuple(plan.manifest.services), delta=_delta_of(plan))


