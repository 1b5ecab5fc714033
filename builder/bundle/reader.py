"""Reading bundle archives: one streaming walk, one hashing reader.

``walk_bundle`` streams every member of an archive once (gzip or plain tar),
refuses unsafe members (absolute paths, ``..``, links, devices, duplicates,
anything outside the top directory) and hands each safe regular file to a
callback. ``read_member`` is the one loop that hashes a member while it is
read, optionally keeping its bytes or passing each block on (to a file,
to ``docker load``). ``scan_directory`` does the same for an extracted bundle
directory. Verification (``builder.bundle.verify``) is built on these.

``SizeBudget`` holds a bundle's members outside ``images/blobs/`` to the totals of
``builder.limits`` (the SBOM documents apart): checked against manifest.json's sizes
before reading (``peek_budget``), then member by member before each is read, so a
gzip of zeros that unpacks to gigabytes of "small files" is refused, not held.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping

from ..errors import BundleError, Problem
from ..format.files import IMAGE_BLOBS_PREFIX, IMAGE_SHA256_BLOBS, MANIFEST, SBOM_DIR
from ..format.manifest import Manifest
from ..fsutil import CapExceeded, read_capped, sha256_file
from ..limits import (
    MAX_MANIFEST_BYTES,
    MAX_MEMBERS,
    MAX_SBOMS_TOTAL_BYTES,
    MAX_SMALL_FILES_TOTAL_BYTES,
    MiB,
)

BLOCK = 1 << 20


@dataclass
class ScannedBundle:
    """What one pass over an archive (or a directory) found."""

    top: str | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict)   # rel path -> (sha256, size)
    kept: dict[str, bytes] = field(default_factory=dict)              # bytes of the files asked for
    modes: dict[str, int] = field(default_factory=dict)               # rel path -> 0o644 | 0o755
    problems: list[Problem] = field(default_factory=list)
    stopped: bool = False         # a SizeBudget refusal ended the pass: what came after was not read


@dataclass(frozen=True)
class ReadMember:
    sha256: str
    size: int
    data: bytes | None


def read_member(fh: BinaryIO, *, keep: bool = False, sink: Callable[[bytes], object] | None = None,
                on_bytes: Callable[[int], None] | None = None) -> ReadMember:
    """Read ``fh`` to its end, hashing it; keep the bytes and/or pass each block to ``sink``."""
    h, size, parts = hashlib.sha256(), 0, [] if keep else None
    while block := fh.read(BLOCK):
        h.update(block)
        size += len(block)
        if parts is not None:
            parts.append(block)
        if sink is not None:
            sink(block)
        if on_bytes is not None:
            on_bytes(len(block))
    return ReadMember(h.hexdigest(), size, b"".join(parts) if parts is not None else None)


# the totals a bundle's members outside images/blobs/ count against: cap, what they are
_TOTALS = {"files": (MAX_SMALL_FILES_TOTAL_BYTES, "files outside images/blobs/ (SBOMs apart)"),
           "sboms": (MAX_SBOMS_TOTAL_BYTES, "SBOM documents (sbom/*.cdx.json)")}
_OVER_HINT = ("not a bundle labbuild wrote: a release's files outside images/blobs/ come to well under "
              "1 MiB; do not install it")


def size_class(rel: str) -> str | None:
    """The total of ``_TOTALS`` a bundle member counts against; None for an image blob
    (blobs are streamed, never held, and the lock decides their sizes)."""
    if rel.startswith(IMAGE_BLOBS_PREFIX):
        return None
    return "sboms" if rel.startswith(SBOM_DIR + "/") and rel.endswith(".cdx.json") else "files"


def _mib(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n / MiB:,.1f} MiB ({n:,} bytes)"


class SizeBudget:
    """The bytes of one bundle's members outside ``images/blobs/``, against ``builder.limits``'
    totals (``_TOTALS``). A refusal stops whoever reads the bundle: nothing more is read.

    ``claim(sizes)``: manifest.json's sizes (unverified), before reading: refused when they add
    up over a cap. ``admit(rel, size)``: before each member is read (``size`` from its tar header,
    or stat): refused when it is bigger than claimed, or the running total goes over a cap.
    """

    def __init__(self) -> None:
        self.claims: dict[str, int] = {}
        self.used = dict.fromkeys(_TOTALS, 0)
        self.refusal: Problem | None = None

    def claim(self, sizes: Mapping[str, int]) -> Problem | None:
        self.claims = dict(sizes)
        totals = dict.fromkeys(_TOTALS, 0)
        for rel, size in self.claims.items():
            if (kind := size_class(rel)) is not None:
                totals[kind] += size
        for kind, total in totals.items():
            cap, what = _TOTALS[kind]
            if total > cap and self.refusal is None:
                self.refusal = Problem(file=MANIFEST, path="files", hint=_OVER_HINT,
                                       message=f"lists {_mib(total)} of {what}: over the cap of {_mib(cap)} "
                                               "for them all")
        return self.refusal

    def admit(self, rel: str, size: int) -> Problem | None:
        kind = size_class(rel)
        if self.refusal is not None or kind is None:
            return self.refusal
        claimed = self.claims.get(rel)
        self.used[kind] += size
        cap, what = _TOTALS[kind]
        if claimed is not None and size > claimed:
            self.refusal = Problem(file=rel, path="", hint=_OVER_HINT,
                                   message=f"{size:,} bytes, more than the {claimed:,} manifest.json lists: "
                                           "reading stopped")
        elif self.used[kind] > cap:
            self.refusal = Problem(file=rel, path="", hint=_OVER_HINT,
                                   message=f"{what} come to more than the cap of {_mib(cap)} for them all: "
                                           "reading stopped")
        return self.refusal

    def error(self, where: str | Path) -> BundleError:
        """The refusal as a BundleError, for readers with no verdict to put it in."""
        r = self.refusal
        return BundleError(f"{where}: {r.file}: " + (f"{r.path}: " if r.path else "") + r.message, hint=r.hint)


def member_problem(name: str, member: tarfile.TarInfo, top: str | None) -> str | None:
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


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic (False when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive as a tar read front to back; BundleError when it is not one.

    An uncompressed tar in a regular file (an image bundle) is read with seeks
    ("r:"): member data comes straight from the file in the reader's blocks, and
    members nobody reads are skipped without reading them. tarfile's stream mode
    ("r|*", for gzip) re-buffers everything in 10 KiB pieces: verifying a 1 GiB
    image bundle took 3.2 s that way and takes 1.6 s with seeks (page cache warm).
    """
    seekable = Path(path).is_file() and not is_gzip(Path(path))
    try:
        tar = tarfile.open(path, mode="r:" if seekable else "r|*")
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
                on_file: Callable[[str, tarfile.TarInfo, BinaryIO], None], budget: SizeBudget | None = None) -> None:
    """Stream every member once: record unsafe ones in ``scan.problems`` (and skip
    them), set ``scan.top``, and hand each safe regular file to
    ``on_file(rel_path, member, fileobj)``, which must read it before returning
    (in an uncompressed archive it may also leave it unread, at no cost).
    With a ``budget`` (a bundle), a member it refuses ends the walk, unread.
    """
    seen: set[str] = set()
    with open_archive(path) as tar:
        try:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    scan.problems.append(Problem(file=str(path), path="", message=f"more than {MAX_MEMBERS} members",
                                                 hint="not a labbuild bundle"))
                    return
                name = member.name
                norm = name.rstrip("/")
                if scan.top is None and norm and "/" not in norm and member.isdir():
                    scan.top = norm
                why = member_problem(name, member, scan.top)
                if why is None and norm in seen:
                    why = "duplicate member name refused"
                seen.add(norm)
                rel = norm.split("/", 1)[1] if "/" in norm else ""
                if why:
                    scan.problems.append(Problem(file=rel or name, path="", message=why))
                    continue
                if member.isreg():
                    if budget is not None and (refusal := budget.admit(rel, member.size)) is not None:
                        scan.problems.append(refusal)
                        scan.stopped = True
                        return
                    scan.modes[rel] = 0o755 if member.mode & 0o111 else 0o644
                    on_file(rel, member, tar.extractfile(member))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            scan.problems.append(Problem(file=str(path), path="",
                                         message=f"archive is corrupt or truncated ({exc})",
                                         hint="copy the bundle again"))


