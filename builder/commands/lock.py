"""`labbuild lock`: record every pinned image's closure in lockfiles/lab.lock.json."""

from __future__ import annotations

import click

from .. import names
from ..cli import Output, pass_output


@click.command()
@click.option("--check", is_flag=True,
              help="Offline: exit 1 when the lock is missing or stale (for CI).")
@click.option("--update", is_flag=True,
              help="Move the pins of SERVICES (all when none) to their tags' current digests, "
                   "rewrite the blueprints, then lock.")
@click.option("--offline", is_flag=True,
              help="Record the pins as they are, unverified, without contacting any registry.")
@click.option("--refresh", is_flag=True,
              help="Re-resolve every service, also those whose entry is fresh.")
@click.option("--to", "to", multiple=True, metavar="TAG",
              help="With --update: move SERVICES to TAG (repeatable: each service takes the one TAG on its track).")
@click.option("--latest", is_flag=True,
              help="With --update: move SERVICES (all when none) to the newest tag on their tracks.")
@click.option("--major", is_flag=True, help="With --latest: major steps too (as `outdated --major` offers them).")
@click.option("--split", is_flag=True,
              help="With --to/--latest: move some members of a group without the others.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Talk plain HTTP to this registry (repeatable; adds to lab.toml's insecure_registries).")
@click.argument("services", nargs=-1)
@pass_output
@click.pass_context
def lock(ctx: click.Context, out: Output, check: bool, update: bool, offline: bool, refresh: bool,
         to: tuple[str, ...], latest: bool, major: bool, split: bool,
         insecure: tuple[str, ...], services: tuple[str, ...]) -> None:
    """Resolve every pinned image and write lockfiles/lab.lock.json.

    Only new, changed or unverified entries are fetched; when the lock is
    fresh and verified no registry is contacted. The file is written
    atomically and only when every service resolved.
    """
    from ..errors import LockError
    from ..lock import check_lock, make_lock

    if sum((check, update, offline)) > 1:
        raise click.UsageError("--check, --update and --offline are mutually exclusive")
    if services and not update:
        raise click.UsageError("SERVICES are only accepted with --update")
    if (to or latest) and not update:
        raise click.UsageError("--to and --latest move pins: use them with --update")
    if to and latest:
        raise click.UsageError("--to TAG and --latest are mutually exclusive")
    if to and not services:
        raise click.UsageError("--to TAG needs the SERVICES to move")
    if split and not (to or latest):
        raise click.UsageError("--split only applies to --to/--latest")
    if major and not latest:
        raise click.UsageError("--major only applies to --latest")
    for tag in to:
        if not names.is_valid("tag", tag) or tag == "latest":
            raise click.BadParameter(f"{tag!r}: {names.describe('tag')}", param_hint="--to")
    display = "lockfiles/lab.lock.json"

    if check:
        result = check_lock(out.root)
        data = result.to_json(display)
        if not out.json:
            if result.ok:
                note = (f" ({len(result.unverified)} entries recorded --offline, unverified)"
                        if result.unverified else "")
                click.echo(f"{display} is up to date{note}", err=True)
            elif not result.present:
                click.echo(f"error: {display} is missing\nhint: run `labbuild lock` and commit it", err=True)
            else:
                for name, why in sorted(result.stale.items()):
                    click.echo(f"stale: {'lab' if name == '*' else repr(name)}: {why}", err=True)
                click.echo(f"error: {display} is stale for {len(result.stale)} service(s)\n"
                           f"hint: run `labbuild lock` and commit {display}", err=True)
        out.result(data)
        if not result.ok:
            ctx.exit(1)
        return

    try:
        result = make_lock(out.root, offline=offline, refresh=refresh, update=list(services) if update else None,
                           to=to, latest=latest, major=major, split=split,
                           insecure_registries=insecure, progress=out.info)
    except LockError as exc:
        if not out.json or not exc.services:
            raise
        # one JSON object with the lock contract's keys, naming the failed services
        out.result({**exc.to_json(), "lockfile": display, "services": exc.services})
        out.info(exc.render())
        ctx.exit(1)
    for pin in result.pins:
        out.info(pin.render())
    if update and not result.pins:
        out.info("every pin already matches its tag")
    for change in result.changes:
        out.info(change.render())
    if not result.written:
        out.info(f"{display} is up to date")
    else:
        unverified = sorted(n for n, r in result.lock.services.items() if not r.verified)
        out.info(f"wrote {display} ({len(result.lock.services)} service(s)"
                 + (f", {len(unverified)} unverified" if unverified else "") + ")")
    out.result(result.to_json(display))


@click.command()
@click.option("--major", is_flag=True,
              help="Offer major steps too (a new major on the track is otherwise only mentioned).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the same as `labbuild --json outdated`).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Talk plain HTTP to this registry (repeatable; adds to lab.toml's insecure_registries).")
@click.argument("services", nargs=-1)
@pass_output
@click.pass_context
def outdated(ctx: click.Context, out: Output, major: bool, as_json: bool, insecure: tuple[str, ...],
             services: tuple[str, ...]) -> None:
    """Which pins are behind the newest tag on their track (all services, or SERVICES and their groups).

    Per service: the newest tag on its track ([image] track, else the tag's own
    shape: pre-releases, `latest` and other variants never count), the step
    (patch, minor, major; `digest` when the same tag was re-pushed) and where
    that tag points; models are checked for their own tag. Members of a group
    are reported together. Unreachable registries are named, not fatal.
    Exit 0 when nothing is behind, 1 when something is.
    """
    from ..outdated import check_outdated

    out.json = out.json or as_json
    report = check_outdated(out.root, services, major=major, insecure_registries=insecure)
    out.result(report.to_json(), report.render())
    if not report.ok:
        ctx.exit(1)
