"""Bundles: assemble, write, record, verify and safely extract.

A bundle is one archive ``<lab>-<profile>-<version>.tar.gz`` (``.tar`` when it
carries images: layers are already compressed; see ``bundle_filename``)
holding one top directory ``<lab>-<profile>-<version>/`` with the files of
DESIGN.md. The byte-level recipe is ``builder.archive``; this module decides
*what* goes in and proves it afterwards.

Contracts other parts rely on:

- ``build_release(root, version, *, profile=None, out_dir=None, with_images=False,
  platforms=None, sign_key=None, progress=None) -> ReleaseResult`` — renders the
  profile's closure, writes the archive into a temp file beside the output
  (fsync, rename: an interrupted release leaves nothing at the final path) and
  records it in ``lockfiles/releases/<profile>-<version>.json``. With images it
  calls ``builder.images.image_files(lab, lock, services, platforms, progress)``.
  The lock must be fresh (``stale_services``) and the version SemVer 2.0. When
  the record exists: identical content is a no-op (``noop=True``; the archive
  is rewritten only when missing at the output path), different content is a
  BundleError naming each difference and the next free version.
- ``rebuild_release(root, "<profile>-<version>", ...)`` rebuilds a past release
  from its record alone and refuses unless the sha256 is reproduced.
- ``verify_bundle(path, key=None) -> VerifyResult(ok, errors, manifest)``: one
  streaming pass over an archive (or a walk of an extracted bundle directory); every member's sha256 against ``SHA256SUMS`` and
  ``manifest.json``, unlisted or missing files, unsafe members (absolute, ``..``,
  links, devices, duplicates, outside the top directory), and the Ed25519
  signature ``manifest.json.sig`` when a key is given.
- ``safe_extract(bundle_path, dest, key=None) -> dest``: verifies first, then
  extracts into a temp dir beside ``dest`` (re-hashing every file) and renames
  it to ``dest``, which becomes the bundle's top directory (``dest/compose.yaml``).
  Nothing is written when verification fails; ``dest`` must not exist.
- ``walk_bundle(path, scan, on_file)`` + ``check_contents(files, kept, top=, key=)``:
  the streaming pass and the pure checks behind ``verify_bundle``, for stages
  that consume the members while verifying (install feeds ``docker load``).

manifest.json (canonical JSON, typed as ``Manifest``): ``{"format": 1, "lab", "name" (top dir),
"version", "profile", "inputs", "labbuild", "offline", "platforms",
"services": {name: {"image", "digest", "verified", "config_digests",
"ports", "health", "healthcheck", "depends_on", "volumes", "secrets", "runbook"}},
"files": {arcname: {"sha256", "size"}}}``; ``files`` lists every file but
manifest.json, SHA256SUMS and the signature. SHA256SUMS (``sha256sum -c``
format) lists every file but itself and the signature.

A release record holds the version, profile, the frozen (closure) lock, the
archive sha256, the uncompressed tar sha256, the labbuild version,
with_images, platforms, the archive mtime, the signer's fingerprint, the
manifest, and the text of every blueprint (so ``--rebuild`` needs nothing else).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import __version__
from .archive import BundleFile, _HashingWriter, gzip_writer, source_date_epoch, write_tar
from .blueprint import Lab, lab_paths, load_lab
from .errors import BundleError, LockError, Problem
from .fsutil import atomic_write, atomic_writer, canonical_json, sha256_bytes, sha256_file
from .lockfile import LOCK_PATH, Lock, lock_from_json, read_lock, stale_services
from .render import (ReleaseInput, bundle_filename, bundle_top,  # noqa: F401 (re-exported)
                     render_text_files, secret_keys, volume_name)
from .signing import SIGNATURE_NAME

BUNDLE_FORMAT = 1
RECORD_FORMAT = 1
RECORDS_DIR = Path("lockfiles") / "releases"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
UNSUMMED = {SUMS, SIGNATURE_NAME}                  # not in SHA256SUMS
UNLISTED = {MANIFEST, SUMS, SIGNATURE_NAME}        # not in manifest["files"]
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")


# --------------------------------------------------------------------------- names and versions

def check_version(version: str) -> str:
    """``version`` when it is SemVer 2.0, else a BundleError saying what a version looks like."""
    if not SEMVER_RE.match(version):
        raise BundleError(f"{version!r} is not a SemVer 2.0 version",
                          hint="use MAJOR.MINOR.PATCH, e.g. 0.1.0 or 1.2.0-rc.1")
    return version


def _semver_key(version: str) -> tuple:
    m = SEMVER_RE.match(version)
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    pre_key = (1,) if pre is None else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")])
    return (major, minor, patch, pre_key)


def next_version(version: str, taken: Iterable[str] = ()) -> str:
    """The next free patch version after ``version`` and every taken one (prereleases count up)."""
    versions = [v for v in {version, *taken} if SEMVER_RE.match(v)]
    top = max(versions, key=_semver_key)
    m = SEMVER_RE.match(top)
    pre = m[4]
    if pre and (num := re.search(r"(\d+)$", pre)):
        return f"{m[1]}.{m[2]}.{m[3]}-{pre[:num.start()]}{int(num[1]) + 1}"
    if pre:
        return f"{m[1]}.{m[2]}.{m[3]}"
    return f"{m[1]}.{m[2]}.{int(m[3]) + 1}"


def record_path(root: Path, profile: str, version: str) -> Path:
    return Path(root) / RECORDS_DIR / f"{profile}-{version}.json"


# --------------------------------------------------------------------------- the manifest model

@dataclass(frozen=True)
class ManifestPort:
    name: str
    container: int
    host: int | None
    bind: str
    protocol: str


@dataclass(frozen=True)
class ManifestHealth:
    port: str
    host_port: int | None
    path: str
    scheme: str
    status: tuple[int, ...] = ()
    start_period: str | None = None
    timeout: str | None = None


@dataclass(frozen=True)
class ManifestVolume:
    name: str
    volume: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ManifestService:
    image: str                              # name:tag
    digest: str                             # the pin
    verified: bool                          # False: lock entry made by `lock --offline`
    config_digests: dict[str, str]          # platform -> config digest (= image ID after load)
    ports: tuple[ManifestPort, ...]
    health: ManifestHealth | None
    depends_on: tuple[str, ...]             # effective: [when.X].depends_on included
    volumes: tuple[ManifestVolume, ...]
    secrets: tuple[str, ...]                # env keys of the install's .env
    runbook: str
    healthcheck: bool = False               # an in-container healthcheck exists


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """manifest.json, format 1 (see the module docstring)."""

    lab: str
    name: str
    version: str
    profile: str
    inputs: str
    labbuild: str
    offline: bool
    platforms: tuple[str, ...]
    services: dict[str, ManifestService]
    files: dict[str, FileEntry]
    format: int = BUNDLE_FORMAT

    def to_json(self) -> dict[str, Any]:
        def service(s: ManifestService) -> dict[str, Any]:
            d = asdict(s)
            d.update(ports=[asdict(p) for p in s.ports], volumes=[asdict(v) for v in s.volumes],
                     depends_on=list(s.depends_on), secrets=list(s.secrets),
                     health=None if s.health is None else {**asdict(s.health), "status": list(s.health.status)})
            return d
        return {
            "format": self.format, "lab": self.lab, "name": self.name, "version": self.version,
            "profile": self.profile, "inputs": self.inputs, "labbuild": self.labbuild,
            "offline": self.offline, "platforms": list(self.platforms),
            "services": {n: service(s) for n, s in sorted(self.services.items())},
            "files": {n: asdict(f) for n, f in sorted(self.files.items())},
        }

    def dumps(self) -> bytes:
        return canonical_json(self.to_json()).encode("utf-8")

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST) -> "Manifest":
        """Build a Manifest from parsed JSON; BundleError naming the bad key."""
        key = "(top level)"
        try:
            if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
                raise ValueError(f"not a format-{BUNDLE_FORMAT} manifest")
            services = {}
            for name, s in data["services"].items():
                key = f"services.{name}"
                health = s.get("health")
                services[name] = ManifestService(
                    image=s["image"], digest=s["digest"], verified=bool(s["verified"]),
                    config_digests=dict(s["config_digests"]),
                    ports=tuple(ManifestPort(**p) for p in s["ports"]),
                    health=None if health is None else ManifestHealth(**{**health, "status": tuple(health["status"])}),
                    depends_on=tuple(s["depends_on"]), volumes=tuple(ManifestVolume(**v) for v in s["volumes"]),
                    secrets=tuple(s["secrets"]), runbook=s["runbook"], healthcheck=bool(s.get("healthcheck")))
            key = "files"
            files = {n: FileEntry(sha256=f["sha256"], size=f["size"]) for n, f in data["files"].items()}
            key = "(top level)"
            return cls(lab=data["lab"], name=data["name"], version=data["version"], profile=data["profile"],
                       inputs=data["inputs"], labbuild=data["labbuild"], offline=bool(data["offline"]),
                       platforms=tuple(data["platforms"]), services=services, files=files)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{where}: {key}: malformed manifest ({type(exc).__name__}: {exc})",
                              hint="the bundle is damaged or not a labbuild bundle") from None


# --------------------------------------------------------------------------- assembling

@dataclass(frozen=True)
class BundlePlan:
    """Everything one archive holds, decided before a byte is written."""

    top: str
    filename: str
    files: tuple[BundleFile, ...]      # every member, manifest/sums/signature included
    manifest: Manifest
    manifest_bytes: bytes
    lock: Lock
    compressed: bool
    platforms: tuple[str, ...]
    signed_by: str | None

    @property
    def manifest_sha256(self) -> str:
        return sha256_bytes(self.manifest_bytes)


def closure_lock(lock: Lock, services: Iterable[str]) -> Lock:
    """The lock restricted to ``services``: what a bundle's lock.json holds."""
    services = set(services)
    return replace(lock, services={n: r for n, r in sorted(lock.services.items()) if n in services})


