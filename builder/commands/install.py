"""`labbuild install`, `status`, `rollback`, `uninstall` and `check`: thin shells over builder.install."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output
from .params import Seconds

_dir_option = click.option("--dir", "install_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                           help="The install directory (holds releases/, current, .env and compose.yaml).")
_timeout_option = click.option("--timeout", type=Seconds(min=1), default=300, show_default=True,
                               help="Seconds each service may take to become healthy once its dependencies "
                                    "are (a service whose [health] start_period is longer gets that long); "
                                    "image pulls are not counted.")
_gpu_option = click.option("--gpu/--no-gpu", default=None,
                           help="Turn the GPU reservations of the bundle's services with [resources] gpus on "
                                "(needs the NVIDIA runtime; refused without it) or off. Default: as installed "
                                "before (off for a new install).")


def _render_install(ctx: click.Context, out: Output, result, verb: str) -> None:
    lines = [f"{verb} {result.lab} {result.version} in {result.dir}"]
    if getattr(result, "delta", None):
        d = result.delta
        lines.append(f"  delta since {d['base']}: loaded {d['carried_blobs']} carried blob(s) "
                     f"({d['carried_bytes']} bytes), relied on {d['relied_blobs']} blob(s) ({d['relied_bytes']} bytes) "
                     "already in the engine")
    for name, r in sorted(result.services.items()):
        lines.append(f"  {name}: {r.state}" + (f" ({r.detail})" if r.detail and r.state != "healthy" else ""))
    for name, p in sorted(getattr(result, "models", {}).items()):
        lines.append(f"  {name}: models {', '.join(p.models)} in place ({len(p.written)} blob(s) written, "
                     f"{len(p.skipped)} already there)")
    if getattr(result, "first_admin", None) is not None:    # shown once: labbuild keeps only its argon2id hash
        a = result.first_admin
        lines.append(f"  front door: first admin {a.name}, password {a.password} (shown once; change it: "
                     f"labbuild users passwd {a.name} --dir {result.dir})")
    for name, p in sorted(getattr(result, "provisioned", {}).items()):
        lines.append(f"  {name}: provisioning {p.state}" + (f" ({p.detail})" if p.state == "failed" else ""))
        if getattr(p, "warning", ""):
            lines.append(f"  WARNING: {p.warning}")
    if result.ok:
        waiting = [n for n, r in result.services.items() if r.state in ("not-started", "unhealthy")]
        tail = ("every required service is healthy; optional, not healthy or not started: " + ", ".join(sorted(waiting))
                if waiting else "all services are healthy") if result.started and result.services else (
            "not started (--no-start)" if not result.started else "started")
        out.result(result.to_json(), "\n".join(lines + [tail]))
        return
    out.result(result.to_json(), "\n".join(lines))
    click.echo(f"error: {result.failure}", err=True)
    ctx.exit(1)


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@_dir_option
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="Public key (.pub from `labbuild keygen`): the bundle's signature and provenance must verify with it.")
@click.option("--no-start", is_flag=True, help="Unpack, load images and write secrets, but do not start.")
@click.option("--base", "base", type=click.Path(dir_okay=False, path_type=Path), metavar="BASE_BUNDLE",
              help="For a delta bundle: the full base bundle, supplying the base images the engine lacks.")
@click.option("--keep-snapshots", type=click.IntRange(min=1), default=3, show_default=True,
              help="Upgrades snapshot the data of every service whose image changes into DIR/backups/; "
                   "keep this many of them.")
@_timeout_option
@_gpu_option
@pass_output
@click.pass_context
def install(ctx: click.Context, out: Output, bundle: Path, install_dir: Path, key: Path | None,
            no_start: bool, timeout: float, gpu: bool | None, base: Path | None,
            keep_snapshots: int) -> None:
    """Install BUNDLE into --dir, or upgrade the lab installed there.

    Runs `labbuild doctor` first and stops before touching anything when
    the host is not ready. Verifies the bundle (and its signature with --key)
    before touching anything, unpacks it into DIR/releases/<version>/, loads its images and
    checks each image ID against the lock, generates missing secrets into
    DIR/.env (0600, kept across upgrades), makes the front door's lab CA,
    wildcard certificate and OIDC signing key in DIR/door/ when the bundle
    has the front door (kept across upgrades), writes DIR/compose.yaml (so
    `cd DIR && docker compose ps|logs|restart|exec` work with no flags),
    pulls an online bundle's images, places an image bundle's models into
    their services' volumes (Ollama's layout; models already there are
    kept), runs `docker compose up -d` and waits
    until every service answers its health probe. The moment a service is
    healthy it makes that service's provisioning calls ([[provision]]: e.g. claiming the admin
    account an app would hand to its first visitor, with a password
    generated into DIR/.env; registering each app's own LiteLLM key with
    the master key; answers saying it was done before count as done, with
    a WARNING when DIR/audit.log has no record that labbuild made it;
    recorded in DIR/audit.log). Until its calls have succeeded once, such
    a service publishes no host port (DIR/unpublished.yaml): it is probed
    and called at its container's address, then recreated with its ports.
    A sign-in password is printed once, when it is generated. Exit 0 only
    when all are healthy and provisioned, optional services aside.

    Operator-supplied secrets are never generated: when one of a required
    service is missing from DIR/.env, install stops first (nothing loaded
    or written) naming the key. An optional service without its supplied
    secret is installed but not started; add the key and install again.

    A release with the front door (access/lab.json) gets DIR/access/ (0700)
    before anything starts; when it holds no users, the first admin `admin`
    is written to DIR/access/users_database.yml (0600, argon2id) with a
    generated password printed once on stdout (--json: first_admin). Users
    are kept across upgrades and rollbacks (`labbuild users`).

    A delta bundle (`release --since`) installs offline on a host where its
    base release is installed: before anything changes, every base image it
    relies on must be in the engine (by image ID), else it is refused naming
    the base release and the image, unless --base supplies them.

    An upgrade first snapshots the data of every service whose image changes
    (see `labbuild backups`, `rollback --restore-data`).
    """
    from ..install.apply import install_bundle

    result = install_bundle(bundle, install_dir, key=key, start=not no_start, timeout=timeout, say=out.info,
                            gpu=gpu, base=base, keep_snapshots=keep_snapshots)
    _render_install(ctx, out, result, "installed")


@click.command()
@_dir_option
@pass_output
@click.pass_context
def status(ctx: click.Context, out: Output, install_dir: Path) -> None:
    """Show the installed lab: each service's container, health and image ID vs the lock,
    and the models present in the volumes of services that declare models.

    Exit 1 when a service is not running, not healthy or runs an image the
    lock does not name. An optional service waiting for its supplied secret
    shows as `not started: needs KEY` and is not a failure; neither is a
    secret due for rotation (`labbuild secrets list`), which is a warning.
    With the front door on: how many users, enabled users and enabled
    admins it has (never a name).
    """
    from ..operate.status import status as install_status

    result = install_status(install_dir)
    lines = [f"{result.lab} {result.version} in {result.dir}"
             + (f" (previous: {result.previous})" if result.previous else "")]
    for name, s in sorted(result.services.items()):
        image = "image matches the lock" if s.image_ok else f"IMAGE {s.image_id} IS NOT THE LOCKED {s.locked_id}"
        if s.health == "not-started":
            lines.append(f"  {name}: not started: {s.detail} (optional; add it to {result.dir}/.env and run install again)")
            continue
        lines.append(f"  {name}: {s.state}, {s.health}, {image}" + (f" ({s.detail})" if s.detail and s.health in (
            "unhealthy", "no-probe") else ""))
        if s.models is not None:
            lines.append(f"    models: {', '.join(s.models) or 'none'}")
    if result.users is not None:
        u = result.users
        lines.append(f"  front door: {u['users']} user(s), {u['enabled']} enabled, {u['admins']} enabled admin(s)")
    for warning in result.warnings:
        out.info(f"warning: {warning}")
    out.result(result.to_json(), "\n".join(lines))
    if not result.ok:
        ctx.exit(1)


@click.command()
@_dir_option
@click.option("--no-start", is_flag=True, help="Switch back without starting the services.")
@click.option("--restore-data", is_flag=True,
              help="Also restore the pre-upgrade snapshot of the services whose migrations are one-way "
                   "(required when there are any; changes made since the upgrade are lost).")
@_timeout_option
@pass_output
@click.pass_context
def rollback(ctx: click.Context, out: Output, install_dir: Path, no_start: bool, restore_data: bool,
             timeout: float) -> None:
    """Return to the previous release (volumes and secrets kept) and wait until it is healthy.

    A service whose blueprint declares one-way migrations cannot run its old
    image on migrated data: rollback refuses unless --restore-data, which
    restores that service's snapshot taken before the upgrade.
    """
    from ..install.apply import rollback as do_rollback

    result = do_rollback(install_dir, start=not no_start, timeout=timeout, say=out.info, restore_data=restore_data)
    _render_install(ctx, out, result, "rolled back to")


@click.command()
@_dir_option
@click.option("--volumes", is_flag=True, help="Also delete the lab's volumes (its data), secrets (DIR/.env) and "
                                               "front-door users (DIR/access/users_database.yml).")
@pass_output
def uninstall(out: Output, install_dir: Path, volumes: bool) -> None:
    """Stop and remove the installed lab: containers, networks, loaded images, releases.

    Volumes, DIR/.env and the front door's DIR/access/users_database.yml
    (data, secrets, users) are kept unless --volumes; DIR/audit.log is
    always kept.
    """
    from ..install.apply import uninstall as do_uninstall

    result = do_uninstall(install_dir, volumes=volumes, say=out.info)
    kept = ("volumes, secrets and users deleted" if volumes else
            "volumes, DIR/.env and DIR/access kept (use --volumes to delete them)")
    out.result(result.to_json(), f"uninstalled {result.lab} from {result.dir}; {kept}")


@click.command()
@click.option("--dir", "install_dir", required=True, type=click.Path(path_type=Path),
              help="The install directory (the --dir given to `labbuild install`).")
@click.option("--service", "services", multiple=True, help="Check only this service (repeatable).")
@click.option("--project", help="Compose project name (default: from the install's manifest).")
@click.option("--wait", type=Seconds(min=0), default=0, show_default=True,
              help="Re-check failing services for up to this many seconds.")
@pass_output
@click.pass_context
def check(ctx: click.Context, out: Output, install_dir: Path, services: tuple[str, ...],
          project: str | None, wait: float) -> None:
    """Testinfra health checks of every service of an install.

    Per service: its container is running, its published ports listen on
    their bind address, its health probe answers (at the container's address
    on the lab network when the front door publishes no port; the engine's
    health status for an in-container healthcheck). Exit 1 on any failure —
    run it after install, after upgrade, or from cron. An optional service
    waiting for its supplied secret is skipped with `not started: needs KEY`.
    Secrets due for rotation are warned about, never a failure.
    """
    from ..operate.check import check_install

    report = check_install(install_dir, project=project, services=list(services) or None, wait=wait)
    for warning in report.warnings:
        out.info(f"warning: {warning}")
    if out.json:
        out.result(report.to_json())
        out.info(report.render_table().splitlines()[-1])
    else:
        out.result({}, report.render_table())
    if not report.ok:
        ctx.exit(1)


@click.command()
@click.argument("bundle", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--dir", "install_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The install directory (checked for writing; without BUNDLE, its current release is checked).")
@click.option("--gpu", is_flag=True, help="Also require the NVIDIA runtime for the bundle's GPU services.")
@pass_output
@click.pass_context
def doctor(ctx: click.Context, out: Output, bundle: Path | None, install_dir: Path | None, gpu: bool) -> None:
    """Offline preflight of this host for BUNDLE (what `install` runs first).

    Checks the engine and its version, compose v2, every host port of the
    bundle (naming the process that holds a taken one), disk space for the
    images, memory against the services' limits, the NVIDIA runtime with
    --gpu, and that --dir is writable. Exit 1 when a check fails; each
    failure names its fix.
    """
    from ..install.doctor import doctor as run_doctor

    report = run_doctor(bundle, install_dir, gpu=gpu)
    out.result(report.to_json(), report.render_table())
    if not report.ok:
        ctx.exit(1)
