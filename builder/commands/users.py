"""`labbuild users add|list|set|disable|enable|remove|passwd`: a thin shell over builder.operate.users."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output

_dir_option = click.option("--dir", "install_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                           help="The install directory (holds current/, access/users_database.yml and audit.log).")
_stdin_option = click.option("--password-stdin", is_flag=True,
                             help="Read the password from stdin (one line; prompted for without echo on a "
                                  "terminal). Without it a strong password is generated and shown once.")
MAX_PASSWORD_INPUT = 4096


def _read_password(name: str) -> str:
    import sys

    from ..errors import LabbuildError

    if sys.stdin.isatty():
        return click.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)
    data = sys.stdin.buffer.read(MAX_PASSWORD_INPUT + 1)
    if len(data) > MAX_PASSWORD_INPUT:
        raise LabbuildError(f"the password on stdin is longer than {MAX_PASSWORD_INPUT} bytes",
                            hint="pass only the password, on one line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LabbuildError("the password on stdin is not UTF-8 text", hint="pass the password as one line") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise LabbuildError(f"no password for {name} on stdin",
                            hint=f"printf %s PASSWORD | labbuild users passwd {name} --password-stdin --dir DIR")
    return text


def _render(out: Output, result, verb: str) -> None:
    user = result.users[0] if result.users else None
    if not result.changed:
        out.info(f"{result.users[0].name}: nothing changed" if user else "nothing changed")
    elif user is not None:
        out.info(f"{verb} {user.name}: role {user.role or '-'}, projects {', '.join(user.projects) or '-'}"
                 + (", disabled" if user.disabled else "") + f" ({result.file}; {result.provider} reloads it)")
    text = None
    if result.password is not None:
        out.info(f"the generated password of {user.name} is shown once; labbuild keeps only its argon2id hash")
        text = result.password
    out.result(result.to_json(), text)


@click.group()
def users() -> None:
    """The front door's users: who may sign in, with which role and projects.

    Edits DIR/access/users_database.yml, the identity provider's user file
    (argon2id hashes, mode 0600, written atomically); the provider reloads it
    by itself. Roles and projects are those of the installed release
    ([access] in blueprints/lab.toml); a user's groups are [role] + projects.
    Every change is recorded in DIR/audit.log (never a password or hash).
    """


@users.command("list")
@_dir_option
@pass_output
def list_(out: Output, install_dir: Path) -> None:
    """Every user: name, display name, email, role, projects, disabled — never a hash."""
    from ..operate.users import list_users

    result = list_users(install_dir)
    rows = [f"{u.name:<20} {u.role or '-':<8} {'disabled' if u.disabled else 'enabled':<8} "
            f"projects: {', '.join(u.projects) or '-'}  {u.displayname}" + (f" <{u.email}>" if u.email else "")
            for u in result.users]
    out.result(result.to_json(), "\n".join(rows) if rows else "no users yet")


@users.command()
@_dir_option
@click.argument("name")
@click.option("--role", required=True, help="One of the lab's roles (admin, analyst, user).")
@click.option("--project", "projects", multiple=True, metavar="P", help="A project the user is in (repeatable).")
@click.option("--email", help="The user's email (the provider can sign in by it and sends notices to it).")
@click.option("--display-name", "displayname", help="The name shown to others (default: NAME).")
@_stdin_option
@pass_output
def add(out: Output, install_dir: Path, name: str, role: str, projects: tuple[str, ...], email: str | None,
        displayname: str | None, password_stdin: bool) -> None:
    """Add user NAME with a role and projects.

    No password on the command line: with --password-stdin it is read from
    stdin, otherwise a strong one is generated and printed once on stdout
    (in --json output: "password"). Refused: unknown roles or projects, a
    name that is taken or not lowercase [a-z][a-z0-9._-], an email another
    user has.
    """
    from ..operate.users import add_user

    password = _read_password(name) if password_stdin else None
    result = add_user(install_dir, name, role, projects, email=email, displayname=displayname, password=password)
    _render(out, result, "added")


@users.command("set")
@_dir_option
@click.argument("name")
@click.option("--role", help="The new role.")
@click.option("--project", "projects", multiple=True, metavar="P",
              help="The user's projects, replacing the old list (repeatable).")
@click.option("--no-projects", is_flag=True, help="Take the user out of every project.")
@click.option("--email", help="The new email.")
@click.option("--display-name", "displayname", help="The new display name.")
@pass_output
def set_(out: Output, install_dir: Path, name: str, role: str | None, projects: tuple[str, ...], no_projects: bool,
         email: str | None, displayname: str | None) -> None:
    """Change NAME's role, projects, email or display name.

    Refused when it would leave the lab without an enabled admin.
    """
    from ..errors import ArgumentError
    from ..operate.users import set_user

    if no_projects and projects:
        raise ArgumentError("--no-projects and --project exclude each other", hint="pass one of them")
    chosen = () if no_projects else (projects or None)
    result = set_user(install_dir, name, role=role, projects=chosen, email=email, displayname=displayname)
    _render(out, result, "changed")


@users.command()
@_dir_option
@click.argument("name")
@pass_output
def disable(out: Output, install_dir: Path, name: str) -> None:
    """Disable NAME: the provider refuses their sign-in (the user stays in the file).

    Refused for the last enabled admin.
    """
    from ..operate.users import set_disabled

    _render(out, set_disabled(install_dir, name, True), "disabled")


@users.command()
@_dir_option
@click.argument("name")
@pass_output
def enable(out: Output, install_dir: Path, name: str) -> None:
    """Enable NAME again after `users disable`."""
    from ..operate.users import set_disabled

    _render(out, set_disabled(install_dir, name, False), "enabled")


@users.command()
@_dir_option
@click.argument("name")
@pass_output
def remove(out: Output, install_dir: Path, name: str) -> None:
    """Remove NAME from the user file. Refused for the last enabled admin."""
    from ..operate.users import remove_user

    _render(out, remove_user(install_dir, name), "removed")


@users.command()
@_dir_option
@click.argument("name")
@_stdin_option
@pass_output
def passwd(out: Output, install_dir: Path, name: str, password_stdin: bool) -> None:
    """Set NAME's password: from stdin with --password-stdin, otherwise a
    strong one is generated and printed once on stdout."""
    from ..operate.users import change_password

    password = _read_password(name) if password_stdin else None
    _render(out, change_password(install_dir, name, password), "new password for")