def install_script() -> bytes | None:
    """builder/templates/install.sh, when this labbuild ships one."""
    res = resources.files("builder").joinpath("templates", "install.sh")
    return res.read_bytes() if res.is_file() else None


def manifest_services(ri: ReleaseInput) -> dict[str, ManifestService]:
    """The ``services`` of manifest.json: what install and diff need of each service."""
    out: dict[str, ManifestService] = {}
    for name in ri.services:
        bp = ri.blueprint(name)
        rec = ri.lock.services[name]
        health = None
        if bp.health:
            h = bp.health
            health = ManifestHealth(port=h.port, host_port=bp.port(h.port).host, path=h.path, scheme=h.scheme,
                                    status=h.status, start_period=h.start_period, timeout=h.timeout)
        out[name] = ManifestService(
            image=bp.image.reference, digest=bp.image.digest, verified=rec.verified,
            config_digests={p: r.config for p, r in sorted(rec.platforms.items())},
            ports=tuple(ManifestPort(name=p.name, container=p.container, host=p.host, bind=p.bind,
                                     protocol=p.protocol) for p in bp.ports),
            health=health, healthcheck=bp.healthcheck is not None,
            depends_on=tuple(d for d in bp.effective_depends_on(ri.services) if d in ri.services),
            volumes=tuple(ManifestVolume(name=v.name, volume=volume_name(name, v.name), target=v.target,
                                         read_only=v.read_only) for v in bp.volumes),
            secrets=tuple(secret_keys(ri, name)), runbook=f"runbooks/{name}.md")
    return out


