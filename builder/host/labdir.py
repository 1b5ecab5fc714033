"""The install directory: which releases are unpacked, which is current, who holds it.

    DIR/releases/<version>/   one unpacked bundle per installed version (compose.yaml,
                              manifest.json, runbooks/, images/ metadata, ...), never
                              changed; image blobs are not kept: the engine holds them
    DIR/current  -> releases/<version>    the active release (symlink, switched atomically)
    DIR/previous -> releases/<version>    the release it replaced (for rollback)
    DIR/.env                  the generated secrets (mode 0600), kept across upgrades; the
                              operator's overrides of lab.env go here too
    DIR/compose.yaml          labbuild's pointer at the current release for plain `docker compose`
                              in DIR (builder.host.compose), rewritten with `current`
    DIR/.labbuild.lock        serialises labbuild commands on the same DIR
    DIR/audit.log             one JSON line per operation on the secrets, never a value
                              (builder.host.auditlog); only ever appended to, mode 0600
    DIR/.secrets-journal.json while `labbuild secrets rotate|set` runs: the keys, their old
                              and new values (mode 0600), so a re-run after a crash converges

A release's ``manifest.json`` is read through ``builder.format.manifest.Manifest``,
the one reader of that format.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .. import names
from ..bundle.verify import write_tree
from ..errors import BundleError, InstallError
from ..format.files import MANIFEST, SUMS, is_version
from ..format.manifest import Manifest
from ..fsutil import file_error

Say = Callable[[str], None]
RELEASES = "releases"
ENV_FILE = ".env"
WRAPPER = "compose.yaml"
WRAPPER_HEAD = "# Written by labbuild"       # first words of DIR/compose.yaml: labbuild's, not the operator's
LOCK_NAME = ".labbuild.lock"
AUDIT_FILE = "audit.log"
JOURNAL_FILE = ".secrets-journal.json"


def quiet(_: str) -> None:
    """A ``say`` that says nothing."""


def read_manifest(release: Path) -> Manifest:
    """The manifest of an unpacked release; InstallError when it is missing or damaged."""
    path = release / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InstallError(f"{path} is missing", hint="the release is incomplete; install the bundle again") from None
    except (NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        raise InstallError(f"{path}: cannot read ({exc.strerror})", hint="install the bundle again") from None
    try:
        return Manifest.loads(raw, str(path))
    except BundleError as exc:
        raise InstallError(exc.message, hint="the manifest is damaged; install the bundle again") from None


def safe_manifest(release: Path) -> Manifest | None:
    """The release's manifest, or None when it cannot be read."""
    try:
        return read_manifest(release)
    except InstallError:
        return None


def release_link(install_dir: Path, name: str) -> Path | None:
    """The release ``DIR/name`` (current, previous) points at, or None."""
    link = install_dir / name
    if not link.is_symlink():
        return None
    try:
        target = (install_dir / os.readlink(link)).resolve()
    except (OSError, RuntimeError) as exc:   # a symlink loop, or unreadable
        raise InstallError(f"{link}: cannot follow ({exc})",
                           hint=f"{link} must be a link to releases/<version>: remove it and install again") from None
    return target if target.is_dir() else None


def preflight(install_dir: Path) -> None:
    """Refuse an install dir whose labbuild-owned names are not what labbuild made.

    Read-only: it runs before anything in DIR is changed. ``current`` and
    ``previous`` must be links to ``releases/<version>``, ``.env`` a regular
    file, ``releases`` a directory — never links out of DIR (a user's file
    named ``current`` is theirs: labbuild does not replace it).
    """
    if install_dir.exists() and not install_dir.is_dir():
        raise InstallError(f"{install_dir} is not a directory", hint="pass a directory as --dir")
    for name in ("current", "previous"):
        link = install_dir / name
        if link.is_symlink():
            target = os.readlink(link)
            parts = target.split("/")
            if len(parts) != 2 or parts[0] != RELEASES or not is_version(parts[1]):
                raise InstallError(f"{link} points to {target!r}, not to {RELEASES}/<version>",
                                   hint=f"it was not made by labbuild: move it away, then install again")
            release_link(install_dir, name)           # refuses loops
        elif link.exists():
            raise InstallError(f"{link} exists and is not a link made by labbuild",
                               hint=f"move it out of {install_dir}; labbuild keeps its release links there")
    wrapper = install_dir / WRAPPER
    if wrapper.is_symlink() or (wrapper.exists() and (not wrapper.is_file() or not wrapper.read_bytes().startswith(
            WRAPPER_HEAD.encode()))):
        raise InstallError(f"{wrapper} exists and was not written by labbuild",
                           hint=f"move it out of {install_dir}: labbuild writes its own compose.yaml there "
                                "so that plain `docker compose` works in the install dir")
    env = install_dir / ENV_FILE
    if env.is_symlink() or (env.exists() and not env.is_file()):
        raise InstallError(f"{env} is not a regular file",
                           hint="labbuild writes the secrets there itself (mode 0600) and never follows a link; "
                                "replace it with the file's content")
    for name in (RELEASES, LOCK_NAME):
        path = install_dir / name
        if path.is_symlink():
            raise InstallError(f"{path} is a link", hint=f"labbuild never follows links out of {install_dir}: "
                                                         f"replace it with a real {'directory' if name == RELEASES else 'file'}")
    if (install_dir / RELEASES).exists() and not (install_dir / RELEASES).is_dir():
        raise InstallError(f"{install_dir / RELEASES} is not a directory", hint="move it away")


