"""The typed blueprint and lab models, and the names derived from them.

Built once from schema-valid TOML (``build_blueprint``); everything
downstream (lock, render, bundle, install) reads these frozen objects, never
raw dicts. Also the naming rules other stages share: ``env_id``,
``secret_env_key``, ``setting_env_key`` and the ``${secret:svc.NAME}``
reference syntax (``SECRET_REF_RE``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import BlueprintError
from ..format.models import model_format

DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
SECRET_REF_RE = re.compile(r"\$\{secret:([a-z][a-z0-9-]{1,40})\.([A-Za-z_][A-Za-z0-9_.]*)\}")
EMBEDDING_REF = "${model:embedding}"      # in [when.X.embedding.env]: X's embedding model, by its Ollama name


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
    track: str | None = None   # which tags are candidates (a regex matched in full); None: the tag's own shape
    group: str | None = None   # pins that move together (``labbuild outdated``, ``lock --update --to/--latest``)

    @property
    def reference(self) -> str:
        """``name:tag`` — what humans and the lock call the image."""
        return f"{self.name}:{self.tag}"

    @property
    def pinned(self) -> str:
        """``name:tag@digest`` — what an online compose file pulls."""
        return f"{self.name}:{self.tag}@{self.digest}"


@dataclass(frozen=True)
class Model:
    """A model shipped like an image (``[[models]]``): pinned, locked, bundled, placed into a volume."""

    name: str                 # fully qualified repository: registry.ollama.ai/library/qwen2.5
    tag: str
    digest: str               # sha256 of the model's manifest: the pin
    format: str               # on-disk layout: a key of format.models.MODEL_FORMATS
    volume: str               # one of the service's [[volumes]]
    path: str                 # models root relative to that volume's target
    role: str | None = None   # "chat" | "embedding"

    @property
    def reference(self) -> str:
        """``name:tag`` — what the lock calls the model."""
        return f"{self.name}:{self.tag}"

    @property
    def served_name(self) -> str:
        """The name the model server lists and serves (its format says: ``qwen2.5:0.5b`` for
        Ollama's own registry's library, else ``host/namespace/model:tag``)."""
        fmt = model_format(self.format)
        return fmt.display_name(self.name, self.tag) if fmt else self.reference


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
    """A secret: generated at install (``generate``, ``length`` random characters after
    ``prefix``), ``derive``d at install from another generated secret of the service (``source``:
    its bcrypt hash; ``generate`` is None), or ``supplied`` by the operator (never generated;
    ``generate`` is None).

    Its rotation decision: ``rotate`` True (``secrets rotate``/``set`` may change it, every
    ``rotate_days`` days when set; ``holder`` runs first in this service's container), False
    (never: ``rotate_reason`` says why), or None (undecided: rotate and set refuse it)."""
    name: str
    generate: str | None = None
    length: int = 32
    description: str = ""
    prefix: str = ""
    supplied: bool = False
    rotate: bool | None = None
    rotate_reason: str = ""
    rotate_days: int | None = None
    holder: tuple[str, ...] = ()        # [secrets.NAME.holder] exec
    show: bool = False                  # a person's sign-in credential: install prints it once, when generated
    derive: str | None = None           # made at install from the secret ``source`` of this service (bcrypt)
    source: str = ""                    # [secrets.NAME] from: the NAME it is derived from


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
    bearer_secret: str | None = None      # ${secret:SERVICE.NAME}: scrape with that bearer token

    @property
    def bearer_ref(self) -> tuple[str, str] | None:
        """``(service, secret name)`` of ``bearer_secret``, or None."""
        m = SECRET_REF_RE.fullmatch(self.bearer_secret or "")
        return (m.group(1), m.group(2)) if m else None


@dataclass(frozen=True)
class Resources:
    memory: str | None = None
    cpus: float | None = None
    gpus: str | int | None = None


@dataclass(frozen=True)
class Backup:
    """``[backup]``: how ``labbuild backup`` captures the service's data.

    ``volume``: stop it, archive its volumes through the engine, start it
    again. ``exec``: ``dump`` streams the data out of the running container,
    ``restore`` reads it back on stdin.
    """
    method: str = "volume"
    dump: tuple[str, ...] = ()
    restore: tuple[str, ...] = ()


@dataclass(frozen=True)
class When:
    """Wiring that applies only when ``other`` is in the same profile."""
    other: str
    env: dict[str, str] = field(default_factory=dict)
    depends_on: bool = False
    files: tuple["ConfigFile", ...] = ()   # each replaces the [[files]] entry of the same name
    # [when.OTHER.embedding]: only in offline bundles where OTHER ships an embedding model
    embedding_env: dict[str, str] = field(default_factory=dict)
    embedding_start_period: str | None = None
    provision: tuple["Provision", ...] = ()   # [[when.OTHER.provision]]: after [[provision]], only with OTHER


@dataclass(frozen=True)
class Provision:
    """One ``[[provision]]`` step: an HTTP call install makes once the service is healthy.

    ``json`` is the body as data (string leaves may hold ``${secret:SVC.NAME}``);
    ``status``: it did it; ``already_status`` with ``already_text`` in the body: done before;
    ``bearer``: ``${secret:SVC.NAME}`` sent as ``Authorization: Bearer <value>``.
    """
    description: str
    port: str
    path: str
    status: tuple[int, ...]
    method: str = "POST"
    json: dict[str, Any] = field(default_factory=dict)
    already_status: tuple[int, ...] = ()
    already_text: str = ""
    bearer: str = ""

    def leaves(self) -> list[tuple[tuple[str, ...], str]]:
        """``(key path, string)`` of every string leaf of ``json``."""
        out: list[tuple[tuple[str, ...], str]] = []

        def walk(obj: dict[str, Any], path: tuple[str, ...]) -> None:
            for k, v in obj.items():
                if isinstance(v, dict):
                    walk(v, path + (k,))
                else:
                    out.append((path + (k,), v))
        walk(self.json, ())
        return out


@dataclass(frozen=True)
class RunbookEntry:
    title: str
    symptom: str
    fix: str
    cause: str | None = None


@dataclass(frozen=True)
class FrontDoorOidc:
    """``[front_door.oidc]``: how the service signs in against the lab's provider."""
    callback: str
    env: dict[str, str]                      # issuer, client_id, client_secret[, base_url] -> env name
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    token_auth: str = "client_secret_basic"  # or "client_secret_post"


@dataclass(frozen=True)
class FrontDoorProjects:
    """``[front_door.projects]``: what a lab project (a provider group) is in this service."""
    what: str
    isolation: str


@dataclass(frozen=True)
class FrontDoor:
    """``[front_door]``: the service's web UI behind the lab's front door (issue 23)."""
    port: str
    host: str
    roles: tuple[str, ...]
    sign_in: str                             # "oidc" | "forward-auth"
    oidc: FrontDoorOidc | None = None
    url_env: tuple[str, ...] = ()            # env names set to https://<host>.<domain>/ when the door is on
    projects: FrontDoorProjects | None = None  # what a lab project is here and what it isolates


@dataclass(frozen=True)
class Access:
    """lab.toml ``[access]``: the front door's domain, provider, roles and projects."""
    domain: str
    provider: str
    roles: dict[str, str]
    projects: dict[str, str]


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
    provision: tuple[Provision, ...] = ()   # [[provision]]: calls install makes once the service is healthy
    models: tuple[Model, ...] = ()
    backup: Backup = Backup()
    migrations: str = "reversible"          # [upgrade] migrations: reversible | one-way
    data_in: tuple[str, ...] = ()           # [upgrade] data_in: services holding the data it migrates
    front_door: FrontDoor | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def supplied_secrets(self) -> tuple[Secret, ...]:
        """The secrets the operator supplies (never generated)."""
        return tuple(s for s in self.secrets if s.supplied)

    def port(self, name: str) -> Port:
        return next(p for p in self.ports if p.name == name)

    def active_when(self, present: Iterable[str]) -> tuple[When, ...]:
        """The ``[when.X]`` blocks whose X is among ``present``."""
        present = set(present)
        return tuple(w for w in self.when if w.other in present)

    def effective_depends_on(self, present: Iterable[str]) -> tuple[str, ...]:
        extra = [w.other for w in self.active_when(present) if w.depends_on]
        return tuple(sorted(set(self.depends_on) | set(extra)))

    def effective_files(self, present: Iterable[str]) -> tuple[ConfigFile, ...]:
        """``[[files]]`` with each active ``[[when.X.files]]`` entry in place of the one of the same name."""
        files = {f.name: f for f in self.files}
        for w in self.active_when(present):
            files.update({f.name: f for f in w.files})
        return tuple(files[f.name] for f in self.files)

    def effective_provision(self, present: Iterable[str]) -> tuple["Provision", ...]:
        """``[[provision]]`` then the steps of each active ``[[when.X.provision]]`` (in X's order)."""
        return self.provision + tuple(p for w in self.active_when(present) for p in w.provision)

    def effective_env(self, present: Iterable[str], embeddings: dict[str, str] | None = None) -> dict[str, str]:
        """``[env]`` plus the active ``[when.X.env]``; with ``embeddings`` (service -> the Ollama
        name of the embedding model it ships in this offline bundle) also ``[when.X.embedding.env]``."""
        env = dict(self.env)
        for w in self.active_when(present):
            env.update(w.env)
            if embeddings and w.other in embeddings:
                env.update({k: v.replace(EMBEDDING_REF, embeddings[w.other]) for k, v in w.embedding_env.items()})
        return dict(sorted(env.items()))

    def effective_start_period(self, present: Iterable[str], embeddings: dict[str, str] | None = None) -> str | None:
        """``[health].start_period``, shortened by an active ``[when.X.embedding].start_period``."""
        start = self.health.start_period if self.health else None
        for w in self.active_when(present):
            if embeddings and w.other in embeddings and w.embedding_start_period:
                start = w.embedding_start_period
        return start


@dataclass(frozen=True)
class Profile:
    name: str
    services: tuple[str, ...] = ()
    extends: tuple[str, ...] = ()
    description: str = ""
    optional: tuple[str, ...] = ()    # installed, started only once their supplied secrets exist


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
    access: Access | None = None

    def door_on(self, profile: str) -> bool:
        """Whether ``profile``'s closure holds the front door's provider (lab.toml ``[access]``)."""
        return self.access is not None and self.access.provider in self.profile_closure(profile)

    def _profile_chain(self, profile: str) -> list[Profile]:
        """``profile`` and every profile it extends, transitively (each once)."""
        if profile not in self.profiles:
            raise BlueprintError(
                f"unknown profile {profile!r}",
                hint="known profiles: " + ", ".join(sorted(self.profiles)))
        out: list[Profile] = []
        seen: set[str] = set()
        stack = [profile]
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            out.append(self.profiles[p])
            stack.extend(self.profiles[p].extends)
        return out

    def optional_services(self, profile: str) -> tuple[str, ...]:
        """Sorted services ``optional`` in ``profile`` or a profile it extends."""
        return tuple(sorted({s for p in self._profile_chain(profile) for s in p.optional}))

    def profile_closure(self, profile: str) -> list[str]:
        """Sorted services of ``profile``: its own and optional ones, its parents', and all depends_on."""
        names: set[str] = set()
        for p in self._profile_chain(profile):
            names.update(p.services)
            names.update(p.optional)
        queue = list(names)
        while queue:
            for dep in self.services[queue.pop()].depends_on:
                if dep not in names:
                    names.add(dep)
                    queue.append(dep)
        # conditional depends_on never adds services: it only orders present ones
        return sorted(names)


# --------------------------------------------------------------------------- models from data

def build_blueprint(d: dict[str, Any], path: str) -> Blueprint:
    """The typed Blueprint of one schema-valid TOML document read from ``path``."""
    s = d["service"]
    return Blueprint(
        name=s["name"], description=s["description"], phase=s["phase"], category=s["category"],
        image=Image(**d["image"]), path=path,
        depends_on=tuple(s.get("depends_on", ())), docs=s.get("docs"),
        command=tuple(s["command"]) if "command" in s else None,
        entrypoint=tuple(s["entrypoint"]) if "entrypoint" in s else None,
        user=s.get("user"), restart=s.get("restart", "unless-stopped"),
        privileged=s.get("privileged", False), privileged_reason=s.get("privileged_reason"),
        ports=tuple(Port(**p) for p in d.get("ports", ())),
        env=dict(d.get("env", {})),
        secrets=tuple(Secret(name=k, **{"source" if f == "from" else f: x for f, x in v.items() if f != "holder"},
                             holder=tuple(v.get("holder", {}).get("exec", ())))
                      for k, v in sorted(d.get("secrets", {}).items())),
        volumes=tuple(Volume(**v) for v in d.get("volumes", ())),
        binds=tuple(Bind(**b) for b in d.get("binds", ())),
        files=tuple(ConfigFile(**f) for f in d.get("files", ())),
        health=Health(**{**d["health"], "status": tuple(d["health"].get("status", ()))})
        if "health" in d else None,
        healthcheck=Healthcheck(**{**d["healthcheck"], "test": tuple(d["healthcheck"]["test"])})
        if "healthcheck" in d else None,
        metrics=Metrics(**d["metrics"]) if "metrics" in d else None,
        resources=Resources(**d["resources"]) if "resources" in d else None,
        when=tuple(When(other=k, env=dict(v.get("env", {})), depends_on=v.get("depends_on", False),
                        files=tuple(ConfigFile(**f) for f in v.get("files", ())),
                        embedding_env=dict(v.get("embedding", {}).get("env", {})),
                        embedding_start_period=v.get("embedding", {}).get("start_period"),
                        provision=_provisions(v.get("provision", ())))
                   for k, v in sorted(d.get("when", {}).items())),
        runbook=tuple(RunbookEntry(**r) for r in d.get("runbook", ())),
        provision=_provisions(d.get("provision", ())),
        models=tuple(Model(**m) for m in d.get("models", ())),
        backup=Backup(method=d.get("backup", {}).get("method", "volume"),
                      dump=tuple(d.get("backup", {}).get("dump", ())),
                      restore=tuple(d.get("backup", {}).get("restore", ()))),
        migrations=d.get("upgrade", {}).get("migrations", "reversible"),
        data_in=tuple(d.get("upgrade", {}).get("data_in", ())),
        front_door=_front_door(d["front_door"]) if "front_door" in d else None,
        raw=d,
    )


def _provisions(steps: Any) -> tuple[Provision, ...]:
    return tuple(Provision(**{**p, "status": tuple(p["status"]), "already_status": tuple(p.get("already_status", ()))})
                 for p in steps)


def _front_door(fd: dict[str, Any]) -> FrontDoor:
    oidc = fd.get("oidc")
    return FrontDoor(port=fd["port"], host=fd["host"], roles=tuple(fd["roles"]), sign_in=fd["sign_in"],
                     url_env=tuple(fd.get("url_env", ())),
                     projects=FrontDoorProjects(**fd["projects"]) if "projects" in fd else None,
                     oidc=None if oidc is None else FrontDoorOidc(
                         callback=oidc["callback"], env=dict(sorted(oidc["env"].items())),
                         scopes=tuple(oidc.get("scopes", ("openid", "profile", "email", "groups"))),
                         token_auth=oidc.get("token_auth", "client_secret_basic")))