def peek_files(path: Path, wanted: Callable[[str], bool], cap: int) -> dict[str, bytes]:
    """The small files ``wanted`` (rel path -> bytes, each at most ``cap``) of an uncompressed
    archive, found by seeking from header to header: no blob is read. Unverified: for
    deciding early what the verifying pass will check. ``{}`` for a compressed or unreadable
    archive, or one over the totals of ``SizeBudget`` (the verifying pass reports what is
    wrong with it)."""
    out: dict[str, bytes] = {}
    budget = SizeBudget()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    return {}
                parts = member.name.split("/", 1)
                if len(parts) != 2 or not member.isreg():
                    continue
                if budget.admit(parts[1], member.size) is not None:
                    return {}
                if member.size <= cap and wanted(parts[1]):
                    out[parts[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError):
        return {}
    return out


def _peeked_manifest(path: Path, budget: SizeBudget, *, past_blobs: bool) -> Manifest | None:
    """manifest.json of the archive, its sizes claimed in ``budget``; None when there is none.
    A plain tar is read by seeking: no other member is read. In a gzip one the members before
    it must be read to get past: held to their own ``SizeBudget`` (a refusal is ``budget``'s),
    and with ``past_blobs=False`` an image blob is not read past (None)."""
    compressed = is_gzip(Path(path))
    skipped = SizeBudget()
    with open_archive(path) as tar:
        try:
            for count, member in enumerate(tar, start=1):
                parts = member.name.split("/", 1)
                if count > MAX_MEMBERS:
                    return None
                if len(parts) != 2 or not member.isreg():
                    continue
                if compressed and size_class(parts[1]) is None and not past_blobs:
                    return None
                if compressed and (refusal := skipped.admit(parts[1], member.size)) is not None:
                    budget.refusal = refusal
                    return None
                if parts[1] == MANIFEST and member.size <= MAX_MANIFEST_BYTES:
                    manifest = Manifest.loads(tar.extractfile(member).read(), f"{path}: {MANIFEST}")
                    budget.claim({rel: entry.size for rel, entry in manifest.files.items()})
                    return manifest
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise BundleError(f"{path}: archive is corrupt or truncated ({exc})",
                              hint="copy the bundle again") from None
    return None


def peek_manifest(path: Path) -> Manifest:
    """The unverified manifest.json of a bundle archive — the one peek at it before verification
    (doctor, install's preflight of supplied secrets): read with seeks from header to header in a
    plain tar (no blob is read), front to back in a gzip one, stopping at it. BundleError when the
    archive cannot be read, holds no manifest.json, or a malformed one, or when the files it
    lists (or the members before it) are over a total of ``SizeBudget``."""
    budget = SizeBudget()
    manifest = _peeked_manifest(path, budget, past_blobs=True)
    if budget.refusal is not None:
        raise budget.error(path)
    if manifest is None:
        raise BundleError(f"{path}: no {MANIFEST} in the archive", hint="pass a bundle made by `labbuild release`")
    return manifest


def peek_budget(path: Path) -> SizeBudget:
    """A ``SizeBudget`` for reading the bundle archive ``path``, holding the sizes its
    manifest.json claims when that is found before any blob is read (by seeking in a plain
    tar; a gzip one, front to back, gives up at a blob: labbuild writes them first). Its
    ``refusal`` is set when the claims, or the members before manifest.json, are over a total;
    no claims when there is no readable manifest.json (the verifying pass says why)."""
    budget = SizeBudget()
    try:
        _peeked_manifest(path, budget, past_blobs=False)
    except BundleError:
        pass
    return budget


def file_fingerprint(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or written to: device, inode, size, mtime, ctime
    (taken before a bundle verifies; whoever reads it again later checks it is unchanged)."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def scan_bundle(path: str | Path, keep: Iterable[str]) -> ScannedBundle:
    """Hash every member of the archive in one pass, keeping the bytes of the files in ``keep``."""
    keep = set(keep)
    scan = ScannedBundle()

    def on_file(rel: str, member: tarfile.TarInfo, fh: BinaryIO) -> None:
        read = read_member(fh, keep=rel in keep)
        scan.files[rel] = (read.sha256, read.size)
        if read.data is not None:
            scan.kept[rel] = read.data

    walk_bundle(Path(path), scan, on_file)
    return scan


def scan_directory(path: Path, keep: Iterable[str]) -> ScannedBundle:
    """Like ``scan_bundle``, for an extracted bundle directory (e.g. an installed release):
    each file's size (stat) admitted by a ``SizeBudget`` before it is read."""
    keep = set(keep)
    scan = ScannedBundle(top=path.name)
    budget = SizeBudget()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            scan.problems.append(Problem(file=rel, path="", message="link or special file refused"))
        elif p.is_file():
            size = p.stat().st_size
            if (refusal := budget.admit(rel, size)) is not None:
                scan.problems.append(refusal)
                scan.stopped = True
                return scan
            scan.files[rel] = (sha256_file(p), size)
            if rel in keep:
                try:
                    scan.kept[rel] = read_capped(p, size)
                except CapExceeded:
                    scan.problems.append(Problem(file=rel, path="", message="changed while it was read"))
    return scan


class BlobRanges:
    """Random access to the blobs of a bundle archive, for concurrent readers: the one blob
    reader (``mirror``, model placement).

    Built from one header-only scan of the tar (``offset_data`` of every member) of an
    uncompressed (image) bundle. Use it after the bundle verified
    (``verify.read_verified``, with ``blob_names=True`` when every blob used is read
    through here): ``chunks`` re-hashes what it reads and raises BundleError at the end of
    a blob whose bytes are not its digest, unless ``check=False`` (a caller that vouches
    for the bytes otherwise: model placement checks that the file is still the one that
    verified). ``compressed=True`` also accepts a gzip-compressed archive, read through
    tarfile (``plain`` is then False: there are no byte ranges to ``sendfile``).
    """

    def __init__(self, path: Path, *, compressed: bool = False) -> None:
        self.path = Path(path)
        self.ranges: dict[str, tuple[int, int]] = {}     # "sha256:<hex>" -> (offset, size)
        self.plain = not (compressed and is_gzip(self.path))
        self._members: dict[str, tarfile.TarInfo] = {}
        self._tar: tarfile.TarFile | None = None
        try:
            tar = tarfile.open(self.path, mode="r:" if self.plain else "r:gz")
            for member in tar:
                parts = member.name.split("/", 1)
                if member.isreg() and len(parts) == 2 and parts[1].startswith(IMAGE_SHA256_BLOBS):
                    digest = "sha256:" + parts[1].rsplit("/", 1)[1]
                    self.ranges[digest] = (member.offset_data, member.size)
                    self._members[digest] = member
            if self.plain:
                tar.close()
            else:
                self._tar = tar
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise BundleError(f"{path}: not an uncompressed image bundle ({exc})",
                              hint="mirror reads the .tar written by `labbuild release --with-images`") from None

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __contains__(self, digest: str) -> bool:
        return digest in self.ranges

    def size(self, digest: str) -> int:
        return self.ranges[digest][1]

    def chunks(self, digest: str, on_bytes: Callable[[int], None] | None = None, *,
               check: bool = True) -> Iterator[bytes]:
        """The blob's bytes, BLOCK at a time, hashed as they go (checked at the end)."""
        offset, size = self.ranges[digest]
        h, left = hashlib.sha256(), size
        with contextlib.ExitStack() as stack:
            if self._tar is not None:
                fh = self._tar.extractfile(self._members[digest])
            else:
                fh = stack.enter_context(open(self.path, "rb"))
                fh.seek(offset)
            while left:
                block = fh.read(min(BLOCK, left))
                if not block:
                    break
                left -= len(block)
                if check:
                    h.update(block)
                if on_bytes is not None:
                    on_bytes(len(block))
                yield block
        if left or (check and "sha256:" + h.hexdigest() != digest):
            raise BundleError(f"{self.path}: blob {digest} does not match its digest: the bundle is damaged "
                              "or was changed", hint="copy or rebuild the bundle, then run it again")

    def read(self, digest: str) -> bytes:
        """A small blob (a manifest), whole and checked."""
        return b"".join(self.chunks(digest))
