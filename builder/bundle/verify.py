"""Verifying bundles: one typed verdict, one verify-while-reading pass, one safe extract.

``read_verified(path, keep=..., stream=...)`` is the single pass every
consumer builds on: it walks the archive once (``reader.walk_bundle``),
hashes every member, keeps the bytes of the small files asked for, hands
image blobs to ``stream`` (install feeds ``docker load``; ``safe_extract``
writes files) and then checks everything against ``SHA256SUMS``,
``manifest.json`` and, with a key, the signature (``check_contents``).
Callers that consumed blobs while reading must discard what they made when
the verdict is not ok — nothing is trusted before the whole archive checked.
The members outside ``images/blobs/`` are held to the totals of
``builder.limits`` (``reader.SizeBudget``): claims over them are refused before
reading, and a member over them ends the pass unread.

- ``verify_bundle(path, key=None) -> VerifyResult``: an archive or an
  extracted bundle directory; never raises for a bad bundle.
- ``unpack(path, key=None, keep=every file, stream=None, on_bytes=None) -> VerifyResult``: the
  small files kept in memory (``.contents``), BundleError when anything is wrong.
- ``safe_extract(path, dest, key=None) -> dest``: ``dest`` becomes the bundle's
  top directory, written only when the bundle verified.

The trust state (``signed``, ``provenance``) is decided from what the checksums and
the signature cover, never from a file's presence alone: the signature files and
SHA256SUMS are signed by nothing, so they can be removed, emptied or added. Signed
means manifest.json.sig holds a signature in form — an empty or garbled one is
damage, refused, never "signed" (with or without a key). Provenance is required
when manifest.json says labbuild ``PROVENANCE_SINCE`` or later made the bundle; in
such a bundle the provenance is signed exactly when the manifest is (``release
--sign`` signs both). Every reader (``verify``, install, diff, mirror, sbom, export)
gets its verdict here.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from ..errors import BundleError, Problem
from ..format.delta import delta_summary
from ..format.files import (
    IMAGE_BLOBS_PREFIX,
    IMAGE_SHA256_BLOBS,
    MANIFEST,
    PROVENANCE,
    PROVENANCE_SINCE,
    SIGNATURE,
    SIGSTORE,
    SUMS,
    TRUST_FILES,
    UNLISTED,
    UNSUMMED,
    must_carry_provenance,
)
from ..format.manifest import Manifest, provenance_subjects
from ..format.sums import parse_sums
from ..limits import MAX_PROBLEMS, MAX_SMALL_FILE_BYTES
from ..provenance import read_provenance, subject_problems
from ..signing import load_public_key, signature_form_problem, signature_valid
from ..sigstore_bundle import parse_message_bundle, verify_message_bundle
from .reader import ScannedBundle, peek_budget, read_member, scan_directory, walk_bundle

SMALL_FILE_LIMIT = MAX_SMALL_FILE_BYTES   # a non-blob file larger than this is not a bundle file


class BlobStream(Protocol):
    """Where an image blob's bytes go while they are verified."""

    def write(self, block: bytes) -> object: ...

    def close(self) -> None: ...


# stream(rel, size, scan so far) -> a BlobStream, or None to only hash the blob
StreamFactory = Callable[[str, int, ScannedBundle], "BlobStream | None"]


@dataclass
class VerifyResult:
    ok: bool
    errors: list[Problem]
    manifest: Manifest | None
    signed: bool = False
    signature_checked: bool = False
    top: str | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False)
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)   # the small files kept
    modes: dict[str, int] = field(default_factory=dict, repr=False)
    provenance: str = "absent"              # signed | unsigned | unreadable | absent (ok only before labbuild 0.2)

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        out = {"ok": self.ok, "errors": [e.to_json() for e in self.errors], "signed": self.signed,
               "signature_checked": self.signature_checked, "name": self.top, "provenance": self.provenance,
               "version": m.version if m else None, "profile": m.profile if m else None}
        if m is not None and m.since is not None:
            out["delta"] = delta_summary(m).to_json()
        return out


