"""`labbuild users`: the front door's users — add, list, set, disable, enable, remove, passwd.

Each change reads the roles and projects of the current release (``DIR/current/access/lab.json``,
written by render when the front door is on), edits ``DIR/access/users_database.yml``
(``builder.host.userdb``: argon2id digests, 0600, atomic) under the install dir's lock, and
appends one entry to ``DIR/audit.log`` (the user's name, role and projects — never a password or
a digest). The provider sees the change by itself: it watches the file (see ``host.userdb``), so
no container is restarted and no one is signed out.

Refused before anything is written, naming what is wrong: an unknown role or project (with the
known ones), a bad or duplicate user name, an email another user has, any change that would
leave no enabled admin (removing, disabling or demoting the last one), and removing the last user
(Authelia refuses a user file without users). ``ensure_first_admin`` gives install the first admin
the provider needs before it starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InstallError
from ..format.files import ACCESS_JSON
from ..host.auditlog import check_appendable, record
from ..host.labdir import LabDir, dir_lock, preflight
from ..host.userdb import (
    generate_password,
    hash_password,
    name_problem,
    password_problem,
    read_database,
    read_release_access,
    text_problem,
    users_path,
    write_database,
)

ADMIN = "admin"


@dataclass(frozen=True)
class Access:
    """What `users` needs of the current release's access/lab.json."""

    provider: str
    roles: dict[str, str]
    projects: dict[str, str]
    path: Path


def read_access(install_dir: Path) -> Access:
    """The current release's roles and projects; InstallError when it has no front door."""
    release = LabDir.at(install_dir).current
    found = read_release_access(release)
    if found is None:
        raise InstallError(f"the installed release {release.name} has no front door ({release / ACCESS_JSON} is missing)",
                           hint="users exist only behind the front door: install a release whose profile includes "
                                "the identity provider ([access] provider in blueprints/lab.toml)")
    path, data = found
    for key in ("roles", "projects"):
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise InstallError(f"{path}: {key}: missing or not a mapping of names to descriptions",
                               hint="install the bundle again")
    if ADMIN not in data["roles"]:
        raise InstallError(f"{path}: roles: no {ADMIN!r} role", hint="install the bundle again")
    provider = data.get("provider") if isinstance(data.get("provider"), str) else "provider"
    return Access(provider=provider, roles=dict(data["roles"]), projects=dict(data["projects"]), path=path)


@dataclass(frozen=True)
class UserView:
    """One user as `users list` shows it: never the digest."""

    name: str
    displayname: str
    email: str
    role: str | None                     # the first group that is a role; None when there is none
    projects: tuple[str, ...]
    groups: tuple[str, ...]              # as stored: [role] + projects (+ groups added by hand)
    disabled: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "displayname": self.displayname, "email": self.email, "role": self.role,
                "projects": list(self.projects), "groups": list(self.groups), "disabled": self.disabled}


def view(name: str, details: dict[str, Any], roles: Any, projects: Any) -> UserView:
    groups = tuple(details.get("groups") or ())
    return UserView(name=name, displayname=details.get("displayname", ""), email=details.get("email") or "",
                    role=next((g for g in groups if g in roles), None),
                    projects=tuple(g for g in groups if g in projects), groups=groups,
                    disabled=bool(details.get("disabled", False)))


@dataclass
class UsersResult:
    """What a `users` command did (or, for `list`, found)."""

    action: str                          # add | set | disable | enable | remove | passwd | list
    dir: Path
    file: Path
    users: list[UserView] = field(default_factory=list)    # list: every user; a change: the one changed
    password: str | None = None          # a generated password, shown once; never stored in clear
    changed: bool = True
    provider: str = "provider"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": True, "action": self.action, "dir": str(self.dir), "file": str(self.file)}
        if self.action == "list":
            out["users"] = [u.to_json() for u in self.users]
            return out
        out.update(user=self.users[0].to_json() if self.users else None, changed=self.changed,
                   password_generated=self.password is not None, reload="watch")
        if self.password is not None:
            out["password"] = self.password
        return out


def list_users(install_dir: str | Path) -> UsersResult:
    """Every user of DIR's user file, in file order (roles/projects read from the release when it has them)."""
    lab = LabDir.at(install_dir)
    preflight(lab.path)
    lab.current                                   # DIR holds an installed lab
    try:
        access = read_access(lab.path)
        roles, projects = access.roles, access.projects
    except InstallError:
        roles, projects = {ADMIN: "", "analyst": "", "user": ""}, {}
    users = read_database(lab.path)
    return UsersResult("list", lab.path, users_path(lab.path),
                       users=[view(n, d, roles, projects) for n, d in users.items()], changed=False)


