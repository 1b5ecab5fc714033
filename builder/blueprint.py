"""Blueprints and the lab: load TOML, check it against the JSON Schema and
the semantic rules of DESIGN.md, and build typed models.

Data flows one way: ``load_lab(root)`` reads ``blueprints/lab.toml`` and
``blueprints/services/*.toml``, collects *every* problem (schema, then
semantics) and either raises one ``BlueprintError`` holding them all or
returns a ``Lab``. Everything downstream (lock, bundle, install) reads the
typed ``Lab``/``Blueprint`` objects, never raw dicts.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .errors import BlueprintError, Problem

DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
SECRET_KEY_RE = re.compile(r"(_KEY|_TOKEN|_PASSWORD|_SECRET)$|^(KEY|TOKEN|PASSWORD|SECRET)$", re.I)
SECRET_REF_RE = re.compile(r"\$\{secret:([a-z][a-z0-9-]{1,40})\.([A-Za-z_][A-Za-z0-9_.]*)\}")
DOCKER_SOCKET_RE = re.compile(r"^/(var/)?run/docker\.sock$")
PUBLIC_BINDS = {"0.0.0.0", "::"}


# --------------------------------------------------------------------------- naming

def env_id(service: str) -> str:
    """``open-webui`` -> ``OPEN_WEBUI``: a service name as an env-variable prefix."""
    return service.upper().replace("-", "_")


def secret_env_key(service: str, name: str) -> str:
    """The key under which an install's ``.env`` holds ``service``'s secret ``name``.

    Namespaced, so two postgres instances can each have a POSTGRES_PASSWORD.
    """
    return f"{env_id(service)}__{name}"


def setting_env_key(service: str, key: str) -> str:
    """The key under which ``lab.env`` holds ``service``'s non-secret setting ``key``."""
    return f"{env_id(service)}__{key}"


# --------------------------------------------------------------------------- models

@dataclass(frozen=True)
class Image:
    name: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        """``name:tag`` — what humans and the lock call the image."""
        return f"{self.name}:{self.tag}"

    @property
    def pinned(self) -> str:
        """``name:tag@digest`` — what an online compose file pulls."""
        return f"{self.name}:{self.tag}@{self.digest}"


@dataclass(frozen=True)
class Port:
    name: str
    container: int
    host: int | None = None
    protocol: str = "tcp"
    bind: str = "127.0.0.1"
    expose_reason: str | None = None


@dataclass(frozen=True)
class Secret:
    name: str
    generate: str
    length: int = 32
    description: str = ""


@dataclass(frozen=True)
class Volume:
    name: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    read_only: bool = True
    docker_socket_reason: str | None = None


@dataclass(frozen=True)
class ConfigFile:
    name: str
    target: str
    content: str


@dataclass(frozen=True)
class Health:
    port: str
    path: str = "/"
    scheme: str = "http"
    status: tuple[int, ...] = ()
    start_period: str | None = None
    timeout: str | None = None


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    start_period: str | None = None


@dataclass(frozen=True)
class Metrics:
    port: str
    path: str = "/metrics"
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resources:
    memory: str | None = None
    cpus: float | None = None
    gpus: str | int | None = None


@dataclass(frozen=True)
class When:
    """Wiring that applies only when ``other`` is in the same profile."""
    other: str
    env: dict[str, str] = field(default_factory=dict)
    depends_on: bool = False


@dataclass(frozen=True)
class RunbookEntry:
    title: str
    symptom: str
    fix: str
    cause: str | None = None


