"""``DIR/access/users_database.yml``: the identity provider's user file, and the release's roles.

The front door's provider is Authelia 4.39 with its file backend
(https://www.authelia.com/configuration/first-factor/file/): one YAML mapping ``users``, each
user a mapping with ``password`` (a PHC digest), ``displayname``, ``email``, ``groups`` and
``disabled``; the published schema is ``shared/schemas/authelia-4.39/user-database.json``. A
user's groups are ``[role] + projects`` (the front-door contract); groups that are neither (added
by hand) are kept.

The file lives in the install dir, not in a release: ``DIR/access/`` is mounted into the
provider's container as a directory (read-only, at ``/access``: outside the ``/config`` that the
provider's entrypoint chowns, so the file stays the operator's) and the rendered configuration
says ``watch: true``.
Authelia's watcher (internal/service/file_watcher.go, v4.39) watches the file's directory with
fsnotify and reloads on a Create or Write event naming the file; fsnotify reports inotify's
IN_MOVED_TO as Create (backend_inotify.go, v1.10.1), so the atomic rename that
``write_database`` ends with is seen. Authelia skips a reload that comes within 0.5 s of its
previous one (FileUserProvider.Reload / setTimeoutReload in
internal/authentication/file_user_provider.go), so a write waits until the file is
``RELOAD_SPACING`` old: two quick changes in a row are both loaded.

Comments are not kept: labbuild reads the YAML into data and writes it back (PyYAML), the way
Authelia itself rewrites the file when a user changes their password in its portal (yaml.Marshal
in file_user_provider_database.go). Every user and every field labbuild does not touch is kept,
in file order.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shlex
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import argon2
import yaml

from ..errors import InstallError
from ..format.files import ACCESS_JSON
from ..fsutil import CapExceeded, atomic_write, file_error, read_capped
from ..limits import MAX_ACCESS_JSON_BYTES, MAX_USERS_FILE_BYTES

ACCESS_DIR = "access"                    # DIR/access/: mounted into the provider's container
USERS_FILE = "users_database.yml"
RELOAD_SPACING = 1.0                     # seconds between two writes (Authelia's cooldown is 0.5 s)

# Authelia's defaults for new argon2 digests (configuration/first-factor/file/ `password.argon2`,
# and `authelia crypto hash generate argon2 --help`): argon2id, iterations 3, memory 65536 KiB,
# parallelism 4, key 32 bytes, salt 16 bytes. argon2-cffi writes the same PHC string Authelia's
# go-crypt reads: $argon2id$v=19$m=65536,t=3,p=4$<salt b64>$<key b64> (unpadded standard base64).
HASHER = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, hash_len=32, salt_len=16,
                               type=argon2.Type.ID)

# User names: lowercase (Authelia refuses upper case when search.case_insensitive is on,
# loadAlias in file_user_provider_database.go), no "@" (with search.email on, a name may not be
# anyone's email), and plain enough for `user:NAME` subjects of access rules and for the login
# names the apps behind the door derive from it.
NAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,31}")
NAME_RULE = "1-32 characters: a lowercase letter, then lowercase letters, digits, '.', '_' or '-'"
EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
MAX_TEXT = 200                           # display name, email
MIN_PASSWORD, MAX_PASSWORD = 8, 1024     # 8: Authelia's password_policy.standard.min_length default
HEADER = ("# The front door's users (Authelia file backend). Managed with `labbuild users ... --dir DIR`;\n"
          "# hand edits are kept, comments are not.\n")


def users_path(install_dir: Path) -> Path:
    return Path(install_dir) / ACCESS_DIR / USERS_FILE


def users_error(exc: OSError, path: Path, doing: str) -> InstallError:
    """``file_error`` for ``DIR/access`` or its user file. Denied because the directory belongs to
    another uid, the hint says how to take it back: a release that mounted it under the provider's
    ``/config`` had it chowned to root by the provider's entrypoint (see ``render.door.USERS_TARGET``)."""
    err = file_error(exc, path, doing, InstallError)
    if exc.errno not in (errno.EACCES, errno.EPERM):
        return err
    access = path if path.name == ACCESS_DIR else path.parent
    try:
        owner = access.lstat().st_uid
    except OSError:
        return err
    uid, gid = os.geteuid(), os.getegid()
    if owner == uid:
        return err
    return InstallError(err.message, hint=(
        f"{access} belongs to uid {owner}, not to you (uid {uid}); the front door's provider of an earlier "
        "release did that (its entrypoint chowns /config, where that release mounted the directory; "
        f"releases now mount it read-only elsewhere). Take it back once: sudo chown -R {uid}:{gid} "
        f"{shlex.quote(str(access))} (or run labbuild as uid {owner})"))


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return f"{name!r} is not a user name: {NAME_RULE}"
    return None