# --------------------------------------------------------------------------- changes

def _refuse_unknown(access: Access, role: str | None, projects: tuple[str, ...] | None) -> None:
    if role is not None and role not in access.roles:
        raise InstallError(f"unknown role {role!r}: the roles are {', '.join(sorted(access.roles))}",
                           hint=f"they come from [access.roles] of the installed release ({access.path})")
    unknown = sorted({p for p in projects or () if p not in access.projects})
    if unknown:
        known = ", ".join(sorted(access.projects)) or "(none)"
        raise InstallError(f"unknown project{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                           f"the projects are {known}",
                           hint=f"projects come from [access.projects] in blueprints/lab.toml; add one there and "
                                f"install a new release ({access.path})")


def _enabled_admins(users: dict[str, dict[str, Any]]) -> list[str]:
    return [n for n, d in users.items() if ADMIN in (d.get("groups") or ()) and not d.get("disabled", False)]


def _groups(access: Access, role: str, projects: tuple[str, ...], old: list[str]) -> list[str]:
    """[role] + projects, then the groups of ``old`` that are neither a role nor a project (hand-made)."""
    kept = [g for g in old if g not in access.roles and g not in access.projects]
    out: list[str] = []
    for g in [role, *projects, *kept]:
        if g not in out:
            out.append(g)
    return out


def _get(users: dict[str, dict[str, Any]], name: str, path: Path) -> dict[str, Any]:
    if name not in users:
        names = list(users)
        known = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "") or "none yet"
        raise InstallError(f"no user {name!r} in {path} (users: {known})", hint="see `labbuild users list --dir DIR`")
    return users[name]


Mutate = Callable[[dict[str, dict[str, Any]], Access], str]


def _change(install_dir: str | Path, action: str, name: str, mutate: Mutate) -> UsersResult:
    """Read, ``mutate`` (which refuses bad input and returns the audit detail), check that an
    enabled admin is left, write, audit — all under DIR's lock."""
    if problem := name_problem(name):
        raise InstallError(problem, hint="user names are lowercase: e.g. alice, j.doe, ops-1")
    lab = LabDir.at(install_dir)
    preflight(lab.path)
    access = read_access(lab.path)
    with dir_lock(lab.path):
        users = read_database(lab.path)
        had_admin = bool(_enabled_admins(users))
        old = dict(users[name]) if name in users else None
        before = json.dumps(old, sort_keys=True)
        detail = mutate(users, access)
        if had_admin and not _enabled_admins(users):
            raise InstallError(f"{name!r} is the last enabled admin: the lab would have no one to run it",
                               hint=f"add or enable another admin first (labbuild users add NAME --role {ADMIN} "
                                    "--dir DIR)")
        if not users:
            raise InstallError(f"{name!r} is the last user: the provider refuses a user file without users "
                               "(Authelia 4.39 requires `users` to be non-empty) and would not start",
                               hint="add another user first, or disable this one (labbuild users disable)")
        changed = json.dumps(users.get(name), sort_keys=True) != before
        path = users_path(lab.path)
        if changed:
            check_appendable(lab.path)
            try:
                write_database(lab.path, users)
            except InstallError as exc:
                record(lab.path, f"users {action}", (), (access.provider,), "failed",
                       f"user {name}: {exc.message}"[:500])
                raise
            record(lab.path, f"users {action}", (), (access.provider,), "ok", f"user {name}: {detail}")
    details = users.get(name, old)                   # a removed user is shown as it was
    shown = [view(name, details, access.roles, access.projects)] if details is not None else []
    return UsersResult(action, lab.path, path, users=shown, changed=changed, provider=access.provider)


def add_user(install_dir: str | Path, name: str, role: str, projects: tuple[str, ...] = (), *,
             email: str | None = None, displayname: str | None = None,
             password: str | None = None) -> UsersResult:
    """Add ``name`` with groups [role] + projects; without ``password`` a strong one is generated
    and returned once in ``UsersResult.password``."""
    generated = None
    for what, value in (("display name", displayname), ("email", email)):
        if value is not None and (problem := text_problem(what, value)):
            raise InstallError(problem, hint=f"pass a one-line {what}")
    if password is not None and (problem := password_problem(password)):
        raise InstallError(problem, hint="choose another password, or leave --password-stdin out to get a "
                                         "generated one")

    def mutate(users: dict[str, dict[str, Any]], access: Access) -> str:
        nonlocal generated
        if name in users:
            raise InstallError(f"user {name!r} already exists", hint="change it with `labbuild users set`, or its "
                                                                     "password with `labbuild users passwd`")
        _refuse_unknown(access, role, projects)
        _refuse_shared_email(users, name, email)
        if password is None:
            generated = generate_password()
        users[name] = {"displayname": displayname or name, "password": hash_password(password or generated),
                       "email": email or "", "groups": _groups(access, role, tuple(dict.fromkeys(projects)), []),
                       "disabled": False}
        return _describe(users[name], access)

    result = _change(install_dir, "add", name, mutate)
    result.password = generated
    return result


