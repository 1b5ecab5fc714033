"""``runbooks/``: the lab's README (install, upgrade, rollback, air-gap,
troubleshooting, from a package-data template) and one page per service."""

from __future__ import annotations

import shlex
from string import Template
from typing import Any

from ..blueprint import SECRET_REF_RE, Blueprint, Port, secret_env_key
from ..escape import markdown_block, markdown_code, markdown_text
from ..format.files import runbook_path
from ..limits import LIMITS, MiB
from ..schedule import rotation_schedule
from .release import ReleaseInput, volume_name
from .text import template_text


def _md_cell(text: Any) -> str:
    return markdown_text(str(text))


def limits_list() -> str:
    """``builder.limits`` as a Markdown list, for the runbook README."""
    def size(n: int) -> str:
        return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n:,}"
    return "\n".join(f"- {what}: {size(n)}" for what, n in LIMITS.items())


def service_url(bp: Blueprint, port: Port) -> str:
    """``host:port`` where the host reaches a published port (loopback of its bind family)."""
    host = "127.0.0.1" if port.bind in ("127.0.0.1", "0.0.0.0") else "[::1]"
    return f"{host}:{port.host}"


def _door_section(ri: ReleaseInput, name: str) -> list[str]:
    """``## Front door``: where the UI is and who may open it (only when the release has the door)."""
    door = ri.door
    if door is None or (name not in door.uis and name != door.provider):
        return []
    if name == door.provider:
        return ["## Front door", "",
                f"- Sign-in page: {door.issuer}/ (the lab's identity provider; users: `labbuild users ... --dir DIR`)",
                f"- Home page: https://{door.domain}/",
                "- Certificates: `DIR/door/ca.crt` is the lab CA made at install; trust it in the browser "
                "(see *Known problems* below). `DIR/door/lab.crt`/`lab.key` is the wildcard certificate of "
                f"`*.{door.domain}`; `DIR/door/oidc-jwks.pem` signs OIDC tokens. All stay across upgrades. "
                "To use your own certificate, put it (and its CA as `ca.crt`) there before install: it is kept "
                "while it covers the domain and is valid for 30 more days.",
                "- Projects: groups of this provider; what each service makes of them is in "
                "[README.md](README.md#projects-what-each-service-isolates).",
                ""]
    fd = door.uis[name]
    how = ("signs in with OpenID Connect against the provider itself" if fd.sign_in == "oidc"
           else "behind forward-auth: the proxy asks the provider before every request")
    return ["## Front door", "",
            f"- Open it at {door.base_url(name)}/ ({how}); no host port is published.",
            "- Roles that may open it: " + ", ".join(f"`{r}`" for r in fd.roles), ""]


PROJECTS_HEADING = "## Projects: what each service isolates"


def projects_section(ri: ReleaseInput) -> list[str]:
    """The README's projects table (only with the door): per UI, what a lab project is there and
    what that keeps apart, from each blueprint's ``[front_door.projects]``; every cell escaped."""
    door = ri.door
    if door is None:
        return []
    names = ", ".join(f"`{p}`" for p in door.access.projects) or "none yet"
    out = [PROJECTS_HEADING, "",
           f"A project is a group of the identity provider ([{door.provider}]({door.provider}.md)); this lab's "
           f"projects (lab.toml `[access.projects]`): {names}. Put a user in one with `labbuild users add NAME --project P --dir DIR` (or `users set`). What that "
           "group means differs service by service: most free editions cannot keep projects apart at all, and "
           "the front door only decides who reaches a service, not what they see inside it.", "",
           "| service | sign-in | roles | what a project is there | isolation |", "|---|---|---|---|---|"]
    for name, fd in door.uis.items():
        how = "OpenID Connect" if fd.sign_in == "oidc" else "forward-auth"
        what, isolation = ((fd.projects.what, fd.projects.isolation) if fd.projects is not None
                           else ("not stated by its blueprint", "unknown: assume none"))
        out.append(f"| [{name}]({name}.md) | {how} | {_md_cell(', '.join(fd.roles))} | {_md_cell(what)} "
                   f"| {_md_cell(isolation)} |")
    return out + [""]


