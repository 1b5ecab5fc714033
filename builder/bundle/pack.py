"""Packing a release: decide every member of the archive, then write it reproducibly.

``plan_bundle(ri, platforms=, image_members=, sign_key=, sources=, epoch=) -> BundlePlan``
renders every file of the bundle (``builder.render``), its ``manifest.json``,
``provenance.intoto.json``, ``SHA256SUMS`` and, with a key, the signature and
its Sigstore bundle — all before a byte is written. ``write_archive(plan, dest, mtime=)`` writes it atomically (temp
file beside ``dest``, fsync, rename) with the byte recipe of
``builder.bundle.archive``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..blueprint import SECRET_REF_RE, Blueprint, Provision, secret_env_key
from ..format.files import (
    INSTALL_SCRIPT,
    LOCK_FILE,
    MANIFEST,
    PROVENANCE,
    SIGNATURE,
    SIGSTORE,
    SUMS,
    delta_filename,
    delta_top,
    runbook_path,
)
from ..format.manifest import (
    DeltaBase,
    FileEntry,
    Manifest,
    ManifestBackup,
    ManifestBlob,
    ManifestHealth,
    ManifestModel,
    ManifestPort,
    ManifestProvision,
    ManifestRotation,
    ManifestService,
    ManifestSupplied,
    ManifestVolume,
    provenance_subjects,
)
from ..format.sums import render_sums
from ..fsutil import SYNC_EVERY, WriteBehind, atomic_writer, sha256_bytes
from ..lockfile import Lock
from ..progress import progress_display
from ..provenance import BuildInfo, provenance_statement, render_provenance
from ..render import (
    ReleaseInput,
    comment_text,
    render_text_files,
    secret_keys,
    supplied_keys,
    volume_name,
)
from ..signing import fingerprint, sign
from ..sigstore_bundle import render_message_bundle
from .archive import (
    DEFAULT_MTIME,
    BundleFile,
    HashingWriter,
    gzip_writer,
    write_tar,
)


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
    res = resources.files("builder").joinpath("templates", INSTALL_SCRIPT)
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
                                    status=h.status, timeout=h.timeout,
                                    start_period=bp.effective_start_period(ri.services, ri.embedding_models))
        out[name] = ManifestService(
            image=bp.image.reference, digest=bp.image.digest, verified=rec.verified,
            config_digests={p: r.config for p, r in sorted(rec.platforms.items())},
            ports=tuple(ManifestPort(name=p.name, container=p.container, host=p.host, bind=p.bind,
                                     protocol=p.protocol) for p in bp.ports),
            health=health, healthcheck=bp.healthcheck is not None,
            depends_on=tuple(d for d in bp.effective_depends_on(ri.services) if d in ri.services),
            volumes=tuple(ManifestVolume(name=v.name, volume=volume_name(name, v.name), target=v.target,
                                         read_only=v.read_only) for v in bp.volumes),
            secrets=tuple(secret_keys(ri, name)), runbook=runbook_path(name),
            memory=bp.resources.memory if bp.resources else None,
            gpus=bp.resources.gpus if bp.resources else None,
            optional=name in ri.optional,
            supplied=tuple(ManifestSupplied(key=k, description=comment_text(d)) for k, d in supplied_keys(ri, name)),
            models=manifest_models(bp, rec),
            backup=ManifestBackup(method=bp.backup.method, dump=bp.backup.dump, restore=bp.backup.restore),
            migrations=bp.migrations,
            data_in=tuple(s for s in bp.data_in if s in ri.services),
            # a block that only provisions (litellm registering an app's key) connects nothing to the app
            wired_to=tuple(sorted({w.other for w in bp.active_when(ri.services)
                                   if w.env or w.files or w.depends_on or w.embedding_env or not w.provision})),
            rotation={secret_env_key(name, x.name): ManifestRotation(rotate=x.rotate, reason=x.rotate_reason,
                                                                     days=x.rotate_days, holder=x.holder)
                      for x in bp.secrets if x.rotate is not None},
            provision=tuple(manifest_provision(bp, p) for p in bp.effective_provision(ri.services)),
            show=tuple(secret_env_key(name, x.name) for x in bp.secrets if x.show))
    return out


def manifest_provision(bp: Blueprint, step: Provision) -> ManifestProvision:
    """A ``[[provision]]`` step as manifest.json ships it: ``${secret:SVC.NAME}`` becomes ``${SVC__NAME}``
    (the DIR/.env key) inside the decoded strings, and the body is JSON text made by the encoder."""
    keys: list[str] = []

    def ref(m) -> str:
        keys.append(secret_env_key(m.group(1), m.group(2)))
        return "${" + keys[-1] + "}"

    def walk(obj: dict) -> dict:
        return {k: walk(v) if isinstance(v, dict) else SECRET_REF_RE.sub(ref, v) for k, v in obj.items()}
    body = json.dumps(walk(step.json), ensure_ascii=True, separators=(",", ":")) if step.json else ""
    bearer = SECRET_REF_RE.sub(ref, step.bearer)[2:-1] if step.bearer else ""    # the DIR/.env key
    return ManifestProvision(description=step.description, method=step.method, host_port=bp.port(step.port).host,
                             path=step.path, body=body, keys=tuple(sorted(set(keys))), status=step.status,
                             already_status=step.already_status, already_text=step.already_text,
                             container_port=bp.port(step.port).container, bearer=bearer)


def manifest_models(bp, rec) -> tuple[ManifestModel, ...]:
    """The service's ``[[models]]`` as manifest.json names them, from the verified lock.

    A model whose lock entry is unverified (``lock --offline``) is listed with
    no blobs: such a bundle cannot carry it (``release --with-images`` refuses).
    """
    locked = {m.reference: m for m in rec.models}
    out = []
    for m in bp.models:
        lm = locked.get(m.reference)
        blobs = tuple(ManifestBlob(b.digest, b.size, b.media_type) for b in lm.blobs) if lm else ()
        out.append(ManifestModel(name=m.name, tag=m.tag, digest=m.digest, format=m.format, volume=m.volume,
                                 path=m.path, role=m.role, media_type=(lm.media_type if lm else None) or "",
                                 size=lm.size if lm else 0, blobs=blobs))
    return tuple(out)


def bundle_names(ri: ReleaseInput, since: DeltaBase | None = None) -> tuple[str, str]:
    """``(top directory, file name)`` of the bundle; a delta is named after its base."""
    if since is None:
        return ri.top, ri.filename
    return (delta_top(ri.lab.name, ri.profile, ri.version, since.version),
            delta_filename(ri.lab.name, ri.profile, ri.version, since.version))


def plan_bundle(ri: ReleaseInput, *, platforms: tuple[str, ...], image_members: Iterable[BundleFile] = (),
                sign_key=None, sources: Mapping[str, str] | None = None, epoch: int = DEFAULT_MTIME,
                since: DeltaBase | None = None) -> BundlePlan:
    """Render every file of the bundle, its manifest, provenance, SHA256SUMS and (with a key) the signatures.

    ``sources``: the lab's source files (path -> text) the provenance names by
    sha256; ``epoch``: the build epoch it records (the archive mtime).
    ``since``: a delta bundle (``builder.bundle.delta``): named after its base, its
    manifest says what it relies on.
    """
    top, filename = bundle_names(ri, since)
    lock = closure_lock(ri.lock, ri.services)
    members = [BundleFile(n, data=t.encode("utf-8")) for n, t in render_text_files(ri).items()]
    members.append(BundleFile(LOCK_FILE, data=lock.dumps().encode("utf-8")))
    script = install_script()
    if script is not None:
        members.append(BundleFile(INSTALL_SCRIPT, data=script, executable=True))
    members.extend(image_members)
    hashes = {f.arcname: f.sha256() for f in members}
    manifest = Manifest(
        lab=ri.lab.name, name=top, version=ri.version, since=since, profile=ri.profile, inputs=ri.lock.inputs,
        labbuild=ri.labbuild_version, offline=ri.offline, platforms=tuple(platforms),
        services=manifest_services(ri),
        files={f.arcname: FileEntry(sha256=hashes[f.arcname], size=f.size) for f in members})
    manifest_bytes = manifest.dumps()
    members.append(BundleFile(MANIFEST, data=manifest_bytes))
    hashes[MANIFEST] = sha256_bytes(manifest_bytes)
    build = BuildInfo(lab=ri.lab.name, profile=ri.profile, version=ri.version, inputs=ri.lock.inputs,
                      sources={path: sha256_bytes(text.encode("utf-8")) for path, text in (sources or {}).items()},
                      build_epoch=epoch)
    statement = provenance_statement(provenance_subjects(manifest, manifest_bytes), build,
                                     labbuild_version=ri.labbuild_version)
    provenance = render_provenance(statement, sign_key)
    members.append(BundleFile(PROVENANCE, data=provenance))
    hashes[PROVENANCE] = sha256_bytes(provenance)
    members.append(BundleFile(SUMS, data=render_sums(hashes)))
    signed_by = None
    if sign_key is not None:
        members.append(BundleFile(SIGNATURE, data=sign(sign_key, manifest_bytes)))
        members.append(BundleFile(SIGSTORE, data=render_message_bundle(sign_key, manifest_bytes)))
        signed_by = fingerprint(sign_key.public_key())
    return BundlePlan(top=top, filename=filename, files=tuple(members), manifest=manifest,
                      manifest_bytes=manifest_bytes, lock=lock, compressed=not ri.offline,
                      platforms=platforms, signed_by=signed_by)


def write_archive(plan: BundlePlan, dest: Path, *, mtime: int,
                  accept: Callable[[str, str], None] | None = None, progress: Any = None) -> tuple[str, str]:
    """Write ``plan`` to ``dest`` atomically; return ``(archive sha256, tar sha256)``.

    The archive is built in a temp file beside ``dest`` (``fsutil.atomic_writer``:
    fsync, rename) and renamed only when ``accept(archive_sha, tar_sha)`` (if
    given) does not raise. An image bundle shows a packing bar on a TTY
    (``progress``: None = when stderr is a terminal, False = never).
    """
    total = None if plan.compressed else sum(f.size for f in plan.files)
    with _packing_bar(plan.filename, total, progress) as on_bytes, atomic_writer(dest) as fh:
        if plan.compressed:
            outer = HashingWriter(fh)
            with gzip_writer(outer) as gz:
                tar_sha = write_tar(gz, plan.top, plan.files, mtime=mtime, progress=on_bytes)
            archive_sha = outer.hash.hexdigest()
        else:  # the archive is the tar stream: hash its (GiB of image) bytes once, not twice
            with WriteBehind(fh, sync_every=SYNC_EVERY) as out:
                tar_sha = archive_sha = write_tar(out, plan.top, plan.files, mtime=mtime, progress=on_bytes)
        if accept:
            accept(archive_sha, tar_sha)
    return archive_sha, tar_sha


@contextlib.contextmanager
def _packing_bar(filename: str, total: int | None, progress: Any) -> Iterator[Callable[[int], None] | None]:
    """A rich bar over the bytes packed into an image bundle; nothing for small bundles."""
    if total is None or progress is False:
        yield None
        return
    with progress_display(None if progress is None else bool(progress)) as bars:
        task = bars.add_task(f"packing {filename}", total=total)
        yield lambda n: bars.advance(task, n)