def text_problem(what: str, value: str) -> str | None:
    """Why a free-text field (display name, email) cannot be stored, or None."""
    if not value.strip():
        return f"the {what} is empty"
    if len(value) > MAX_TEXT:
        return f"the {what} is longer than {MAX_TEXT} characters"
    if any(ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0 for c in value):
        return f"the {what} holds a control character (a line break, a tab, ...)"
    if what == "email" and not EMAIL_RE.fullmatch(value):
        return f"{value!r} is not an email address (NAME@DOMAIN)"
    return None


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"the password is shorter than {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password is longer than {MAX_PASSWORD} characters"
    if "\x00" in password or "\n" in password or "\r" in password:
        return "the password holds a NUL or a line break"
    return None


def generate_password() -> str:
    """A strong password: 24 URL-safe characters (144 random bits)."""
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    """The argon2id PHC digest of ``password`` with Authelia's default parameters."""
    return HASHER.hash(password)


# --------------------------------------------------------------------------- reading

def read_release_access(release: Path) -> tuple[Path, Any] | None:
    """``(path, parsed JSON)`` of ``release``'s access/lab.json (the front door, written by render), or
    None when the release has none: the one reader of it on the install side, capped, never half-trusted."""
    path = release / ACCESS_JSON
    raw = read_small(path, MAX_ACCESS_JSON_BYTES, "read the front door's lab.json", "the release is damaged: "
                                                                                    "install the bundle again")
    if raw is None:
        return None
    try:
        return path, json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InstallError(f"{path}: not JSON ({str(exc)[:120]})", hint="install the bundle again") from None


def release_provider(release: Path) -> str | None:
    """The identity provider of ``release``'s front door, or None when the release has none."""
    found = read_release_access(release)
    if found is None:
        return None
    path, data = found
    provider = data.get("provider") if isinstance(data, dict) else None
    if not isinstance(provider, str) or not provider:
        raise InstallError(f"{path}: provider: missing or not a string", hint="install the bundle again")
    return provider


def _where(path: Path, user: str | None, key: str | None = None) -> str:
    return f"{path}: users" + (f".{user}" if user is not None else "") + (f".{key}" if key else "")


def check_database(path: Path, data: Any) -> dict[str, dict[str, Any]]:
    """``data`` (parsed YAML) as the users mapping; InstallError naming the key path when it is not
    a user file Authelia would load (the fields labbuild reads; the rest is Authelia's to judge)."""
    fix = f"fix {path} by hand (or restore it from a backup) and run the command again"
    if not isinstance(data, dict) or set(data) != {"users"}:
        raise InstallError(f"{path}: not a user file: the top level must be one mapping `users:`", hint=fix)
    users = data["users"] if data["users"] is not None else {}
    if not isinstance(users, dict):
        raise InstallError(f"{path}: users: must be a mapping of user name to details", hint=fix)
    for name, details in users.items():
        if not isinstance(name, str):
            raise InstallError(f"{path}: users: the key {name!r} is not a string", hint=fix)
        if not isinstance(details, dict):
            raise InstallError(f"{_where(path, name)}: must be a mapping (password, displayname, ...)", hint=fix)
        for key in ("password", "displayname"):
            if not isinstance(details.get(key), str):
                raise InstallError(f"{_where(path, name, key)}: missing or not a string", hint=fix)
        for key in ("email",):
            if details.get(key) is not None and not isinstance(details[key], str):
                raise InstallError(f"{_where(path, name, key)}: not a string", hint=fix)
        groups = details.get("groups")
        if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
            raise InstallError(f"{_where(path, name, 'groups')}: must be a list of strings", hint=fix)
        if not isinstance(details.get("disabled", False), bool):
            raise InstallError(f"{_where(path, name, 'disabled')}: must be true or false", hint=fix)
    return users


def read_small(path: Path, cap: int, doing: str, too_big_hint: str,
               error: Callable[[OSError, Path, str], InstallError] | None = None) -> bytes | None:
    """The bytes of the regular file ``path`` (None when it does not exist); InstallError when it
    is larger than ``cap`` or cannot be read (``error`` makes it, default ``file_error``)."""
    try:
        return read_capped(path, cap)
    except FileNotFoundError:
        return None
    except CapExceeded:
        raise InstallError(f"{path}: larger than {cap} bytes or not a regular file", hint=too_big_hint) from None
    except OSError as exc:
        raise (error or (lambda e, p, d: file_error(e, p, d, InstallError)))(exc, path, doing) from None