def render_service_runbook(ri: ReleaseInput, name: str) -> str:
    """runbooks/<svc>.md: what the service is, where it listens, what it keeps, how to fix it."""
    bp = ri.blueprint(name)
    rec = ri.lock.services.get(name)
    out = [f"# {name}", "", markdown_text(bp.description), "",
           f"- Image: `{bp.image.pinned}`",
           f"- Phase {bp.phase}, category {bp.category}"]
    if rec is not None and not rec.verified:
        out.append("- Lock entry: pin only (not verified against the registry; `labbuild lock` verifies it)")
    if bp.docs:
        out.append(f"- Documentation: {bp.docs}")
    deps = bp.effective_depends_on(ri.services)
    if deps:
        out.append("- Starts after: " + ", ".join(f"[{d}]({d}.md)" for d in deps))
    out.append("")
    if bp.ports:
        out += ["## Ports", "", "| name | container | host | protocol |", "|---|---|---|---|"]
        for p in bp.ports:
            host = service_url(bp, p) if p.host else "internal only"
            out.append(f"| {p.name} | {p.container} | {host} | {p.protocol} |")
        out.append("")
    out += _door_section(ri, name)
    if bp.volumes or bp.binds or bp.files:
        out += ["## Data", ""]
        for v in bp.volumes:
            out.append(f"- volume `{ri.lab.name}_{volume_name(name, v.name)}` at `{v.target}`"
                       + (" (read-only)" if v.read_only else ""))
        for b in bp.binds:
            out.append(f"- host path `{b.source}` at `{b.target}`" + (" (read-only)" if b.read_only else ""))
        for f in bp.files:
            out.append(f"- config file `config/{name}/{f.name}` at `{f.target}` (read-only)")
        out.append("")
    if bp.models:
        out += ["## Models", ""]
        targets = {v.name: v.target.rstrip("/") for v in bp.volumes}
        for m in bp.models:
            where = f"`{targets.get(m.volume, '?')}/{m.path}`"
            line = f"- `{m.served_name}`" + (f" ({m.role})" if m.role else "") + f", pinned `{m.digest[:19]}…`: "
            line += (f"shipped in this bundle; `labbuild install` places it into {where} (Ollama's layout) "
                     "and keeps every model already there" if ri.offline else
                     f"not carried by this online bundle; pull it once the lab runs "
                     f"(`docker exec {ri.lab.name}-{name}-1 ollama pull {m.served_name}`), or install the image "
                     "bundle (`--with-images`) that carries it")
            out.append(line)
        out.append("")
    if bp.secrets:
        head = ("Kept in `DIR/.env`; never in the bundle." if bp.supplied_secrets
                else "Generated at install into `DIR/.env`; never in the bundle.")
        out += ["## Secrets", "", head, ""]
        for s in bp.secrets:
            if s.supplied:
                started = (f"`{name}` is installed but only started once it is set: add it, then run install again"
                           if name in ri.optional else "install stops until it is set")
                out.append(f"- `{secret_env_key(name, s.name)}` → `{s.name}`: supplied by you, never generated "
                           f"({started}). Where to get it: {_md_cell(s.description)}")
            elif s.derive:
                out.append(f"- `{secret_env_key(name, s.name)}` → `{s.name}`: the {s.derive} hash of "
                           f"`{secret_env_key(name, s.source)}`, made by install when it is missing (delete the "
                           f"line and install again after changing that password)")
            else:
                prefix = f", starts with `{s.prefix}`" if s.prefix else ""
                shown = (f": a sign-in password, printed once by install when it generates it — "
                         f"{markdown_text(s.description)}" if s.show else "")
                out.append(f"- `{secret_env_key(name, s.name)}` → `{s.name}` ({s.generate}, {s.length} characters"
                           f"{prefix}){shown}")
        out.append("")
    if steps := bp.effective_provision(ri.services):
        out += ["## Provisioning", "",
                f"Once `{name}` is healthy, `labbuild install` makes these calls, in order, with the values of the "
                "keys they name from `DIR/.env` (an answer saying it was done before counts as done; each run is a "
                "`provision` line in `DIR/audit.log`). Until they have succeeded once, the service publishes no host "
                "port (`DIR/unpublished.yaml`): install makes them at its container's address, then publishes it. "
                "`install.sh` prints them as curl commands to that address instead; after making them, publish it "
                f"with `sh install.sh --dir DIR --claimed {name}`.", ""]
        for i, step in enumerate(steps, 1):
            m = SECRET_REF_RE.fullmatch(step.bearer)
            out.append(f"{i}. `{step.method} http://{service_url(bp, bp.port(step.port))}{step.path}`"
                       + (f" with `{secret_env_key(m.group(1), m.group(2))}` as the bearer token" if m else "")
                       + f": {markdown_text(step.description)}")
        out.append("")
    out += ["## Health", ""]
    if bp.health and bp.port(bp.health.port).host is None:
        out.append(f"- `{bp.health.path}` on port {bp.port(bp.health.port).container} inside the lab network "
                   "(no host port behind the front door: the host does not probe it)")
    elif bp.health:
        h = bp.health
        port = bp.port(h.port)
        target = f"{h.scheme}://{service_url(bp, port)}{h.path if h.scheme != 'tcp' else ''}"
        out.append(f"- Probe from the host: `{target}`"
                   + (f" (statuses {', '.join(map(str, h.status))})" if h.status else "")
                   + (f", start period {start}" if (start := bp.effective_start_period(ri.services, ri.embedding_models))
                      else ""))
    else:
        out.append("- No health endpoint: the install checks only that the container runs.")
    if bp.healthcheck:
        out.append(f"- Container healthcheck: `{' '.join(bp.healthcheck.test)}`")
    if bp.metrics:
        out.append(f"- Metrics: `{name}:{bp.port(bp.metrics.port).container}{bp.metrics.path}` (scraped by Prometheus)")
    out += ["", *_backup_section(ri, name, bp)]
    out += ["## Logs and restart", "", "```sh",
            ri.compose_command("ps", "DIR"),
            f"docker compose logs --tail 100 -f {name}",
            f"docker compose restart {name}",
            f"docker compose exec {name} sh      # a shell inside it, when the image has one", "```", ""]
    if bp.runbook:
        out += ["## Known problems", ""]
        for entry in bp.runbook:
            out += [f"### {markdown_text(entry.title)}", "", f"**Symptom:** {markdown_block(entry.symptom)}", ""]
            if entry.cause:
                out += [f"**Cause:** {markdown_block(entry.cause)}", ""]
            out += [f"**Fix:** {markdown_block(entry.fix)}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _backup_section(ri: ReleaseInput, name: str, bp: Blueprint) -> list[str]:
    """Backup method and why, restore, and the upgrade/rollback path of one service."""
    out = ["## Backup, restore, upgrade", ""]
    if bp.backup.method == "exec":
        out.append(f"- Backup method **exec**: `labbuild backup` streams {markdown_code(shlex.join(bp.backup.dump))} out of "
                   f"the running container — no downtime, and a dump outlives the data directory's format. "
                   f"Restore feeds it to {markdown_code(shlex.join(bp.backup.restore))} on stdin, with the services that "
                   f"use {name} stopped meanwhile.")
    elif bp.volumes:
        out.append(f"- Backup method **volume**: `labbuild backup` stops {name} (files are consistent only while "
                   "nothing writes them), archives its volumes through the Docker engine and starts it again; "
                   "no helper image, so it works air-gapped. Restore replaces the volumes' contents.")
    else:
        out.append(f"- Nothing to back up: {name} keeps no data of its own.")
    if bp.backup.method == "exec" or bp.volumes:
        out.append(f"- `labbuild backup --dir DIR {name}`; `labbuild restore FILE --dir DIR {name}` "
                   "(add `--secrets` when `DIR/.env` was regenerated since the backup).")
        out.append(f"- Upgrade: a newer bundle that changes {name}'s image snapshots its data first "
                   "(`labbuild backups --dir DIR`).")
    held = [d for d in bp.data_in if d in ri.services]
    if bp.migrations == "one-way":
        data = ", ".join([name] * bool(bp.volumes or bp.backup.method == "exec") + held)
        out.append(f"- Rollback: **one-way migrations** — {name} migrates its data forward when a new version "
                   "starts, and an older image cannot read migrated data. `labbuild rollback` refuses unless "
                   f"`--restore-data`, which restores the pre-upgrade snapshot of {data}: what changed since "
                   "the upgrade is lost (back it up first).")
    else:
        out.append("- Rollback: `labbuild rollback --dir DIR` keeps the data as it is.")
    if held:
        out.append(f"- Its data lives in {', '.join(f'[{d}]({d}.md)' for d in held)}: snapshotted before its "
                   "upgrades and restored with it.")
    return out + [""]


def render_runbooks(ri: ReleaseInput) -> dict[str, str]:
    """runbooks/README.md (install, upgrade, rollback, air-gap, troubleshooting) + one page per service."""
    rows = ["| service | description | open | runbook |", "|---|---|---|---|"]
    for name in ri.services:
        bp = ri.blueprint(name)
        web = next((p for p in bp.ports if p.host), None)
        url = f"http://{service_url(bp, web)}" if web else "—"
        rows.append(f"| {name} | {_md_cell(bp.description)} | {url} | [{name}.md]({name}.md) |")
    gpu_service = next((n for n in ri.services if ri.blueprint(n).resources
                        and ri.blueprint(n).resources.gpus is not None), "<gpu service>")
    text = Template(template_text("runbooks/README.md")).substitute(
        lab=ri.lab.name, version=ri.version, profile=ri.profile, top=ri.top, archive=ri.filename,
        services_table="\n".join(rows + (["", *projects_section(ri)] if ri.door is not None else [])).rstrip("\n"),
        compose_up=ri.compose_command("up -d", "DIR"),
        compose_ps=ri.compose_command("ps", "DIR"),
        compose_logs=ri.compose_command("logs --tail 200 SERVICE", "DIR"),
        compose_events=ri.compose_command("ps -a", "DIR"),
        gpu_service=gpu_service,
        limits=limits_list(),
        rotation=rotation_schedule(f"/srv/{ri.lab.name}", ri.lab.name).markdown(),
    )
    pages = {"runbooks/README.md": text}
    for name in ri.services:
        pages[runbook_path(name)] = render_service_runbook(ri, name)
    return pages