def _refuse_shared_email(users: dict[str, dict[str, Any]], name: str, email: str | None) -> None:
    if not email:
        return
    other = next((n for n, d in users.items() if n != name and (d.get("email") or "").lower() == email.lower()), None)
    if other is not None:
        raise InstallError(f"the email {email!r} is already {other!r}'s",
                           hint="each user needs their own email (the provider can sign users in by email)")


def _describe(details: dict[str, Any], access: Access) -> str:
    v = view("", details, access.roles, access.projects)
    return (f"role {v.role or '-'}; projects {', '.join(v.projects) or '-'}"
            + ("; disabled" if v.disabled else ""))


def set_user(install_dir: str | Path, name: str, *, role: str | None = None, projects: tuple[str, ...] | None = None,
             email: str | None = None, displayname: str | None = None) -> UsersResult:
    """Change ``name``'s role, projects (the whole list: ``()`` clears them), email or display name."""
    if role is None and projects is None and email is None and displayname is None:
        raise InstallError("nothing to change", hint="pass --role, --project, --no-projects, --email or --display-name")
    for what, value in (("display name", displayname), ("email", email)):
        if value is not None and (problem := text_problem(what, value)):
            raise InstallError(problem, hint=f"pass a one-line {what}")

    def mutate(users: dict[str, dict[str, Any]], access: Access) -> str:
        details = _get(users, name, users_path(Path(install_dir)))
        _refuse_unknown(access, role, projects)
        _refuse_shared_email(users, name, email)
        current = view(name, details, access.roles, access.projects)
        new_role = role or current.role
        if new_role is None:
            raise InstallError(f"user {name!r} has no role yet", hint="pass --role")
        new_projects = tuple(dict.fromkeys(projects)) if projects is not None else current.projects
        old = [g for g in current.groups if g != current.role]
        details["groups"] = _groups(access, new_role, new_projects, old)
        if email is not None:
            details["email"] = email
        if displayname is not None:
            details["displayname"] = displayname
        return _describe(details, access)

    return _change(install_dir, "set", name, mutate)


def set_disabled(install_dir: str | Path, name: str, disabled: bool) -> UsersResult:
    """Disable (the provider refuses the user's sign-in and their sessions' next check) or enable."""

    def mutate(users: dict[str, dict[str, Any]], access: Access) -> str:
        details = _get(users, name, users_path(Path(install_dir)))
        details["disabled"] = disabled
        return _describe(details, access)

    return _change(install_dir, "disable" if disabled else "enable", name, mutate)


def remove_user(install_dir: str | Path, name: str) -> UsersResult:
    """Remove ``name`` from the user file."""

    def mutate(users: dict[str, dict[str, Any]], access: Access) -> str:
        details = _get(users, name, users_path(Path(install_dir)))
        del users[name]
        return "removed (" + _describe(details, access) + ")"

    return _change(install_dir, "remove", name, mutate)


def change_password(install_dir: str | Path, name: str, password: str | None = None) -> UsersResult:
    """Set ``name``'s password (a new argon2id digest); without ``password`` a strong one is generated."""
    if password is not None and (problem := password_problem(password)):
        raise InstallError(problem, hint="choose another password, or leave --password-stdin out to get a "
                                         "generated one")
    generated = None

    def mutate(users: dict[str, dict[str, Any]], access: Access) -> str:
        nonlocal generated
        details = _get(users, name, users_path(Path(install_dir)))
        if password is None:
            generated = generate_password()
        details["password"] = hash_password(password or generated)
        return "new password"

    result = _change(install_dir, "passwd", name, mutate)
    result.password = generated
    return result


def ensure_first_admin(install_dir: str | Path, name: str = ADMIN) -> UsersResult | None:
    """For install: when DIR has no user file (or one without users), add ``name`` as an admin
    with a generated password (returned once in ``UsersResult.password``); None when users exist.

    The provider needs it before its first start: Authelia 4.39 generates an example file and
    stops when the file is missing, and refuses one whose ``users`` is empty (FileDatabaseModel's
    ``valid:"required"`` in internal/authentication/file_user_provider_database.go).
    """
    if read_database(LabDir.at(install_dir).path):
        return None
    return add_user(install_dir, name, ADMIN)