def open_users_file(install_dir: Path) -> BinaryIO | None:
    """DIR/access/users_database.yml opened for reading (a backup copies it), never through a link;
    None when there is none (or it is not a regular file)."""
    path = users_path(install_dir)
    if path.parent.is_symlink():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:            # a link: not the provider's file
            return None
        raise users_error(exc, path, "read the front door's user file") from None
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        return None
    return fh


def read_database(install_dir: Path) -> dict[str, dict[str, Any]]:
    """The users of ``DIR/access/users_database.yml`` in file order (empty when there is no file)."""
    path = users_path(install_dir)
    try:
        link = path.is_symlink()
    except OSError as exc:                   # DIR/access not searchable: someone else's
        raise users_error(exc, path, "read the user file") from None
    if link:
        raise InstallError(f"{path} is a link", hint="labbuild never follows links in the install dir: "
                                                    "replace it with the file's content")
    raw = read_small(path, MAX_USERS_FILE_BYTES, "read the user file", "it is not a user file labbuild wrote: "
                                                                      "move it away", users_error)
    if raw is None:
        return {}
    return parse_database(raw, path)


def parse_database(raw: bytes, path: Path | str) -> dict[str, dict[str, Any]]:
    """The users of a user file's bytes (``path`` names it in messages); InstallError when it is not
    one Authelia would load (see ``check_database``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(raw.decode("utf-8")) if raw.strip() else {"users": {}}
    except UnicodeDecodeError:
        raise InstallError(f"{path}: not UTF-8 text", hint="fix the file by hand or restore it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InstallError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})",
                           hint="fix the file by hand or restore it from a backup") from None
    return check_database(path, data)


# --------------------------------------------------------------------------- writing

class _Dumper(yaml.SafeDumper):
    """Plain scalars only where they cannot mean anything but the string (a YAML 1.1 reader such
    as PyYAML and a YAML 1.2 one such as Authelia's go-yaml agree); everything else double-quoted."""


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.@+-]*")
_SPECIAL = re.compile(r"(?i)y|n|yes|no|true|false|on|off|null|nan|inf")


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    plain = bool(_PLAIN.fullmatch(value)) and not _SPECIAL.fullmatch(value)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')


_Dumper.add_representer(str, _str)


def dump_database(users: dict[str, dict[str, Any]]) -> bytes:
    """The file's bytes: the header comment, then ``users:`` in the given order (deterministic)."""
    body = yaml.dump({"users": users}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=4096)
    return (HEADER + body).encode("utf-8")


def write_database(install_dir: Path, users: dict[str, dict[str, Any]]) -> Path:
    """Write the user file atomically (temp file, fsync, rename; mode 0600), at least
    ``RELOAD_SPACING`` after its previous write so the provider's watcher loads both."""
    return write_database_bytes(install_dir, dump_database(users))


def write_database_bytes(install_dir: Path, data: bytes) -> Path:
    """``write_database`` of bytes already checked (``parse_database``): a restore puts a backed-up
    file back as it was, comments included. Only ever ``DIR/access/users_database.yml``, never
    through a link."""
    path = users_path(install_dir)
    try:
        if not path.parent.is_symlink():
            path.parent.mkdir(mode=0o700, exist_ok=True)
        if path.parent.is_symlink() or not path.parent.is_dir():
            raise InstallError(f"{path.parent} is not a directory",
                               hint="labbuild keeps the provider's user file there: move it away")
        try:
            st = path.lstat()
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise InstallError(f"{path} is not a regular file", hint="move it away; labbuild writes the user file there")
        if st is not None:
            wait = st.st_mtime + RELOAD_SPACING - time.time()
            if 0 < wait <= RELOAD_SPACING:
                time.sleep(wait)
        atomic_write(path, data, mode=0o600)
    except OSError as exc:
        raise users_error(exc, Path(getattr(exc, "filename", None) or path), "write the user file") from None
    return path


def add_first_admin(install_dir: Path, name: str = "admin") -> str | None:
    """When DIR's user file is missing or has no users, write it with ``name`` as an enabled admin
    (groups ``[admin]``) and a generated password; return that password (shown once, never
    stored in clear). None when users exist. The caller holds DIR's lock and audits it."""
    if read_database(install_dir):
        return None
    password = generate_password()
    write_database(install_dir, {name: {"displayname": name, "password": hash_password(password), "email": "",
                                        "groups": ["admin"], "disabled": False}})
    return password