def render_sums(files: dict[str, str]) -> bytes:
    """SHA256SUMS text (``sha256sum -c`` format) from ``{arcname: sha256 hex}``."""
    return "".join(f"{h}  {n}\n" for n, h in sorted(files.items(), key=lambda kv: kv[0].encode())).encode()


def plan_bundle(ri: ReleaseInput, *, platforms: tuple[str, ...], image_members: Iterable[BundleFile] = (),
                sign_key=None) -> BundlePlan:
    """Render every file of the bundle, its manifest, SHA256SUMS and (with a key) its signature."""
    lock = closure_lock(ri.lock, ri.services)
    members = [BundleFile(n, data=t.encode("utf-8")) for n, t in render_text_files(ri).items()]
    members.append(BundleFile("lock.json", data=lock.dumps().encode("utf-8")))
    script = install_script()
    if script is not None:
        members.append(BundleFile("install.sh", data=script, executable=True))
    members.extend(image_members)
    hashes = {f.arcname: f.sha256() for f in members}
    manifest = Manifest(
        lab=ri.lab.name, name=ri.top, version=ri.version, profile=ri.profile, inputs=ri.lock.inputs,
        labbuild=ri.labbuild_version, offline=ri.offline, platforms=tuple(platforms),
        services=manifest_services(ri),
        files={f.arcname: FileEntry(sha256=hashes[f.arcname], size=f.size) for f in members})
    manifest_bytes = manifest.dumps()
    members.append(BundleFile(MANIFEST, data=manifest_bytes))
    hashes[MANIFEST] = sha256_bytes(manifest_bytes)
    members.append(BundleFile(SUMS, data=render_sums(hashes)))
    signed_by = None
    if sign_key is not None:
        from .signing import fingerprint, sign
        members.append(BundleFile(SIGNATURE_NAME, data=sign(sign_key, manifest_bytes)))
        signed_by = fingerprint(sign_key.public_key())
    filename = ri.filename
    return BundlePlan(top=ri.top, filename=filename, files=tuple(members), manifest=manifest,
                      manifest_bytes=manifest_bytes, lock=lock, compressed=not ri.offline,
                      platforms=platforms, signed_by=signed_by)


