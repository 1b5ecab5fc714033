"""The semantic rules of DESIGN.md that the schema cannot express.

``check_service_local`` checks one blueprint on its own (name = file stem,
fully qualified image, unique ports/volumes/mounts, opt-ins for public
binds, the docker socket and privileged mode, no secret-looking settings);
``check_cross`` checks what spans services (depends_on targets, phases and
cycles, host-port clashes, ``${secret:...}`` references). Both report to a
``Collector``; neither raises.
"""

from __future__ import annotations

import difflib
import posixpath
import re

from ..escape import env_value_problem
from ..format.models import model_format
from ..names import repository_problem
from ..tracks import TrackError, on_track
from .model import SECRET_REF_RE, Blueprint, secret_env_key, setting_env_key
from .source import Collector, Source

SECRET_KEY_RE = re.compile(r"(_KEY|_TOKEN|_PASSWORD|_SECRET)$|^(KEY|TOKEN|PASSWORD|SECRET)$", re.I)
FLAG_VALUES = frozenset({"true", "false"})     # a secret-looking key set to one of these is a switch
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
PUBLIC_BINDS = {"0.0.0.0", "::"}


def exposes_docker_socket(source: str) -> bool:
    """Whether a host path is a docker socket or a directory above one, once normalised
    (``/var/run/./docker.sock``, ``//var/run/docker.sock`` and ``/var/run`` all count)."""
    path = "/" + posixpath.normpath("/" + source).lstrip("/")
    return any(sock == path or sock.startswith(path.rstrip("/") + "/") for sock in DOCKER_SOCKETS)


def check_service_local(bp: Blueprint, src: Source, out: Collector) -> None:
    """The rules one blueprint must satisfy on its own."""
    stem = src.path.stem
    if bp.name != stem and src.path.suffix == ".toml":
        out.add(src, ("service", "name"), f"name {bp.name!r} differs from the file stem {stem!r}",
                hint=f"rename the file to {bp.name}.toml or set name = {stem!r}")
    if why := repository_problem(bp.image.name):
        out.add(src, ("image", "name"), why,
                hint=f"name the registry, e.g. docker.io/{bp.image.name}"
                + ("" if "/" in bp.image.name else f" or docker.io/library/{bp.image.name}"))
    _check_track(bp, src, out)
    for kind, items, key in (("port", bp.ports, "ports"), ("volume", bp.volumes, "volumes"),
                             ("file", bp.files, "files")):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                out.add(src, (key, i, "name"), f"duplicate {kind} name {item.name!r}",
                        hint=f"also used by {key}[{seen[item.name]}]")
            seen.setdefault(item.name, i)
    seen_c: dict[tuple, int] = {}
    for i, p in enumerate(bp.ports):
        if (p.container, p.protocol) in seen_c:
            out.add(src, ("ports", i, "container"), f"container port {p.container}/{p.protocol} listed twice")
        seen_c.setdefault((p.container, p.protocol), i)
        if p.bind in PUBLIC_BINDS and not p.expose_reason:
            out.add(src, ("ports", i, "bind"), f"bind = {p.bind!r} publishes on every interface",
                    hint='add expose_reason = "..." saying why, or drop bind to keep 127.0.0.1')
    targets: dict[str, str] = {}
    for key, items in (("volumes", bp.volumes), ("binds", bp.binds), ("files", bp.files)):
        for i, item in enumerate(items):
            if item.target in targets:
                out.add(src, (key, i, "target"), f"{item.target} is mounted twice",
                        hint=f"also mounted by {targets[item.target]}")
            targets.setdefault(item.target, f"{key}[{i}]")
    for i, b in enumerate(bp.binds):
        if exposes_docker_socket(b.source) and not b.docker_socket_reason:
            out.add(src, ("binds", i, "source"),
                    f"{b.source} is or holds the docker socket: mounting it gives root on the host",
                    hint='add docker_socket_reason = "..." to opt in explicitly')
    if bp.privileged and not bp.privileged_reason:
        out.add(src, ("service", "privileged"), "a privileged container needs an explicit opt-in",
                hint='add privileged_reason = "..." to [service]')
    names = {p.name for p in bp.ports}
    for section in ("health", "metrics"):
        obj = getattr(bp, section)
        if obj is not None and obj.port not in names:
            out.add(src, (section, "port"), f"no port named {obj.port!r}",
                    hint="ports of this service: " + (", ".join(sorted(names)) or "none"))
    if bp.health is not None and bp.health.port in names and bp.port(bp.health.port).host is None:
        out.add(src, ("health", "port"), f"port {bp.health.port!r} has no host port to probe from",
                hint="set host = ... on that port, or remove [health]")
    _check_env(bp.env, ("env",), src, out)
    base_files = {f.name: f for f in bp.files}
    for w in bp.when:
        _check_env(w.env, ("when", w.other, "env"), src, out)
        for i, f in enumerate(w.files):
            if f.name not in base_files:
                out.add(src, ("when", w.other, "files", i, "name"), f"no [[files]] entry named {f.name!r} to replace",
                        hint="a [[when.X.files]] entry replaces the [[files]] entry of the same name; declare that first")
            elif f.target != base_files[f.name].target:
                out.add(src, ("when", w.other, "files", i, "target"),
                        f"target {f.target} differs from the replaced file's {base_files[f.name].target}",
                        hint="a replacement is mounted where the file it replaces is")
        _check_env(w.embedding_env, ("when", w.other, "embedding", "env"), src, out)
        if w.other == bp.name:
            out.add(src, ("when", w.other), "a service cannot be conditional on itself")
    check_models(bp, src, out)
    check_rotation(bp, src, out)
    check_provision(bp, src, out)


