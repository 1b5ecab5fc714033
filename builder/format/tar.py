"""The one tar-header writer: bundles (``bundle.archive``), backups (``backups.backupfile``),
model placement (``install.models``) and the docker load stream (``install.unpack`` through
``host.engine``) all build their member headers here, from ``tarfile.TarInfo.tobuf``.

A header's bytes depend only on the arguments: owner 0/0 with empty names, the given
mtime and mode. Three dialects are used, each for a reason: PAX (bundles, model placement:
long names), USTAR (the docker load stream: what ``docker load`` reads everywhere) and GNU
(backups: a size beyond 8 GiB fits the same 512-byte header in base-256, so rewriting a
reserved member's header never moves data).
"""

from __future__ import annotations

import tarfile

BLOCK = 512
END = b"\0" * (2 * BLOCK)          # two zero blocks end an archive

PAX, USTAR, GNU = tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT
FILE, DIRECTORY, HARDLINK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE


def tar_info(name: str, size: int = 0, *, kind: bytes = FILE, mode: int | None = None, mtime: int = 0,
             link: str = "") -> tarfile.TarInfo:
    """A member's TarInfo: owner 0/0 without names; mode 0o755 for directories, else 0o644, unless given."""
    info = tarfile.TarInfo(name)
    info.size = size if kind == FILE else 0
    info.type, info.linkname, info.mtime = kind, link, mtime
    info.mode = mode if mode is not None else (0o755 if kind == DIRECTORY else 0o644)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def info_header(info: tarfile.TarInfo, dialect: int = PAX) -> bytes:
    """The header bytes of ``info`` (names that do not encode are kept as surrogate escapes)."""
    return info.tobuf(dialect, tarfile.ENCODING, "surrogateescape")


def tar_header(name: str, size: int = 0, *, kind: bytes = FILE, mode: int | None = None, mtime: int = 0,
               link: str = "", dialect: int = PAX) -> bytes:
    """The header bytes of one member (see ``tar_info``)."""
    return info_header(tar_info(name, size, kind=kind, mode=mode, mtime=mtime, link=link), dialect)


def padding(size: int) -> bytes:
    """The zero bytes that fill a member's data of ``size`` bytes up to the next block."""
    return b"\0" * (-size % BLOCK)


def padded(size: int) -> int:
    """``size`` rounded up to whole blocks."""
    return size + (-size % BLOCK)