# --------------------------------------------------------------------------- writing

def write_archive(plan: BundlePlan, dest: Path, *, mtime: int,
                  accept: Callable[[str, str], None] | None = None, progress: Any = None) -> tuple[str, str]:
    """Write ``plan`` to ``dest`` atomically; return ``(archive sha256, tar sha256)``.

    The archive is built in a temp file beside ``dest`` (``fsutil.atomic_writer``:
    fsync, rename) and renamed only when ``accept(archive_sha, tar_sha)`` (if
    given) does not raise. An image bundle shows a packing bar on a TTY
    (``progress``: None = when stderr is a terminal, False = never).
    """
    with _packing_bar(plan, progress) as on_bytes, atomic_writer(dest) as fh:
        if plan.compressed:
            outer = _HashingWriter(fh)
            with gzip_writer(outer) as gz:
                tar_sha = write_tar(gz, plan.top, plan.files, mtime=mtime, progress=on_bytes)
            archive_sha = outer.hash.hexdigest()
        else:  # the archive is the tar stream: hash its (GiB of image) bytes once, not twice
            tar_sha = archive_sha = write_tar(fh, plan.top, plan.files, mtime=mtime, progress=on_bytes)
        if accept:
            accept(archive_sha, tar_sha)
    return archive_sha, tar_sha


@contextlib.contextmanager
def _packing_bar(plan: BundlePlan, progress: Any) -> Iterator[Callable[[int], None] | None]:
    """A rich bar over the bytes packed into an image bundle; nothing for small bundles."""
    if plan.compressed or progress is False:
        yield None
        return
    from .images import progress_display
    total = sum(f.size for f in plan.files)
    with progress_display(None if progress is None else bool(progress)) as bars:
        task = bars.add_task(f"packing {plan.filename}", total=total)
        yield lambda n: bars.advance(task, n)


# --------------------------------------------------------------------------- releasing

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

    def to_json(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "sha256": self.sha256, "tar_sha256": self.tar_sha256,
                "version": self.version, "profile": self.profile, "noop": self.noop,
                "record": str(self.record) if self.record else None, "restored": self.restored,
                "signed_by": self.signed_by, "with_images": self.with_images,
                "services": list(self.services)}


def _image_members(lab: Lab, lock: Lock, services: tuple[str, ...], platforms: tuple[str, ...],
                   progress: Any) -> list[BundleFile]:
    try:
        from .images import image_files
    except ModuleNotFoundError as exc:
        if exc.name != "builder.images":
            raise
        raise BundleError("--with-images is not available in this labbuild (builder.images is missing)",
                          hint="release without --with-images; install then pulls the images by digest") from None
    return list(image_files(lab, lock, services, platforms, progress))


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
                  platforms: Iterable[str] | None, sign_key, progress) -> BundlePlan:
    ri = ReleaseInput(lab=lab, lock=lock, profile=profile, version=version,
                      labbuild_version=__version__, offline=with_images)
    missing = [s for s in ri.services if s not in lock.services]
    if missing:
        raise LockError(f"not in the lock: {', '.join(missing)}", hint="run `labbuild lock`")
    chosen = _platforms(lab, lock, platforms)
    images = _image_members(lab, ri.lock, ri.services, chosen, progress) if with_images else []
    return plan_bundle(ri, platforms=chosen, image_members=images, sign_key=sign_key)


def _lab_sources(root: Path) -> dict[str, str]:
    lab_file, files = lab_paths(root)
    # bytes decoded, not read_text(): universal newlines would turn \r\n into \n
    return {p.relative_to(root).as_posix(): p.read_bytes().decode("utf-8") for p in [lab_file, *files]}