def check_provision(bp: Blueprint, src: Source, out: Collector) -> None:
    """``[[provision]]`` and ``[[when.X.provision]]``: through a port of this service; ``${`` only in
    secret references (install turns each into a DIR/.env key: any other ``${`` would be read as one);
    a GET carries no body."""
    names = {p.name for p in bp.ports}
    blocks = [(("provision",), bp.provision)] + [(("when", w.other, "provision"), w.provision)
                                                 for w in bp.when if w.provision]
    if any(steps for _, steps in blocks) and bp.health is None:
        out.add(src, blocks[0][0] if bp.provision else blocks[-1][0],
                "provisioning calls need a [health] probe: they run once it answers",
                hint="add [health] with a path that answers only when the service is ready")
    for where, steps in blocks:
        for i, step in enumerate(steps):
            if step.port not in names:
                out.add(src, (*where, i, "port"), f"no port named {step.port!r}",
                        hint="ports of this service: " + (", ".join(sorted(names)) or "none"))
            elif bp.port(step.port).host is None:
                out.add(src, (*where, i, "port"), f"port {step.port!r} has no host port to call",
                        hint="install calls the service through its published 127.0.0.1 port: set host = ...")
            if step.method == "GET" and step.json:
                out.add(src, (*where, i, "json"), "a GET call carries no body", hint="drop json, or use POST")
            for path, value in step.leaves():
                if "${" in SECRET_REF_RE.sub("", value):
                    out.add(src, (*where, i, "json", *path), "'${' outside a ${secret:SERVICE.NAME} reference",
                            hint="the only placeholder a provisioning body knows is ${secret:SERVICE.NAME}")


def check_rotation(bp: Blueprint, src: Source, out: Collector) -> None:
    """``[secrets.NAME]`` rotation decisions: a reason only explains ``rotate = false``; a policy
    and a holder only go with ``rotate = true``; a holder reads the new value from the environment."""
    for s in bp.secrets:
        path = ("secrets", s.name)
        if s.rotate_reason and s.rotate is not False:
            out.add(src, path + ("rotate_reason",), "rotate_reason explains rotate = false",
                    hint="set rotate = false, or drop rotate_reason")
        for key, present in (("rotate_days", s.rotate_days is not None), ("holder", bool(s.holder))):
            if present and s.rotate is not True:
                out.add(src, path + (key,), f"{key} needs rotate = true",
                        hint="a value that never changes has no rotation policy or holder")
        if s.derive:
            base = next((b for b in bp.secrets if b.name == s.source), None)
            if base is None or base.generate is None:
                out.add(src, path + ("from",), f"{s.source!r} is no generated [secrets.NAME] of this service",
                        hint="derive from a secret with generate = ... declared in this blueprint")
            elif base.rotate is not False:
                out.add(src, path + ("from",), f"{s.source!r} may be rotated, and {s.name} would keep the old hash",
                        hint=f"set rotate = false (with rotate_reason) on [secrets.{s.source}]")
        if s.holder and not any("LAB_SECRET_NEW" in arg for arg in s.holder):
            out.add(src, path + ("holder", "exec"), "the holder never reads $LAB_SECRET_NEW",
                    hint="the new value reaches the holder only in the environment variable LAB_SECRET_NEW "
                         "(the old one in LAB_SECRET_OLD), never in argv: e.g. "
                         'exec = ["sh", "-c", "... \\"$LAB_SECRET_NEW\\" ..."]')