def check_contents(files: dict[str, tuple[str, int]], kept: dict[str, bytes], *, top: str | None,
                   key=None) -> tuple[list[Problem], Manifest | None, bool, bool]:
    """Check hashed ``files`` against SHA256SUMS, the manifest and the signature.

    Returns ``(problems, manifest, signed, signature_checked)``. Pure: works on
    a scanned archive or on a directory's files alike.
    """
    problems: list[Problem] = []
    model = None
    if MANIFEST not in kept:
        problems.append(Problem(file=MANIFEST, path="", message="missing", hint="not a labbuild bundle?"))
    else:
        try:
            model = Manifest.loads(kept[MANIFEST])
        except BundleError as exc:
            problems.append(Problem(file=MANIFEST, path="", message=exc.message, hint=exc.hint))
    if model is not None and top is not None and model.name != top:
        problems.append(Problem(file=MANIFEST, path="name",
                                message=f"names {model.name!r} but the top directory is {top!r}"))
    if SUMS not in kept:
        problems.append(Problem(file=SUMS, path="", message="missing"))
    else:
        sums = parse_sums(kept[SUMS], problems)
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
    signature_problems, signed, checked = _signature(kept, key)
    problems += signature_problems
    if SIGSTORE in kept and MANIFEST in kept:
        problems += _sigstore_problems(kept[SIGSTORE], kept[MANIFEST], key)
    if PROVENANCE in kept and model is not None:
        problems += _provenance_problems(kept[PROVENANCE], model, kept[MANIFEST], key, signed)
    elif model is not None and must_carry_provenance(model.labbuild):
        problems.append(Problem(file=PROVENANCE, path="", message=(
            f"missing: manifest.json says labbuild {model.labbuild} made this bundle, and every bundle "
            f"since labbuild {PROVENANCE_SINCE} carries its provenance"),
            hint="the provenance was removed from the bundle: do not trust it; copy it again from its source"))
    return problems, model, signed, checked


def _signature(kept: dict[str, bytes], key) -> tuple[list[Problem], bool, bool]:
    """``(problems, signed, signature_checked)`` of manifest.json.sig. Signed means a signature
    in form is present (an empty or garbled file is damage, reported, never "signed");
    checked means it verified with ``key``."""
    if SIGNATURE not in kept:
        if key is None:
            return [], False, False
        return [Problem(file=SIGNATURE, path="", message="bundle is not signed",
                        hint="ask for a bundle made with `labbuild release --sign KEY`")], False, False
    why = signature_form_problem(kept[SIGNATURE])
    if why is not None:
        return [Problem(file=SIGNATURE, path="", message=why,
                        hint="the signature file is damaged or was altered: the bundle is not signed "
                             "by anyone; copy it again from its source")], False, False
    if key is None:
        return [], True, False
    if MANIFEST in kept and signature_valid(key, kept[SIGNATURE], kept[MANIFEST]):
        return [], True, True
    return [Problem(file=SIGNATURE, path="", message="signature does not match manifest.json for this key",
                    hint="the bundle was altered, or signed with another key")], True, False


def _sigstore_problems(raw: bytes, manifest: bytes, key) -> list[Problem]:
    """The Sigstore bundle must be well formed, name manifest.json's digest, and (with a key) verify."""
    try:
        if key is not None:
            verify_message_bundle(raw, manifest, key)
        else:
            parse_message_bundle(raw)
    except BundleError as exc:
        return [Problem(file=SIGSTORE, path="", message=exc.message, hint=exc.hint)]
    return []