@dataclass(frozen=True)
class Blueprint:
    """One validated service blueprint."""

    name: str
    description: str
    phase: int
    category: str
    image: Image
    path: str
    depends_on: tuple[str, ...] = ()
    docs: str | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    restart: str = "unless-stopped"
    privileged: bool = False
    privileged_reason: str | None = None
    ports: tuple[Port, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[Secret, ...] = ()
    volumes: tuple[Volume, ...] = ()
    binds: tuple[Bind, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    health: Health | None = None
    healthcheck: Healthcheck | None = None
    metrics: Metrics | None = None
    resources: Resources | None = None
    when: tuple[When, ...] = ()
    runbook: tuple[RunbookEntry, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def port(self, name: str) -> Port:
        return next(p for p in self.ports if p.name == name)

    def active_when(self, present: Iterable[str]) -> tuple[When, ...]:
        """The ``[when.X]`` blocks whose X is among ``present``."""
        present = set(present)
        return tuple(w for w in self.when if w.other in present)

    def effective_depends_on(self, present: Iterable[str]) -> tuple[str, ...]:
        extra = [w.other for w in self.active_when(present) if w.depends_on]
        return tuple(sorted(set(self.depends_on) | set(extra)))

    def effective_env(self, present: Iterable[str]) -> dict[str, str]:
        env = dict(self.env)
        for w in self.active_when(present):
            env.update(w.env)
        return dict(sorted(env.items()))


@dataclass(frozen=True)
class Profile:
    name: str
    services: tuple[str, ...] = ()
    extends: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Lab:
    """The lab: lab.toml plus every blueprint, validated together."""

    root: Path
    name: str
    default_profile: str
    profiles: dict[str, Profile]
    services: dict[str, Blueprint]
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    insecure_registries: tuple[str, ...] = ()

    def profile_closure(self, profile: str) -> list[str]:
        """Sorted services of ``profile``: its own, its parents', and all depends_on."""
        if profile not in self.profiles:
            raise BlueprintError(
                f"unknown profile {profile!r}",
                hint="known profiles: " + ", ".join(sorted(self.profiles)))
        names: set[str] = set()
        seen: set[str] = set()
        stack = [profile]
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            names.update(self.profiles[p].services)
            stack.extend(self.profiles[p].extends)
        queue = list(names)
        while queue:
            for dep in self.services[queue.pop()].depends_on:
                if dep not in names:
                    names.add(dep)
                    queue.append(dep)
        # conditional depends_on never adds services: it only orders present ones
        return sorted(names)


# --------------------------------------------------------------------------- schema

@cache
def blueprint_schema() -> dict:
    """The blueprint JSON Schema (Draft 2020-12), shipped as package data."""
    text = resources.files("builder").joinpath("schemas/blueprint.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator():
    from jsonschema import Draft202012Validator
    return Draft202012Validator(blueprint_schema())


# --------------------------------------------------------------------------- locating lines

_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_.-]+)\s*=')


def _split_dotted(key: str) -> list[str]:
    parts, buf, quote = [], "", None
    for ch in key:
        if quote:
            if ch == quote:
                quote = None
            else:
                buf += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(buf.strip())
            buf = ""
        else:
            buf += ch
    parts.append(buf.strip())
    return parts


def locate_lines(text: str) -> dict[tuple, int]:
    """Map key paths (tuples of str/int) to 1-based line numbers.

    A best-effort scan of TOML headers and ``key =`` lines: enough to point a
    user at the right line; multi-line strings are skipped over.
    """
    lines: dict[tuple, int] = {}
    counters: dict[tuple, int] = {}
    table: tuple = ()
    in_multiline: str | None = None
    for no, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        m = _HEADER_RE.match(line)
        if m and not _KEY_RE.match(line):
            parts = tuple(_split_dotted(m.group(2)))
            if m.group(1) == "[[":
                idx = counters.get(parts, -1) + 1
                counters[parts] = idx
                table = parts + (idx,)
            else:
                table = parts
            lines.setdefault(table, no)
            for i in range(1, len(table)):
                lines.setdefault(table[:i], no)
            continue
        k = _KEY_RE.match(line)
        if k:
            key = tuple(_split_dotted(k.group(1)))
            lines.setdefault(table + key, no)
            for i in range(1, len(key)):
                lines.setdefault(table + key[:i], no)
            rest = line[k.end():]
            for q in ('"""', "'''"):
                if rest.count(q) % 2 == 1:
                    in_multiline = q
    return lines


def _line_for(lines: dict[tuple, int], path: tuple) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _dotted(path: Iterable) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- loading

@dataclass
class _Source:
    path: Path
    display: str
    data: dict | None = None
    lines: dict[tuple, int] = field(default_factory=dict)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, src: _Source | str, path: tuple, message: str, hint: str | None = None,
            line: int | None = None) -> None:
        if isinstance(src, _Source):
            file, line = src.display, line or _line_for(src.lines, path)
        else:
            file = src
        self.problems.append(Problem(file=file, path=_dotted(path), message=message,
                                     line=line, hint=hint))


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def _read_toml(path: Path, display: str, out: _Collector) -> _Source:
    src = _Source(path=path, display=display)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        out.add(display, (), "file not found", hint="check the path")
        return src
    except IsADirectoryError:
        out.add(display, (), "is a directory, not a TOML file")
        return src
    except OSError as exc:
        out.add(display, (), f"cannot read: {exc.strerror}")
        return src
    if not raw.strip():
        out.add(display, (), "file is empty", hint="a blueprint needs at least [service] and [image]")
        return src
    if b"\x00" in raw:
        out.add(display, (), "binary file, not TOML text", hint="blueprints are UTF-8 TOML files")
        return src
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        out.add(display, (), f"not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8",
                line=line)
        return src
    try:
        src.data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = int(m.group(1)) if m else None
        col = f", column {m.group(2)}" if m else ""
        clean = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        out.add(display, (), f"TOML syntax error{col}: {clean}", line=line,
                hint="fix the TOML syntax (https://toml.io)")
        return src
    src.lines = locate_lines(text)
    return src


def _schema_at(path: Iterable) -> dict:
    """The sub-schema that describes the value at ``path`` (best effort, for hints)."""
    schema = blueprint_schema()
    node = schema
    for part in path:
        node = _deref(schema, node)
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            ap = node.get("additionalProperties")
            node = ap if isinstance(ap, dict) else {}
    return _deref(schema, node)


def _deref(schema: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"].split("/")[-1]
        node = {**schema["$defs"][ref], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _schema_problems(src: _Source, out: _Collector) -> None:
    errors = sorted(_validator().iter_errors(src.data), key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        path = tuple(err.absolute_path)
        hint = None
        if err.validator == "additionalProperties":
            allowed = sorted(_schema_at(path).get("properties", {}))
            extra = [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
            for key in extra:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                h = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                out.add(src, path + (key,), f"unknown key {key!r}", hint=h)
            continue
        if err.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            key = missing[0] if missing else "?"
            section = _dotted(path) or "top level"
            out.add(src, path + (key,), f"required key {key!r} is missing",
                    hint=f"add {key} = ... to [{section}]" if path else f"add a [{key}] table")
            continue
        desc = _schema_at(path).get("description")
        message = _friendly_message(err, path)
        out.add(src, path, message, hint=desc)


def _friendly_message(err, path: tuple) -> str:
    inst = err.instance
    if path and path[-1] == "tag" and inst == "latest":
        return "tag 'latest' is not allowed: pin a real version tag"
    if path and path[-1] == "digest" and err.validator == "pattern":
        return f"{inst!r} is not a digest: expected 'sha256:' followed by 64 lower-case hex digits"
    if err.validator == "pattern":
        return f"{inst!r} does not match the required pattern {err.validator_value}"
    if err.validator == "enum":
        return f"{inst!r} is not one of: {', '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        return f"expected {err.validator_value}, got {type(inst).__name__} {inst!r}"
    if err.validator in ("minimum", "maximum"):
        return f"{inst!r} is out of range ({err.validator} {err.validator_value})"
    return err.message


# --------------------------------------------------------------------------- models from data

def _build_blueprint(src: _Source) -> Blueprint:
    d = src.data
    s = d["service"]
    return Blueprint(
        name=s["name"], description=s["description"], phase=s["phase"], category=s["category"],
        image=Image(**d["image"]), path=src.display,
        depends_on=tuple(s.get("depends_on", ())), docs=s.get("docs"),
        command=tuple(s["command"]) if "command" in s else None,
        entrypoint=tuple(s["entrypoint"]) if "entrypoint" in s else None,
        user=s.get("user"), restart=s.get("restart", "unless-stopped"),
        privileged=s.get("privileged", False), privileged_reason=s.get("privileged_reason"),
        ports=tuple(Port(**p) for p in d.get("ports", ())),
        env=dict(d.get("env", {})),
        secrets=tuple(Secret(name=k, **v) for k, v in sorted(d.get("secrets", {}).items())),
        volumes=tuple(Volume(**v) for v in d.get("volumes", ())),
        binds=tuple(Bind(**b) for b in d.get("binds", ())),
        files=tuple(ConfigFile(**f) for f in d.get("files", ())),
        health=Health(**{**d["health"], "status": tuple(d["health"].get("status", ()))})
        if "health" in d else None,
        healthcheck=Healthcheck(**{**d["healthcheck"], "test": tuple(d["healthcheck"]["test"])})
        if "healthcheck" in d else None,
        metrics=Metrics(**d["metrics"]) if "metrics" in d else None,
        resources=Resources(**d["resources"]) if "resources" in d else None,
        when=tuple(When(other=k, env=dict(v.get("env", {})), depends_on=v.get("depends_on", False))
                   for k, v in sorted(d.get("when", {}).items())),
        runbook=tuple(RunbookEntry(**r) for r in d.get("runbook", ())),
        raw=d,
    )


# --------------------------------------------------------------------------- semantic rules

def _is_fully_qualified(name: str) -> bool:
    host = name.split("/", 1)[0]
    return "." in host or ":" in host or host == "localhost"


def _check_service_local(bp: Blueprint, src: _Source, out: _Collector) -> None:
    stem = src.path.stem
    if bp.name != stem and src.path.suffix == ".toml":
        out.add(src, ("service", "name"), f"name {bp.name!r} differs from the file stem {stem!r}",
                hint=f"rename the file to {bp.name}.toml or set name = {stem!r}")
    if not _is_fully_qualified(bp.image.name):
        out.add(src, ("image", "name"), f"{bp.image.name!r} is not fully qualified",
                hint=f"name the registry, e.g. docker.io/{bp.image.name}"
                + ("" if "/" in bp.image.name else f" or docker.io/library/{bp.image.name}"))
    for kind, items, key in (("port", bp.ports, "ports"), ("volume", bp.volumes, "volumes")):
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
        if DOCKER_SOCKET_RE.match(b.source) and not b.docker_socket_reason:
            out.add(src, ("binds", i, "source"), "mounting the docker socket gives root on the host",
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
    for w in bp.when:
        _check_env(w.env, ("when", w.other, "env"), src, out)
        if w.other == bp.name:
            out.add(src, ("when", w.other), "a service cannot be conditional on itself")


def _check_env(env: dict[str, str], path: tuple, src: _Source, out: _Collector) -> None:
    for key, value in env.items():
        if SECRET_KEY_RE.search(key) and not SECRET_REF_RE.fullmatch(value):
            out.add(src, path + (key,), f"{key} looks like a secret and must not be a plain setting",
                    hint=f"declare it as [secrets.{key}] (generated at install), or set it to "
                         "${secret:SERVICE.NAME} to reuse another service's secret")


def _find_cycle(graph: dict[str, tuple[str, ...]]) -> list[str] | None:
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


def _check_cross(services: dict[str, tuple[Blueprint, _Source]], report: set[str],
                 out: _Collector) -> None:
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
    cycle = _find_cycle(graph)
    if cycle and any(c in report for c in cycle):
        first = next(c for c in cycle if c in report)
        bp, src = services[first]
        out.add(src, ("service", "depends_on"), "dependency cycle: " + " -> ".join(cycle),
                hint="remove one of these depends_on entries")

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


def _check_secret_refs(bp: Blueprint, src: _Source, services: dict, out: _Collector) -> None:
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
    for w in bp.when:
        check(w.env, ("when", w.other, "env"), base | {w.other})


# --------------------------------------------------------------------------- lab.toml

_LAB_KEYS = {"lab", "profiles"}
_LAB_LAB_KEYS = {"name", "default_profile", "platforms", "insecure_registries", "description"}
_PROFILE_KEYS = {"services", "extends", "description"}


def _check_keys(src: _Source, path: tuple, table: Any, allowed: set[str], out: _Collector) -> bool:
    if not isinstance(table, dict):
        out.add(src, path, f"expected a table, got {type(table).__name__}")
        return False
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            out.add(src, path + (key,), f"unknown key {key!r}",
                    hint=f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(sorted(allowed)))
    return True


def _str_list(src: _Source, path: tuple, value: Any, out: _Collector) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        out.add(src, path, "expected a list of strings")
        return ()
    return tuple(value)


def _parse_lab(src: _Source, services: dict[str, Any], out: _Collector) -> dict | None:
    d = src.data
    if not _check_keys(src, (), d, _LAB_KEYS, out):
        return None
    lab = d.get("lab")
    if lab is None:
        out.add(src, ("lab",), "required table [lab] is missing", hint='add [lab] with name = "..."')
        return None
    if not _check_keys(src, ("lab",), lab, _LAB_LAB_KEYS, out):
        return None
    name = lab.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]{1,62}", name):
        out.add(src, ("lab", "name"), "lab name must be lower-case letters, digits and hyphens",
                hint='e.g. name = "local-ai-lab"')
    profiles_raw = d.get("profiles", {})
    profiles: dict[str, Profile] = {}
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        out.add(src, ("profiles",), "at least one [profiles.NAME] is required")
        profiles_raw = {}
    for pname, p in profiles_raw.items():
        if not _check_keys(src, ("profiles", pname), p, _PROFILE_KEYS, out):
            continue
        svcs = _str_list(src, ("profiles", pname, "services"), p.get("services", []), out)
        ext = _str_list(src, ("profiles", pname, "extends"), p.get("extends", []), out)
        for i, s in enumerate(svcs):
            if s not in services:
                close = difflib.get_close_matches(s, sorted(services), n=1)
                out.add(src, ("profiles", pname, "services", i), f"no blueprint for service {s!r}",
                        hint=f"did you mean {close[0]!r}?" if close
                        else f"add blueprints/services/{s}.toml or remove it from the profile")
        for i, e in enumerate(ext):
            if e not in profiles_raw:
                out.add(src, ("profiles", pname, "extends", i), f"unknown profile {e!r}",
                        hint="known profiles: " + ", ".join(sorted(profiles_raw)))
        profiles[pname] = Profile(name=pname, services=svcs, extends=ext,
                                  description=str(p.get("description", "")))
    cycle = _find_cycle({n: p.extends for n, p in profiles.items()})
    if cycle:
        out.add(src, ("profiles", cycle[0], "extends"), "profile cycle: " + " -> ".join(cycle))
    default = lab.get("default_profile")
    if default is None:
        out.add(src, ("lab", "default_profile"), "default_profile is missing",
                hint="name the profile `labbuild release` builds by default")
    elif default not in profiles:
        out.add(src, ("lab", "default_profile"), f"unknown profile {default!r}",
                hint="known profiles: " + ", ".join(sorted(profiles)))
    platforms = _str_list(src, ("lab", "platforms"), lab.get("platforms", list(DEFAULT_PLATFORMS)), out)
    for i, plat in enumerate(platforms):
        if not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", plat):
            out.add(src, ("lab", "platforms", i), f"{plat!r} is not a platform", hint="e.g. linux/amd64")
    insecure = _str_list(src, ("lab", "insecure_registries"), lab.get("insecure_registries", []), out)
    return {"name": name, "default_profile": default, "profiles": profiles,
            "platforms": platforms or DEFAULT_PLATFORMS, "insecure_registries": insecure}


# --------------------------------------------------------------------------- public API

def lab_paths(root: Path) -> tuple[Path, list[Path]]:
    """``(lab.toml, sorted blueprint files)`` under ``root``."""
    bdir = root / "blueprints"
    return bdir / "lab.toml", sorted((bdir / "services").glob("*.toml"))


def _load_sources(paths: Iterable[Path], root: Path | None, out: _Collector) -> list[_Source]:
    return [_read_toml(p, _display(p, root), out) for p in paths]


def _validated_blueprints(sources: list[_Source], out: _Collector) -> dict[str, tuple[Blueprint, _Source]]:
    result: dict[str, tuple[Blueprint, _Source]] = {}
    for src in sources:
        if src.data is None:
            continue
        before = len(out.problems)
        _schema_problems(src, out)
        if len(out.problems) != before:
            continue
        bp = _build_blueprint(src)
        _check_service_local(bp, src, out)
        if bp.name in result:
            other = result[bp.name][1].display
            out.add(src, ("service", "name"), f"service name {bp.name!r} is also used by {other}")
            continue
        result[bp.name] = (bp, src)
    return result


def validate_paths(root: Path, paths: list[Path] | None = None) -> list[Problem]:
    """Every problem in the lab under ``root`` (or only in ``paths``).

    With ``paths``, those files are checked in the context of the lab's other
    blueprints (when ``root`` holds a lab), and only their problems are
    reported; without, the whole lab including lab.toml is checked.
    """
    out = _Collector()
    lab_file, files = lab_paths(root)
    if paths:
        given = [Path(p) for p in paths]
        sources = _load_sources(given, root, out)
        given_resolved = {p.resolve() for p in given}
        context_out = _Collector()
        context = _load_sources([f for f in files if f.resolve() not in given_resolved], root, context_out)
        ctx = _validated_blueprints(context, context_out)
        mine = _validated_blueprints(sources, out)
        merged = {**ctx, **mine}
        _check_cross(merged, set(mine), out)
        return _sorted(out.problems)
    if not lab_file.exists() and not files:
        out.add(str(root), (), "no lab here: blueprints/lab.toml and blueprints/services/*.toml are missing",
                hint="run labbuild from the lab repository or pass --root DIR")
        return out.problems
    _check_whole_lab(root, out)
    return _sorted(out.problems)


def _check_whole_lab(root: Path, out: _Collector) -> tuple[dict[str, tuple[Blueprint, _Source]], dict | None]:
    """Read and check every blueprint and lab.toml once; problems go to ``out``."""
    lab_file, files = lab_paths(root)
    services = _validated_blueprints(_load_sources(files, root, out), out)
    _check_cross(services, set(services), out)
    lab_src = _read_toml(lab_file, _display(lab_file, root), out)
    parsed = None
    if lab_src.data is not None:
        parsed = _parse_lab(lab_src, {f.stem: None for f in files}, out)
    return services, parsed


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.path))


def load_lab(root: str | Path) -> Lab:
    """Load and validate the whole lab under ``root``; raise BlueprintError listing every problem."""
    root = Path(root)
    out = _Collector()
    lab_file, files = lab_paths(root)
    if not lab_file.exists():
        raise BlueprintError(f"no lab at {root}: {lab_file} is missing",
                             hint="run labbuild from the lab repository or pass --root DIR")
    services, parsed = _check_whole_lab(root, out)
    if out.problems or parsed is None:
        problems = _sorted(out.problems)
        raise BlueprintError(f"{len(problems)} problem(s) in the blueprints", problems=problems,
                             hint="run `labbuild validate` and fix each line above")
    return Lab(root=root, name=parsed["name"], default_profile=parsed["default_profile"],
               profiles=parsed["profiles"], services={n: bp for n, (bp, _) in sorted(services.items())},
               platforms=tuple(parsed["platforms"]), insecure_registries=tuple(parsed["insecure_registries"]))