def _check_track(bp: Blueprint, src: Source, out: Collector) -> None:
    """``[image] track``: a regular expression that the pinned tag itself is on."""
    if bp.image.track is None:
        return
    try:
        on = on_track(bp.image.tag, bp.image.track)
    except TrackError as exc:
        out.add(src, ("image", "track"), f"'{bp.image.track}' is {exc}",
                hint="a Python regular expression matched against the whole tag, e.g. '^17\\.(\\d+)$'")
        return
    if not on:
        out.add(src, ("image", "track"), f"the pinned tag {bp.image.tag!r} is not on its own track '{bp.image.track}'",
                hint="widen the track so that it matches the tag, or drop it to follow the tag's own shape")


def check_models(bp: Blueprint, src: Source, out: Collector) -> None:
    """``[[models]]``: a known, writable volume of this service, a relative path inside
    it, a name Ollama's layout can hold (host/namespace/model), each model once."""
    volumes = {v.name: v for v in bp.volumes}
    seen: dict[str, int] = {}
    for i, m in enumerate(bp.models):
        if m.volume not in volumes:
            out.add(src, ("models", i, "volume"), f"no volume named {m.volume!r}",
                    hint="volumes of this service: " + (", ".join(sorted(volumes)) or "none")
                    + "; the model is placed into one of them")
        elif volumes[m.volume].read_only:
            out.add(src, ("models", i, "volume"), f"volume {m.volume!r} is mounted read-only",
                    hint="install places the model into the volume; drop read_only or pick another volume")
        parts = m.path.split("/")
        if m.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            out.add(src, ("models", i, "path"), f"path {m.path!r} must stay inside the volume",
                    hint='relative to the volume\'s target, without "." or ".." (e.g. path = "models")')
        # the manifest reader asks the same (format/grammar.py); an unknown format is the schema's enum's
        if (fmt := model_format(m.format)) and (why := fmt.name_problem(m.name)):
            out.add(src, ("models", i, "name"), why[0], hint=why[1])
        if m.reference in seen:
            out.add(src, ("models", i), f"model {m.reference} is listed twice",
                    hint=f"also models[{seen[m.reference]}]")
        seen.setdefault(m.reference, i)


def _check_env(env: dict[str, str], path: tuple, src: Source, out: Collector) -> None:
    for key, value in env.items():
        why = env_value_problem(value)
        if why:
            out.add(src, path + (key,), f"the value {why}",
                    hint="put multi-line or binary content into a [[files]] entry and point the setting at it")
        # a switch is no secret (Langfuse's AUTH_DISABLE_USERNAME_PASSWORD = "true")
        if SECRET_KEY_RE.search(key) and value not in FLAG_VALUES and not SECRET_REF_RE.fullmatch(value):
            out.add(src, path + (key,), f"{key} looks like a secret and must not be a plain setting",
                    hint=f"declare it as [secrets.{key}] (generated at install), or set it to "
                         "${secret:SERVICE.NAME} to reuse another service's secret")