def _provenance_problems(raw: bytes, manifest: Manifest, manifest_bytes: bytes, key, signed: bool) -> list[Problem]:
    """The provenance must be a well-formed envelope whose subjects are this bundle; with a key, signed by it.
    labbuild signs both or neither (``release --sign``): a bundle whose manifest must carry provenance and
    whose signature and provenance disagree on being signed had one of them swapped or stripped."""
    try:
        provenance = read_provenance(raw, key)
    except BundleError as exc:
        return [Problem(file=PROVENANCE, path="", message=exc.message, hint=exc.hint)]
    problems = [Problem(file=PROVENANCE, path="subject", message=m, hint="the provenance is not this bundle's")
                for m in subject_problems(provenance, provenance_subjects(manifest, manifest_bytes))]
    if must_carry_provenance(manifest.labbuild) and provenance.signed != signed:
        problems.append(Problem(file=PROVENANCE, path="signatures", message=(
            "signed, but the bundle carries no signature (manifest.json.sig)" if provenance.signed
            else "unsigned, but the bundle is signed (manifest.json.sig)"),
            hint="labbuild signs both or neither: one of them was replaced or removed"))
    return problems


def _public_key(key):
    return load_public_key(Path(key)) if isinstance(key, (str, Path)) else key


def _capped(errors: list[Problem]) -> list[Problem]:
    """At most ``MAX_PROBLEMS`` problems, then one that counts the rest."""
    if len(errors) <= MAX_PROBLEMS:
        return errors
    return errors[:MAX_PROBLEMS] + [Problem(file="(bundle)", path="",
                                            message=f"and {len(errors) - MAX_PROBLEMS} more problems")]


def _verdict(scan: ScannedBundle, key, *, top: str | None) -> VerifyResult:
    if scan.stopped:       # what was not read is not reported missing: the refusal says why
        return VerifyResult(ok=False, errors=_capped(scan.problems), manifest=None, top=scan.top)
    problems, manifest, signed, checked = check_contents(scan.files, scan.kept, top=top, key=key)
    errors = _capped(scan.problems + _misnamed_blobs(scan.files) + problems)
    return VerifyResult(ok=not errors, errors=errors, manifest=manifest, signed=signed, signature_checked=checked,
                        top=scan.top, files=scan.files, contents=scan.kept, modes=scan.modes,
                        provenance=_provenance_state(scan.kept.get(PROVENANCE)))


def _misnamed_blobs(files: dict[str, tuple[str, int]]) -> list[Problem]:
    """An image blob is named by its digest: bytes hashing to anything else are a swapped blob,
    even when SHA256SUMS was rewritten to match them (without ``--key`` nothing else would say so)."""
    return [Problem(file=rel, path="", message=f"its bytes hash to sha256:{sha}, not to the digest its name says",
                    hint="the blob was replaced or damaged; copy or rebuild the bundle")
            for rel, (sha, _) in sorted(files.items())
            if rel.startswith(IMAGE_SHA256_BLOBS) and rel[len(IMAGE_SHA256_BLOBS):] != sha]


def _provenance_state(raw: bytes | None) -> str:
    if raw is None:
        return "absent"
    try:
        return "signed" if read_provenance(raw).signed else "unsigned"
    except BundleError:
        return "unreadable"


