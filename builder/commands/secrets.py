"""`labbuild secrets list|rotate|set` and `labbuild audit`: thin shells over builder.operate
(secrets, rotate, audit)."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output

_dir_option = click.option("--dir", "install_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                           help="The install directory (holds releases/, current, .env and audit.log).")


@click.command()
@_dir_option
@click.option("--since", metavar="T",
              help="Only entries at or after T: a date or time in ISO 8601 (UTC unless it names a zone: "
                   "2026-12-01, 2026-12-01T10:00:00Z) or an age (90m, 36h, 7d, 2w).")
@pass_output
def audit(out: Output, install_dir: Path, since: str | None) -> None:
    """Show DIR/audit.log: who created, read out, changed or restored which secrets, when, on
    which host, with which command and outcome — never a value.

    Install, rollback, `secrets rotate|set`, `restore --secrets`, backups (they copy DIR/.env)
    and `uninstall --volumes` each append one JSON line. A line a crash cut short is
    reported, not fatal. Exit 0.
    """
    from ..errors import InstallError
    from ..operate.audit import audit as read_audit, parse_since

    if since is not None:
        try:
            parse_since(since)
        except InstallError as exc:
            raise click.BadParameter(f"{exc.message} ({exc.hint})", param_hint="--since") from None
    report = read_audit(install_dir, since)
    for problem in report.problems:
        out.info(f"warning: {problem}")
    out.result(report.to_json(), report.render_text())


@click.group()
def secrets() -> None:
    """The secrets of an install after it: list them, rotate them, set supplied ones.

    Values live in DIR/.env (0600) and are never printed. Every change is
    recorded in DIR/audit.log (`labbuild audit`).
    """


@secrets.command("list")
@_dir_option
@pass_output
def list_secrets(out: Output, install_dir: Path) -> None:
    """Every secret of the installed release: key, services that read it, kind,
    generated or supplied, age, rotation policy and whether it is due — never
    a value.

    The age comes from DIR/audit.log (the last install, rotate, set or restore
    that set it); a key the log does not name is aged from DIR/.env's time
    (shown as >=: at least that old). A secret is due when its blueprint's
    rotate_days have passed. Exit 0.
    """
    from ..operate.secrets import list_secrets as read_secrets

    report = read_secrets(install_dir)
    for problem in report.problems:
        out.info(f"warning: {problem}")
    if report.journal:
        out.info(f"warning: a rotation was interrupted: run labbuild secrets rotate --dir {report.dir} to finish it")
    out.result(report.to_json(), report.render_table())