def build_release(root: str | Path, version: str, *, profile: str | None = None,
                  out_dir: str | Path | None = None, with_images: bool = False,
                  platforms: Iterable[str] | None = None, sign_key: str | Path | None = None,
                  progress: Any = None) -> ReleaseResult:
    """Build, write and record release ``version`` of ``profile`` (see the module docstring).

    Same profile+version with identical content: a no-op (the archive is
    rewritten only when missing at the output path). Different content:
    BundleError naming what differs and the next free version.
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
    plan = _plan_release(lab, lock, profile, version, with_images=with_images, platforms=platforms,
                         sign_key=key, progress=progress)
    out = Path(out_dir) if out_dir is not None else root / "dist"
    dest = out / plan.filename
    rpath = record_path(root, profile, version)
    record = read_record(rpath) if rpath.exists() else None
    if record is not None:
        return _release_again(plan, record, rpath, dest, version, profile, progress)
    mtime = source_date_epoch()
    archive_sha, tar_sha = write_archive(plan, dest, mtime=mtime, progress=progress)
    write_record(rpath, _record(plan, lab.name, profile, version, archive_sha, tar_sha, mtime,
                                _lab_sources(root)))
    return ReleaseResult(bundle=dest, sha256=archive_sha, tar_sha256=tar_sha, version=version,
                         profile=profile, noop=False, record=rpath, signed_by=plan.signed_by,
                         with_images=with_images, services=tuple(plan.manifest.services))


def _load_sign_key(sign_key):
    if sign_key is None:
        return None
    from .signing import load_private_key
    return load_private_key(Path(sign_key))


def _release_again(plan: BundlePlan, record: dict, rpath: Path, dest: Path, version: str,
                   profile: str, progress: Any = None) -> ReleaseResult:
    """The record exists: no-op when the content is identical, else refuse."""
    differences = record_differences(record, plan)
    if differences:
        taken = [p.stem[len(profile) + 1:] for p in rpath.parent.glob(f"{profile}-*.json")]
        raise BundleError(
            f"release {profile} {version} already exists ({rpath}) with different content",
            problems=[Problem(file=str(rpath), path="", message=d) for d in differences],
            hint=f"releases are immutable: bump the version, e.g. `labbuild release {next_version(version, taken)}`")
    result = dict(bundle=dest, sha256=record["sha256"], tar_sha256=record["tar_sha256"], version=version,
                  profile=profile, noop=True, record=rpath, signed_by=plan.signed_by,
                  with_images=record["with_images"], services=tuple(plan.manifest.services))
    if dest.is_file() and sha256_file(dest) == record["sha256"]:
        return ReleaseResult(**result)

    def same_as_record(archive_sha: str, tar_sha: str) -> None:
        if tar_sha != record["tar_sha256"]:
            raise BundleError(f"rebuilt {dest.name} does not match its record (tar sha256 {tar_sha})",
                              hint="the labbuild installation differs from the one that made the release")

    archive_sha, _ = write_archive(plan, dest, mtime=record["mtime"], accept=same_as_record, progress=progress)
    return ReleaseResult(**{**result, "sha256": archive_sha, "restored": True})


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


def _record(plan: BundlePlan, lab: str, profile: str, version: str, archive_sha: str, tar_sha: str,
            mtime: int, sources: dict[str, str]) -> dict[str, Any]:
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
    required = {"format", "profile", "version", "sha256", "tar_sha256", "lock", "manifest", "sources",
                "mtime", "with_images", "platforms", "labbuild"}
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or not required <= set(data):
        raise BundleError(f"{path}: not a format-{RECORD_FORMAT} release record",
                          hint="restore it from version control")
    return data


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write(path, canonical_json(record))


def rebuild_release(root: str | Path, spec: str, *, out_dir: str | Path | None = None,
                    sign_key: str | Path | None = None, progress: Any = None) -> ReleaseResult:
    """Rebuild release ``<profile>-<version>`` from its record; refuse unless the sha256 matches.

    Uses only the record: the blueprints' text, the frozen lock, the mtime and
    the options it was made with. The current blueprints and lock are not read.
    """
    root = Path(root)
    rpath = root / RECORDS_DIR / f"{spec}.json"
    if not rpath.exists():
        known = sorted(p.stem for p in (root / RECORDS_DIR).glob("*.json"))
        raise BundleError(f"no release record {rpath}",
                          hint="recorded releases: " + (", ".join(known) or "none"))
    record = read_record(rpath)
    if record["labbuild"] != __version__:
        raise BundleError(f"{rpath.name} was made by labbuild {record['labbuild']}, this is {__version__}",
                          hint=f"install labbuild {record['labbuild']} to reproduce it byte for byte")
    key = _load_sign_key(sign_key)
    if record.get("signed_by") and key is None:
        raise BundleError(f"{rpath.name} was signed by {record['signed_by']}",
                          hint="pass --sign with the same private key")
    with tempfile.TemporaryDirectory(prefix="labbuild-rebuild-") as tmp:
        for rel, text in record["sources"].items():
            target = Path(tmp) / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise BundleError(f"{rpath}: sources: unsafe path {rel!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(text.encode("utf-8"))
        lab = load_lab(Path(tmp))
        lock = lock_from_json(record["lock"], str(rpath))
        plan = _plan_release(lab, lock, record["profile"], record["version"],
                             with_images=record["with_images"], platforms=record["platforms"],
                             sign_key=key, progress=progress)
    differences = record_differences(record, plan)
    if differences:
        raise BundleError(f"{rpath.name} cannot be reproduced", hint="see the differences above",
                          problems=[Problem(file=str(rpath), path="", message=d) for d in differences])
    out = Path(out_dir) if out_dir is not None else root / "dist"
    dest = out / plan.filename

    def reproduced(archive_sha: str, tar_sha: str) -> None:
        if tar_sha != record["tar_sha256"] or archive_sha != record["sha256"]:
            raise BundleError(f"rebuilt {plan.filename} has sha256 {archive_sha}, the record says {record['sha256']}",
                              hint="the archive recipe or zlib differs from the one that made the release")

    archive_sha, tar_sha = write_archive(plan, dest, mtime=record["mtime"], accept=reproduced, progress=progress)
    return ReleaseResult(bundle=dest, sha256=archive_sha, tar_sha256=tar_sha, version=record["version"],
                         profile=record["profile"], noop=False, record=rpath, signed_by=plan.signed_by,
                         with_images=record["with_images"], services=tuple(plan.manifest.services))


# --------------------------------------------------------------------------- reading archives

@dataclass
class ScannedBundle:
    """What one streaming pass over an archive found."""

    top: str | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict)   # rel path -> (sha256, size)
    kept: dict[str, bytes] = field(default_factory=dict)              # small files asked for
    problems: list[Problem] = field(default_factory=list)


def _member_problem(name: str, member: tarfile.TarInfo, top: str | None) -> str | None:
    """Why ``member`` must not be extracted, or None."""
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return "absolute or non-POSIX path refused"
    parts = name.rstrip("/").split("/")
    if any(p in ("..", "") for p in parts) or any(p == "." for p in parts):
        return "path with '..', '.' or empty components refused"
    if top is not None and parts[0] != top:
        return f"outside the bundle's top directory {top}/"
    if member.issym() or member.islnk():
        return f"link to {member.linkname!r} refused (bundles hold regular files and directories only)"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "device or fifo refused"
    if not (member.isreg() or member.isdir()):
        return f"member type {member.type!r} refused"
    if member.isdir() and len(parts) == 1:
        return None
    if member.isreg() and len(parts) == 1:
        return "file outside the bundle's top directory"
    return None


@contextlib.contextmanager
def _open_stream(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(path, mode="r|*")
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle", hint="check the path") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a bundle archive") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive ({exc})",
                          hint="a bundle is the .tar.gz or .tar written by `labbuild release`") from None
    with tar:
        yield tar


def walk_bundle(path: Path, scan: ScannedBundle,
                on_file: Callable[[str, tarfile.TarInfo, tarfile.TarFile], None]) -> None:
    """Stream every member once: record unsafe ones in ``scan.problems`` (and skip
    them), set ``scan.top``, and hand each safe regular file to
    ``on_file(rel_path, member, tar)``, which must read it before returning.

    With ``check_contents`` this is the one-pass verification other stages
    build on (install loads images while it verifies).
    """
    seen: set[str] = set()
    with _open_stream(path) as tar:
        try:
            for member in tar:
                name = member.name
                norm = name.rstrip("/")
                if scan.top is None and norm and "/" not in norm and member.isdir():
                    scan.top = norm
                why = _member_problem(name, member, scan.top)
                if why is None and norm in seen:
                    why = "duplicate member name refused"
                seen.add(norm)
                rel = norm.split("/", 1)[1] if "/" in norm else ""
                if why:
                    scan.problems.append(Problem(file=rel or name, path="", message=why))
                    continue
                if member.isreg():
                    on_file(rel, member, tar)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            scan.problems.append(Problem(file=str(path), path="",
                                         message=f"archive is corrupt or truncated ({exc})",
                                         hint="copy the bundle again"))


_walk = walk_bundle  # the name builder.install imported first


def scan_bundle(path: str | Path, keep: Iterable[str] = (MANIFEST, SUMS, SIGNATURE_NAME)) -> ScannedBundle:
    """Hash every member of the archive in one pass, keeping the bytes of the files in ``keep``."""
    import hashlib
    keep = set(keep)
    scan = ScannedBundle()

    def on_file(rel: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        fh = tar.extractfile(member)
        h, size, buf = hashlib.sha256(), 0, io.BytesIO() if rel in keep else None
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
            if buf is not None:
                buf.write(block)
        scan.files[rel] = (h.hexdigest(), size)
        if buf is not None:
            scan.kept[rel] = buf.getvalue()

    walk_bundle(Path(path), scan, on_file)
    return scan


# --------------------------------------------------------------------------- verifying

@dataclass
class VerifyResult:
    ok: bool
    errors: list[Problem]
    manifest: dict | None
    signed: bool = False
    signature_checked: bool = False
    top: str | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": [e.to_json() for e in self.errors], "signed": self.signed,
                "signature_checked": self.signature_checked, "name": self.top,
                "version": (self.manifest or {}).get("version"), "profile": (self.manifest or {}).get("profile")}


def _parse_sums(data: bytes, problems: list[Problem]) -> dict[str, str]:
    sums: dict[str, str] = {}
    for no, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            problems.append(Problem(file=SUMS, path="", line=no, message="malformed line"))
            continue
        if m[2] in sums:
            problems.append(Problem(file=SUMS, path="", line=no, message=f"{m[2]} listed twice"))
        sums[m[2]] = m[1]
    return sums


def check_contents(files: dict[str, tuple[str, int]], kept: dict[str, bytes], *, top: str | None,
                   key=None) -> tuple[list[Problem], dict | None, bool, bool]:
    """Check hashed ``files`` against SHA256SUMS, the manifest and the signature.

    Returns ``(problems, manifest, signed, signature_checked)``. Pure: works on
    a scanned archive or on a directory's files alike.
    """
    problems: list[Problem] = []
    manifest, model = None, None
    if MANIFEST not in kept:
        problems.append(Problem(file=MANIFEST, path="", message="missing", hint="not a labbuild bundle?"))
    else:
        try:
            manifest = json.loads(kept[MANIFEST])
            model = Manifest.from_json(manifest)
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(Problem(file=MANIFEST, path="", message=f"unreadable: {exc}"))
        except BundleError as exc:
            problems.append(Problem(file=MANIFEST, path="", message=exc.message, hint=exc.hint))
    if model is not None and top is not None and model.name != top:
        problems.append(Problem(file=MANIFEST, path="name",
                                message=f"names {model.name!r} but the top directory is {top!r}"))
    if SUMS not in kept:
        problems.append(Problem(file=SUMS, path="", message="missing"))
    else:
        sums = _parse_sums(kept[SUMS], problems)
        for rel in sorted(set(files) - UNSUMMED):
            if rel not in sums:
                problems.append(Problem(file=rel, path="", message="present but not listed in SHA256SUMS"))
            elif sums[rel] != files[rel][0]:
                problems.append(Problem(file=rel, path="", message="sha256 differs from SHA256SUMS"))
        for rel in sorted(set(sums) - set(files)):
            problems.append(Problem(file=rel, path="", message="listed in SHA256SUMS but missing"))
    if model is not None:
        listed = model.files
        for rel in sorted(set(files) - UNLISTED):
            entry = listed.get(rel)
            if entry is None:
                problems.append(Problem(file=rel, path="", message="present but not listed in manifest.json"))
            elif (entry.sha256, entry.size) != files[rel]:
                problems.append(Problem(file=rel, path="", message="sha256 or size differs from manifest.json"))
        for rel in sorted(set(listed) - set(files)):
            problems.append(Problem(file=rel, path="", message="listed in manifest.json but missing"))
    signed = SIGNATURE_NAME in kept
    checked = False
    if key is not None:
        from .signing import signature_valid
        if not signed:
            problems.append(Problem(file=SIGNATURE_NAME, path="", message="bundle is not signed",
                                    hint="ask for a bundle made with `labbuild release --sign KEY`"))
        elif MANIFEST in kept and signature_valid(key, kept[SIGNATURE_NAME], kept[MANIFEST]):
            checked = True
        else:
            problems.append(Problem(file=SIGNATURE_NAME, path="",
                                    message="signature does not match manifest.json for this key",
                                    hint="the bundle was altered, or signed with another key"))
    return problems, manifest, signed, checked


def scan_directory(path: Path, keep: Iterable[str] = (MANIFEST, SUMS, SIGNATURE_NAME)) -> ScannedBundle:
    """Like ``scan_bundle``, for an extracted bundle directory (e.g. an installed release)."""
    keep = set(keep)
    scan = ScannedBundle(top=path.name)
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            scan.problems.append(Problem(file=rel, path="", message="link or special file refused"))
        elif p.is_file():
            scan.files[rel] = (sha256_file(p), p.stat().st_size)
            if rel in keep:
                scan.kept[rel] = p.read_bytes()
    return scan


def verify_bundle(path: str | Path, key: str | Path | Any = None) -> VerifyResult:
    """Verify an archive, or an extracted bundle directory (see the module docstring).

    ``key``: a public key or the path of one. A directory's name need not be
    the bundle's top directory (installs rename it), so that check is skipped.
    """
    if isinstance(key, (str, Path)):
        from .signing import load_public_key
        key = load_public_key(Path(key))
    path = Path(path)
    if path.is_dir():
        scan = scan_directory(path)
        problems, manifest, signed, checked = check_contents(scan.files, scan.kept, top=None, key=key)
        errors = scan.problems + problems
        return VerifyResult(ok=not errors, errors=errors, manifest=manifest, signed=signed,
                            signature_checked=checked, top=scan.top, files=scan.files)
    scan = scan_bundle(path)
    if scan.top is None and not scan.problems:
        scan.problems.append(Problem(file=str(path), path="", message="no top directory in the archive"))
    problems, manifest, signed, checked = check_contents(scan.files, scan.kept, top=scan.top, key=key)
    errors = scan.problems + problems
    return VerifyResult(ok=not errors, errors=errors, manifest=manifest,
                        signed=signed, signature_checked=checked, top=scan.top, files=scan.files)


def require_verified(path: str | Path, key=None) -> VerifyResult:
    """``verify_bundle``, raising BundleError listing every problem when it fails."""
    result = verify_bundle(path, key)
    if not result.ok:
        raise BundleError(f"{path}: bundle failed verification ({len(result.errors)} problem(s))",
                          problems=result.errors, hint="do not install it; copy or rebuild the bundle")
    return result


def safe_extract(bundle_path: str | Path, dest: str | Path, key=None) -> Path:
    """Verify, then extract the bundle so that ``dest`` is its top directory; return ``dest``."""
    import hashlib
    bundle_path, dest = Path(bundle_path), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"{dest} already exists", hint="extract into a new directory")
    verified = require_verified(bundle_path, key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    scan = ScannedBundle()
    changed: list[str] = []

    def on_file(rel: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fh = tar.extractfile(member)
        with open(target, "xb") as out:
            while block := fh.read(1 << 20):
                h.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(target, 0o755 if member.mode & 0o111 else 0o644)
        if verified.files.get(rel, (None,))[0] != h.hexdigest():
            changed.append(rel)

    try:
        walk_bundle(bundle_path, scan, on_file)
        if scan.problems or changed or scan.top != verified.top:
            raise BundleError(f"{bundle_path} changed while it was being extracted",
                              problems=scan.problems + [Problem(file=r, path="", message="changed") for r in changed],
                              hint="copy the bundle again and retry")
        for d in sorted(p for p in tmp.rglob("*") if p.is_dir()):
            os.chmod(d, 0o755)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --------------------------------------------------------------------------- reading for diff

@dataclass(frozen=True)
class BundleView:
    """What ``diff`` compares: the manifest and the non-secret settings of one bundle."""

    path: str
    manifest: Manifest
    lab_env: dict[str, str]


def read_bundle_view(path: str | Path) -> BundleView:
    """A verified archive, or an extracted bundle directory, as a BundleView."""
    from .render import parse_env_file
    path = Path(path)
    if path.is_dir():
        kept = {}
        for name in (MANIFEST, "lab.env"):
            try:
                kept[name] = (path / name).read_bytes()
            except FileNotFoundError:
                raise BundleError(f"{path}: no {name}", hint="pass a bundle archive or an extracted bundle") from None
    else:
        scan = scan_bundle(path, keep=(MANIFEST, SUMS, SIGNATURE_NAME, "lab.env"))
        problems, _, _, _ = check_contents(scan.files, scan.kept, top=scan.top)
        if scan.problems or problems:
            raise BundleError(f"{path}: bundle failed verification", problems=scan.problems + problems,
                              hint="diff only verified bundles; run `labbuild verify`")
        kept = scan.kept
    try:
        manifest = Manifest.from_json(json.loads(kept[MANIFEST]), f"{path}: {MANIFEST}")
    except (ValueError, KeyError) as exc:
        raise BundleError(f"{path}: unreadable manifest.json ({exc})") from None
    return BundleView(path=str(path), manifest=manifest,
                      lab_env=parse_env_file(kept.get("lab.env", b"").decode("utf-8", "replace")))
