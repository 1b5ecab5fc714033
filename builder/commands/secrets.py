"""`labbuild secrets list|rotate|set|schedule` and `labbuild audit`: thin shells over builder.operate
(secrets, rotate, audit)."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output
from .params import Seconds

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

    Install, rollback, `secrets rotate|set`, `restore --secrets`, backups (they copy DIR/.env),
    `uninstall --volumes` and every `users` change each append one JSON line. A line a crash cut short is
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
    """The secrets of an install after it: list them, rotate them, set supplied ones,
    print a daily schedule for rotating the due ones.

    Values live in DIR/.env (0600) and are never printed. Every change is
    recorded in DIR/audit.log (`labbuild audit`). With OpenBao in the profile,
    install, rotate and set also copy them to its KV v2 mount lab/<service>;
    DIR/.env wins.
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


_timeout_option = click.option("--timeout", type=Seconds(min=1), default=300, show_default=True,
                               help="Seconds the holder command, and each recreated service to become "
                                    "healthy, may take.")
MAX_VALUE_BYTES = 64 << 10


def _render_change(ctx: click.Context, out: Output, result, verb: str) -> None:
    lines = []
    if result.resumed is not None and result.resumed is not result:
        r = result.resumed
        lines.append(f"finished an interrupted `{r.command.removesuffix(' (resumed)')}` of {', '.join(r.keys)}: "
                     + ("applied" if r.outcome == "ok" else r.outcome))
    if result.keys:
        done = {"ok": verb, "rolled-back": "NOT " + verb + " (rolled back)", "failed": "NOT " + verb}[result.outcome]
        lines.append(f"{done}: {', '.join(result.keys)}"
                     + (f"; recreated {', '.join(result.services)}" if result.services else ""))
    elif result.resumed is None:
        lines.append("nothing is due")
    lines += [f"skipped {k}: {why}" for k, why in sorted(result.skipped.items())]
    out.result(result.to_json(), "\n".join(lines))
    failure = result.failure or (result.resumed.failure if result.resumed and not result.resumed.ok else None)
    if failure:
        click.echo(f"error: {failure}", err=True)
        if result.outcome == "failed" or (result.resumed and result.resumed.outcome == "failed"):
            click.echo("hint: the journal DIR/.secrets-journal.json (0600) keeps both values; fix the cause and run "
                       "the same command again to finish putting the old values back", err=True)
        ctx.exit(1)


@secrets.command()
@_dir_option
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@click.option("--due", is_flag=True, help="Also rotate every generated secret whose rotate_days have passed.")
@_timeout_option
@pass_output
@click.pass_context
def rotate(ctx: click.Context, out: Output, install_dir: Path, keys: tuple[str, ...], due: bool,
           timeout: float) -> None:
    """Generate new values for the named keys (or the due ones) and put them everywhere they live.

    Per key, in order: its blueprint's holder command runs in the owning
    service's container (the new value in $LAB_SECRET_NEW, the old in
    $LAB_SECRET_OLD, never in argv), DIR/.env changes atomically, and every
    service that reads the key is recreated in dependency order and awaited
    until healthy. If a step fails, the old values are put back the same way
    and the command says what failed (exit 1). A rotation killed midway
    leaves DIR/.secrets-journal.json (0600); run the command again (or with
    no KEY) and it finishes that rotation first.

    Refused, before anything changes: keys whose blueprint says rotate =
    false (the reason is shown), keys without a decision, and supplied keys
    (use `secrets set`). Cron or a systemd timer can run `--due` daily
    (the bundle's runbooks/README.md shows both).

    When the release has OpenBao, the new values are then copied to its KV v2
    mount (lab/<service>, a new version each); DIR/.env stays what compose
    reads and wins when the two differ.
    """
    from ..operate.rotate import rotate as do_rotate

    result = do_rotate(install_dir, keys, due=due, timeout=timeout, say=out.info)
    _render_change(ctx, out, result, "rotated")


@secrets.command("set")
@_dir_option
@click.argument("key")
@_timeout_option
@pass_output
@click.pass_context
def set_(ctx: click.Context, out: Output, install_dir: Path, key: str, timeout: float) -> None:
    """Set KEY to the value read from stdin (one line; prompted for without
    echo on a terminal), the way `rotate` changes a key: holder first, then
    DIR/.env, then the services that read it, with the old value put back if
    anything fails.

    For supplied secrets (API keys of external providers, the tunnel token);
    one supplied for the first time needs no rotation decision, and its
    optional service is started once all its supplied secrets exist. The
    value is never printed or logged.
    """
    import sys

    from ..errors import LabbuildError
    from ..operate.rotate import set_secret

    if sys.stdin.isatty():
        value = click.prompt(f"value of {key}", hide_input=True, confirmation_prompt=True, err=True)
    else:
        data = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
        if len(data) > MAX_VALUE_BYTES:
            raise LabbuildError(f"the value on stdin is longer than {MAX_VALUE_BYTES} bytes",
                                hint="a secret is one line; pass only the value")
        try:
            value = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError:
            raise LabbuildError("the value on stdin is not UTF-8 text", hint="pass the value as one line") from None
    if not value:
        raise LabbuildError(f"no value for {key} on stdin", hint=f"printf %s VALUE | labbuild secrets set --dir DIR {key}")
    result = set_secret(install_dir, key, value, timeout=timeout, say=out.info)
    _render_change(ctx, out, result, "set")


@secrets.command()
@_dir_option
@click.option("--labbuild", "labbuild_path", default=None, metavar="PATH",
              help="Absolute path of labbuild for cron and systemd (default: this labbuild's, else "
                   "/usr/local/bin/labbuild).")
@pass_output
def schedule(out: Output, install_dir: Path, labbuild_path: str | None) -> None:
    """Print a cron line and a systemd service + timer that run `labbuild
    secrets rotate --due --dir DIR` daily (automatic rotation), with DIR and
    the labbuild path quoted for sh, cron (% escaped) and systemd (%, $, \\ and
    " escaped). Nothing is installed: copy them to /etc/cron.d or
    /etc/systemd/system. Exit 0.
    """
    import os
    import shutil

    from ..errors import LabbuildError
    from ..host.labdir import LabDir
    from ..schedule import DEFAULT_LABBUILD, rotation_schedule

    lab_dir = LabDir.at(install_dir)
    found = shutil.which("labbuild")
    path = labbuild_path or (os.path.abspath(found) if found else DEFAULT_LABBUILD)
    try:
        plan = rotation_schedule(str(lab_dir.path), lab_dir.manifest().lab, path)
    except ValueError as exc:
        raise LabbuildError(str(exc), hint="install into a path without control characters") from None
    out.result({"cron": plan.cron, "service": {"name": f"{plan.unit}.service", "text": plan.service},
                "timer": {"name": f"{plan.unit}.timer", "text": plan.timer}},
               f"# /etc/cron.d/{plan.lab}-secrets\n{plan.cron}\n# /etc/systemd/system/{plan.unit}.service\n"
               f"{plan.service}\n# /etc/systemd/system/{plan.unit}.timer\n{plan.timer}")
