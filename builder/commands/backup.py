"""`labbuild backup`, `restore` and `backups`: thin shells over builder.backups.backup / restore."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output

_dir_option = click.option("--dir", "install_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                           help="The install directory (holds releases/, current, .env and backups/).")
_timeout_option = click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
                               help="Seconds to wait for restarted services to be healthy.")


@click.command()
@_dir_option
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file to write (default: DIR/backups/<lab>-<version>-<time>.backup.tar).")
@click.option("--recipient", type=click.Path(dir_okay=False, path_type=Path),
              help="Encrypt to this X25519 public key (PEM); restoring then needs its private key.")
@click.option("--engine-archive", is_flag=True,
              help="Read volumes through the engine's archive API even when labbuild (as root beside a local "
                   "engine) could read their host directories with GNU tar, which is faster.")
@click.argument("services", nargs=-1)
@_timeout_option
@pass_output
def backup(out: Output, install_dir: Path, out_file: Path | None, recipient: Path | None,
           engine_archive: bool, services: tuple[str, ...], timeout: float) -> None:
    """Back up the lab's volumes (all, or SERVICE...) and DIR/.env into one file
    (with the front door's DIR/access/users_database.yml when there is one).

    Each service is captured by its blueprint's method: `volume` stops it,
    archives its volumes (from their host directories when labbuild runs as
    root beside a local engine, else through the engine) and starts it
    again; `exec`
    streams a dump (e.g. pg_dumpall) out of the running container. The file
    (mode 0600: it holds secrets) appears only when complete. Exit 0 only
    when every member was captured and hashed.
    """
    from ..backups.backup import backup_lab

    result = backup_lab(install_dir, out=out_file, services=services, recipient=recipient,
                        timeout=timeout, engine_archive=engine_archive, say=out.info)
    lines = [f"backed up {', '.join(result.services) or 'the secrets only'} of {result.lab} {result.version}",
             f"  {result.path} ({result.size} bytes{', encrypted' if result.encrypted else ''})"]
    lines += [f"  {name}: {size} bytes" for name, size in sorted(result.members.items())]
    lines += [f"  {s} started again: {r.state}" for s, r in sorted(result.health.items())]
    out.result(result.to_json(), "\n".join(lines))


@click.command()
@click.argument("backup_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@_dir_option
@click.option("--secrets", is_flag=True, help="Also put the backup's values of DIR/.env back.")
@click.option("--users", is_flag=True,
              help="Also put the backup's front-door users back (DIR/access/users_database.yml: who may sign "
                   "in, roles, password hashes); users added since are gone, removed ones come back.")
@click.option("--identity", type=click.Path(dir_okay=False, path_type=Path),
              help="X25519 private key (PEM) of an encrypted backup.")
@click.argument("services", nargs=-1)
@_timeout_option
@pass_output
@click.pass_context
def restore(ctx: click.Context, out: Output, backup_file: Path, install_dir: Path, secrets: bool, users: bool,
            identity: Path | None, services: tuple[str, ...], timeout: float) -> None:
    """Restore FILE into the lab installed in --dir (all its services, or SERVICE...).

    Verifies every member first and refuses a backup of another lab or of
    services this install lacks; then stops each service, replaces its volume
    contents (or feeds its dump to the restore command), starts it and waits
    for health. Safe to run again after an interruption. DIR/.env (--secrets)
    and the front door's user file (--users) are put back only when asked.
    """
    from ..backups.restore import restore_backup

    result = restore_backup(backup_file, install_dir, services=services, secrets=secrets, identity=identity,
                            timeout=timeout, say=out.info, users=users)
    what = ", ".join(result.services) or ("the secrets" if result.secrets_restored else
                                          "the users" if result.users_restored else "nothing")
    lines = [f"restored {what} of {result.lab} (backup of {result.version}) from {result.path}"]
    if not result.services and not result.secrets_restored:
        lines.append("  the backup holds no service data" + ("" if secrets else "; --secrets restores its .env values"))
    lines += [f"  {s}: {r.state}" for s, r in sorted(result.health.items())]
    out.result(result.to_json(), "\n".join(lines))
    if not result.ok:
        click.echo(f"error: {result.failure}", err=True)
        ctx.exit(1)


@click.command()
@_dir_option
@pass_output
def backups(out: Output, install_dir: Path) -> None:
    """List the backups and pre-upgrade snapshots in DIR/backups/ (oldest first)."""
    from ..backups.backup import list_backups

    entries = list_backups(install_dir)
    lines = []
    for e in entries:
        m = e.manifest
        if m is None:
            what = "encrypted (details need the key)" if e.encrypted else f"unreadable: {e.problem}"
            lines.append(f"{e.path.name}  {e.modified}  {e.size} bytes  {what}")
            continue
        kind = f"snapshot before {m.upgrade_to}" if m.kind == "snapshot" else "backup"
        lines.append(f"{e.path.name}  {m.created}  {m.lab} {m.version}  {kind}  "
                     f"{', '.join(sorted(m.services))}  {e.size} bytes")
    out.result({"ok": True, "dir": str(install_dir), "backups": [e.to_json() for e in entries]},
               "\n".join(lines) if lines else f"no backups in {install_dir / 'backups'}")