def find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str] | None:
    """The first cycle of ``graph`` as ``[a, b, ..., a]`` (sorted, deterministic), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def check_cross(services: dict[str, tuple[Blueprint, Source]], report: set[str],
                 out: Collector) -> None:
    """Rules that span services: names, depends_on, ports, secret references."""
    known = sorted(services)

    def suggest(name: str) -> str:
        close = difflib.get_close_matches(name, known, n=1)
        return f"did you mean {close[0]!r}?" if close else "known services: " + ", ".join(known)

    for name in sorted(report):
        bp, src = services[name]
        for i, dep in enumerate(bp.depends_on):
            if dep not in services:
                out.add(src, ("service", "depends_on", i), f"unknown service {dep!r}", hint=suggest(dep))
            elif dep == name:
                out.add(src, ("service", "depends_on", i), "a service cannot depend on itself")
            elif services[dep][0].phase > bp.phase:
                out.add(src, ("service", "depends_on", i),
                        f"{dep!r} is in phase {services[dep][0].phase}, later than this service's phase {bp.phase}",
                        hint="depend only on services of the same or an earlier phase")
        for w in bp.when:
            if w.other not in services:
                out.add(src, ("when", w.other), f"unknown service {w.other!r}", hint=suggest(w.other))
        _check_secret_refs(bp, src, services, out)

    graph = {n: tuple(d for d in bp.depends_on) for n, (bp, _) in services.items()}
    cycle = find_cycle(graph)
    if cycle and any(c in report for c in cycle):
        first = next(c for c in cycle if c in report)
        bp, src = services[first]
        out.add(src, ("service", "depends_on"), "dependency cycle: " + " -> ".join(cycle),
                hint="remove one of these depends_on entries")

    _check_namespaced_keys(services, report, out)

    owners: dict[tuple[int, str], str] = {}
    # services outside the report first, so a clash is reported on a reported file
    for name in sorted(services, key=lambda n: (n in report, n)):
        bp, src = services[name]
        for i, p in enumerate(bp.ports):
            if p.host is None:
                continue
            key = (p.host, p.protocol)
            if key in owners and (name in report or owners[key] in report):
                out.add(src, ("ports", i, "host"), f"host port {p.host}/{p.protocol} is also used by {owners[key]!r}",
                        hint="pick a free host port; two services of a lab cannot share one")
            owners.setdefault(key, name)


def _check_secret_refs(bp: Blueprint, src: Source, services: dict, out: Collector) -> None:
    def check(env: dict[str, str], path: tuple, allowed: set[str]) -> None:
        for key, value in env.items():
            for m in SECRET_REF_RE.finditer(value):
                svc, secret = m.group(1), m.group(2)
                if svc not in services:
                    out.add(src, path + (key,), f"secret reference to unknown service {svc!r}")
                elif svc not in allowed:
                    out.add(src, path + (key,), f"secret reference to {svc!r}, which may be absent",
                            hint=f"add {svc!r} to depends_on, or move the setting to [when.{svc}.env]")
                elif secret not in {s.name for s in services[svc][0].secrets}:
                    out.add(src, path + (key,), f"{svc!r} declares no secret {secret!r}",
                            hint=f"declare [secrets.{secret}] in {svc}.toml")
    base = {bp.name, *bp.depends_on}
    check(bp.env, ("env",), base)
    if bp.metrics is not None and bp.metrics.bearer_secret:
        check({"bearer_secret": bp.metrics.bearer_secret}, ("metrics",), base)
    for w in bp.when:
        check(w.env, ("when", w.other, "env"), base | {w.other})
    for where, steps, allowed in ((("provision",), bp.provision, base),
                                  *((("when", w.other, "provision"), w.provision, base | {w.other}) for w in bp.when)):
        for i, step in enumerate(steps):
            check({".".join(path): value for path, value in step.leaves()}, (*where, i, "json"), allowed)
            if step.bearer:
                check({"bearer": step.bearer}, (*where, i), allowed)



def _check_namespaced_keys(services: dict[str, tuple[Blueprint, Source]], report: set[str],
                           out: Collector) -> None:
    """Every ``SERVICE__KEY`` of lab.env and DIR/.env must name one setting or secret only.

    The service grammar (no ``--``, no trailing ``-``) already keeps them apart;
    this is the check that proves it for the lab at hand.
    """
    owners: dict[str, str] = {}
    for name in sorted(services, key=lambda n: (n in report, n)):
        bp, src = services[name]
        keys = [(("env", k), setting_env_key(name, k)) for k in bp.env]
        keys += [(("when", w.other, "env", k), setting_env_key(name, k)) for w in bp.when for k in w.env]
        keys += [(("secrets", s.name), secret_env_key(name, s.name)) for s in bp.secrets]
        for path, flat in keys:
            owner = owners.setdefault(flat, f"{name}.{'.'.join(map(str, path))}")
            if owner != f"{name}.{'.'.join(map(str, path))}" and not owner.startswith(f"{name}."):
                if name in report:
                    out.add(src, path, f"becomes {flat}, which {owner} also becomes",
                            hint="rename the key or the service so each SERVICE__KEY is unique")