def read_verified(path: Path, *, key=None, keep: Callable[[str], bool] = TRUST_FILES.__contains__,
                  stream: StreamFactory | None = None, on_bytes: Callable[[int], None] | None = None,
                  blob_names: bool = False) -> VerifyResult:
    """The one verify-while-reading pass over an archive (see the module docstring).

    ``blob_names=True`` (an uncompressed archive) leaves image blobs unread:
    each stands for the digest its name says, and the caller must re-hash
    every blob it uses before trusting it (``reader.BlobRanges.chunks`` does;
    ``labbuild mirror`` pushes manifests only after every blob it read matched).
    """
    key = _public_key(key)
    scan = ScannedBundle()
    budget = peek_budget(Path(path))
    if budget.refusal is not None:
        return VerifyResult(ok=False, errors=[budget.refusal], manifest=None)

    def on_file(rel: str, member: tarfile.TarInfo, fh: BinaryIO) -> None:
        if blob_names and rel.startswith(IMAGE_BLOBS_PREFIX):
            scan.files[rel] = (rel.rsplit("/", 1)[1], member.size)
            return
        if rel.startswith(IMAGE_BLOBS_PREFIX):
            sink = stream(rel, member.size, scan) if stream is not None else None
            read = read_member(fh, sink=sink.write if sink is not None else None, on_bytes=on_bytes)
            if sink is not None:
                sink.close()
        else:
            wanted = keep(rel)
            if wanted and member.size > SMALL_FILE_LIMIT:
                scan.problems.append(Problem(file=rel, path="",
                                             message=f"{member.size} bytes: too big for a bundle file"))
                return
            read = read_member(fh, keep=wanted, on_bytes=on_bytes)
            if read.data is not None:
                scan.kept[rel] = read.data
        scan.files[rel] = (read.sha256, read.size)

    walk_bundle(Path(path), scan, on_file, budget)
    if scan.top is None and not scan.problems:
        scan.problems.append(Problem(file=str(path), path="", message="no top directory in the archive"))
    return _verdict(scan, key, top=scan.top)


def verify_bundle(path: str | Path, key: str | Path | Any = None) -> VerifyResult:
    """Verify an archive, or an extracted bundle directory.

    ``key``: a public key or the path of one. A directory's name need not be
    the bundle's top directory (installs rename it), so that check is skipped.
    """
    path = Path(path)
    if path.is_dir():
        return _verdict(scan_directory(path, TRUST_FILES), _public_key(key), top=None)
    return read_verified(path, key=key)


def _raise_unless_ok(path: Path, result: VerifyResult, message: str) -> VerifyResult:
    if not result.ok:
        raise BundleError(f"{path} {message} ({len(result.errors)} problem(s))", problems=result.errors,
                          hint="do not install it; copy or rebuild the bundle")
    return result


def require_verified(path: str | Path, key=None) -> VerifyResult:
    """``verify_bundle``, raising BundleError listing every problem when it fails."""
    return _raise_unless_ok(Path(path), verify_bundle(path, key), "failed verification")


def unpack(path: str | Path, *, key=None, keep: Callable[[str], bool] = lambda rel: True,
           stream: StreamFactory | None = None, on_bytes: Callable[[int], None] | None = None) -> VerifyResult:
    """Verify the archive, keeping the small files ``keep`` says (every one unless told) in memory;
    BundleError when anything is wrong."""
    result = read_verified(Path(path), key=key, keep=keep, stream=stream, on_bytes=on_bytes)
    return _raise_unless_ok(Path(path), result, "failed verification: nothing was installed")


class _FileStream:
    def __init__(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(target, "xb")

    def write(self, block: bytes) -> object:
        return self._fh.write(block)

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def write_tree(root: Path, contents: dict[str, bytes], modes: dict[str, int]) -> None:
    """Write verified small files under ``root`` (fsynced, with their bundle modes)."""
    for rel, data in sorted(contents.items()):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(target, modes.get(rel, 0o644))


def safe_extract(bundle_path: str | Path, dest: str | Path, key=None) -> Path:
    """Verify while extracting into a temp dir beside ``dest``, then rename it to ``dest``
    (the bundle's top directory: ``dest/compose.yaml``). ``dest`` must not exist;
    nothing appears there unless the whole bundle verified."""
    bundle_path, dest = Path(bundle_path), Path(dest)
    if dest.exists() or dest.is_symlink():
        raise BundleError(f"{dest} already exists", hint="extract into a new directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        result = unpack(bundle_path, key=key, stream=lambda rel, size, scan: _FileStream(tmp / rel))
        write_tree(tmp, result.contents, result.modes)
        for rel in result.files:
            if rel.startswith(IMAGE_BLOBS_PREFIX):
                os.chmod(tmp / rel, result.modes.get(rel, 0o644))
        for d in sorted(p for p in tmp.rglob("*") if p.is_dir()):
            os.chmod(d, 0o755)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
