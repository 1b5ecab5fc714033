"""The install directory: which releases are unpacked, which is current, who holds it.

    DIR/releases/<version>/   one unpacked bundle per installed version (compose.yaml,
                              manifest.json, runbooks/, images/ metadata, ...), never
                              changed; image blobs are not kept: the engine holds them
    DIR/current  -> releases/<version>    the active release (symlink, switched atomically)
    DIR/previous -> releases/<version>    the release it replaced (for rollback)
    DIR/.env                  the generated secrets (mode 0600), kept across upgrades
    DIR/.labbuild.lock        serialises labbuild commands on the same DIR

A release's ``manifest.json`` is read through ``builder.bundle.layout.Manifest``,
the one reader of that format.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

from ..bundle.layout import MANIFEST, SUMS, Manifest, is_version
from ..bundle.verify import write_tree
from ..errors import BundleError, InstallError

Say = Callable[[str], None]
RELEASES = "releases"
ENV_FILE = ".env"
LOCK_NAME = ".labbuild.lock"


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
    target = (install_dir / os.readlink(link)).resolve()
    return target if target.is_dir() else None


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
    fd = os.open(install_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
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
    staging.mkdir(parents=True)
    write_tree(staging, contents, modes)
    return staging


def _sums(release: Path) -> bytes | None:
    p = release / SUMS
    return p.read_bytes() if p.exists() else None


def place(staged: Path, install_dir: Path, say: Say) -> Path:
    """Move a staged release to ``DIR/releases/<version>/`` (reusing an identical one)."""
    version = read_manifest(staged).version
    if not is_version(version):
        shutil.rmtree(staged, ignore_errors=True)
        raise InstallError(f"the bundle's manifest names no usable version ({version!r})")
    final = install_dir / RELEASES / version
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