def check_no_interrupted_rotation(install_dir: Path) -> None:
    """InstallError when a `labbuild secrets rotate|set` was interrupted in DIR: its journal says which
    keys may hold which value where, and only finishing it makes them agree again."""
    if (install_dir / JOURNAL_FILE).exists():
        raise InstallError(f"{install_dir}: a `labbuild secrets rotate` or `set` was interrupted "
                           f"({install_dir / JOURNAL_FILE} is there); nothing was changed",
                           hint=f"finish it first: labbuild secrets rotate --dir {install_dir}")


def current_release(install_dir: Path) -> Path:
    """The active release directory of ``install_dir``; InstallError when there is none."""
    release = release_link(Path(install_dir), "current")
    if release is None:
        raise InstallError(f"{install_dir} holds no installed lab ({install_dir}/current is missing)",
                           hint="pass the --dir you gave to `labbuild install`")
    return release


def installed_releases(install_dir: Path) -> list[Path]:
    """Every unpacked release of ``install_dir`` (staging directories excluded)."""
    root = install_dir / RELEASES
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _point(install_dir: Path, name: str, release: Path) -> None:
    """Atomically make ``DIR/name`` a relative symlink to ``release``."""
    tmp = install_dir / f".{name}.new"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(release, install_dir), tmp)
    os.replace(tmp, install_dir / name)


def activate(install_dir: Path, release: Path) -> Path | None:
    """Point ``current`` at ``release`` and ``previous`` at what was current; return that."""
    old = release_link(install_dir, "current")
    if old is not None and old != release.resolve():
        _point(install_dir, "previous", old)
    _point(install_dir, "current", release)
    return old if old != release.resolve() else release_link(install_dir, "previous")


@contextlib.contextmanager
def dir_lock(install_dir: Path) -> Iterator[None]:
    """Hold ``DIR/.labbuild.lock`` for the block; InstallError when another command holds it."""
    install_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(install_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:   # every command that works on DIR holds its lock: it must be writable
        raise file_error(exc, install_dir / LOCK_NAME, "open the install dir's lock", InstallError) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"another labbuild command is working on {install_dir}",
                               hint="wait for it to finish and try again") from None
        yield
    finally:
        os.close(fd)


def stage(install_dir: Path, contents: dict[str, bytes], modes: dict[str, int]) -> Path:
    """Write a verified bundle's small files into a staging dir under ``DIR/releases/``."""
    staging = install_dir / RELEASES / f".incoming-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(parents=True)
        write_tree(staging, contents, modes)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise file_error(exc, exc.filename or staging, "unpack the release", InstallError) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _sums(release: Path) -> bytes | None:
    p = release / SUMS
    return p.read_bytes() if p.exists() else None


def place(staged: Path, install_dir: Path, say: Say) -> Path:
    """Move a staged release to ``DIR/releases/<version>/`` (reusing an identical one)."""
    version = read_manifest(staged).version        # a valid version: the one manifest reader checks it
    final = names.inside(install_dir / RELEASES, version)
    if final.exists():
        same = _sums(final) == _sums(staged)
        shutil.rmtree(staged, ignore_errors=True)
        if not same:
            raise InstallError(f"{final} already holds a different release {version}",
                               hint="releases are immutable: build the new bundle with a new version")
        say(f"release {version} is already unpacked in {final}")
        return final
    os.replace(staged, final)
    return final


@dataclass(frozen=True)
class LabDir:
    """An install dir as one typed view: its current and previous release, their manifests and
    ``.env`` — what status, check and doctor read (through here, never by path arithmetic)."""

    path: Path

    @classmethod
    def at(cls, install_dir: str | os.PathLike) -> "LabDir":
        return cls(Path(install_dir).expanduser().absolute())

    @property
    def env_file(self) -> Path:
        return self.path / ENV_FILE

    @property
    def current(self) -> Path:
        """The current release dir; InstallError when DIR holds no installed lab."""
        return current_release(self.path)

    @property
    def installed(self) -> Path | None:
        """The current release dir, or None when DIR holds no installed lab (yet)."""
        return release_link(self.path, "current")

    @property
    def previous(self) -> Path | None:
        return release_link(self.path, "previous")

    def manifest(self) -> Manifest:
        """The current release's manifest.json (InstallError when it is unreadable)."""
        return read_manifest(self.current)

    def releases(self) -> list[Path]:
        return installed_releases(self.path)
