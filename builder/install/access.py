"""The front door's users at install and rollback: ``DIR/access/`` and its first admin (issue 23).

A release whose bundle holds ``access/lab.json`` has the front door on: its identity provider
(Authelia 4.39, file backend) reads ``DIR/access/users_database.yml`` (``builder.host.userdb``)
from the directory ``DIR/access`` mounted into its container. Before anything starts:

- ``DIR/access/`` is made (mode 0700) — a link or a file there is refused;
- an existing user file is kept as it is (upgrades, rollbacks, re-installs), only its mode is
  brought back to 0600 when someone widened it (it holds password hashes);
- when there is no user file (or one without users) the first admin ``admin`` is written with a
  generated password, returned once for the command's output (``InstallResult.first_admin``) and
  recorded in ``DIR/audit.log`` without it. Authelia needs this before its first start: with the
  file missing it writes an example file and exits, and it refuses a file whose ``users`` is empty.

Who reads the file: the official image (authelia/authelia Dockerfile at v4.39.15: ``ENV PUID=0
PGID=0``; entrypoint.sh: when the container runs as uid 0 with the default command it runs
``chown -R "${PUID}:${PGID}" /config`` and then ``su-exec "${PUID}:${PGID}" authelia``) runs
Authelia as root unless told otherwise, and root in a container with Docker's default
capabilities (CAP_DAC_OVERRIDE) reads a 0600 file whatever its owner. So labbuild keeps the file
0600 and the directory 0700, owned by the user who runs labbuild, and changes no ownership
itself. The release mounts the directory read-only at ``/access``, outside ``/config``
(``render.door.USERS_TARGET``), so the entrypoint's chown never reaches it and a non-root
operator keeps writing it. A directory an earlier release had mounted under ``/config`` may
belong to root already: ``users_error`` then says how to take it back (``sudo chown``).

A release without the front door leaves an existing ``DIR/access`` alone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InstallError
from ..host.auditlog import check_appendable, record
from ..host.userdb import (
    ACCESS_DIR,
    USERS_FILE,
    add_first_admin,
    read_database,
    release_provider,
    users_error,
    users_path,
)

FIRST_ADMIN = "admin"
DIR_MODE, FILE_MODE = 0o700, 0o600


@dataclass(frozen=True)
class FirstAdmin:
    """The admin install made: shown once (stdout, or ``--json`` ``first_admin``), never stored in clear."""

    name: str
    password: str
    file: Path

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "password": self.password, "file": str(self.file)}


def prepare_access_dir(install_dir: Path) -> Path:
    """``DIR/access`` as a real directory of mode 0700, its user file (when there) 0600."""
    access = install_dir / ACCESS_DIR
    try:
        if access.is_symlink() or (access.exists() and not access.is_dir()):
            raise InstallError(f"{access} is not a directory", hint="labbuild keeps the front door's users there "
                                                                    "and never follows a link: move it away")
        access.mkdir(mode=DIR_MODE, exist_ok=True)
        if stat.S_IMODE(access.stat().st_mode) & 0o077:
            os.chmod(access, DIR_MODE)
        path = access / USERS_FILE
        st = path.lstat() if path.is_symlink() or path.exists() else None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise InstallError(f"{path} is not a regular file", hint="move it away; labbuild writes the user file there")
        if st is not None and stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)           # it holds password hashes: never group- or world-readable
    except OSError as exc:
        raise users_error(exc, Path(getattr(exc, "filename", None) or access),
                          "prepare the front door's users directory") from None
    return access


def ensure_users(install_dir: Path, release: Path, command: str) -> FirstAdmin | None:
    """For a release with the front door: ``DIR/access`` ready and at least one user in it (see the
    module docstring); the first admin when this call made it. The caller holds DIR's lock."""
    provider = release_provider(release)
    if provider is None:
        return None
    prepare_access_dir(install_dir)
    if read_database(install_dir):          # kept: upgrades, rollbacks and re-installs never touch the users
        return None
    check_appendable(install_dir)           # no admin is made that the audit log would not name
    password = add_first_admin(install_dir, FIRST_ADMIN)
    if password is None:
        return None
    path = users_path(install_dir)
    record(install_dir, command, (), (provider,), "ok",
           f"user {FIRST_ADMIN}: the front door's first admin written to {ACCESS_DIR}/{USERS_FILE} "
           "(generated password shown once)")
    return FirstAdmin(FIRST_ADMIN, password, path)
