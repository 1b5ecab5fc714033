"""The bundle format, format 1: every file name, the ``manifest.json`` model and
its one reader and writer, the ``SHA256SUMS`` format, the reader of
``secrets.env.example``, and the version grammar.

Both sides meet here and only here: the build side (``pack``, ``release``,
``fetch``) writes what this module names, the read side (``reader``,
``verify``, ``diff``) and the install side (``builder.install``) read it
through this module. A format change is an edit to this file.

A bundle is one archive holding one top directory ``<lab>-<profile>-<version>/``::

    compose.yaml  lab.env  secrets.env.example  lock.json  install.sh
    manifest.json       this model (canonical JSON)
    SHA256SUMS          ``sha256sum -c`` format, every file but itself and the signature
    manifest.json.sig   with ``release --sign``: base64 DER ECDSA-P256/SHA-256 over manifest.json
    manifest.json.sigstore.json   the same signature as a Sigstore bundle v0.3
    provenance.intoto.json        DSSE envelope of an SLSA Provenance v1 statement (signed with --sign)
    sbom/<service>_<os>_<arch>.cdx.json   image bundles: CycloneDX 1.6 per image and platform
    runbooks/<service>.md, runbooks/README.md, observability/...
    images/             with ``--with-images``: OCI layout + docker-load manifests

manifest.json: ``{"format": 1, "lab", "name" (top dir), "version", "profile",
"inputs", "labbuild", "offline", "platforms", "services": {name: {"image",
"digest", "verified", "config_digests", "ports", "health", "healthcheck",
"depends_on", "volumes", "secrets", "runbook"[, "memory", "gpus", "optional", "supplied"]}},
"files": {arcname: {"sha256", "size"}}}``; ``files`` lists every file but manifest.json,
SHA256SUMS and the signature. Optional fields appear only when set: ``memory`` and ``gpus``
(``[resources]``; GPUs are reserved only with ``install --gpu``), ``optional`` (true: started
only once its supplied secrets exist, never fails an install) and ``supplied`` (``[{"key",
"description"}]``: operator-supplied secrets, never generated, not in ``secrets``).
A delta bundle (``release --since``) adds ``"since"`` (``DeltaBase``: the base
release and the blobs and base images it relies on); its ``images/blobs/``
holds only what the base lacks.

``models`` (optional, only for services with ``[[models]]``): ``[{"name", "tag",
"digest", "format", "volume", "path", "role", "media_type", "size", "blobs":
[{"digest", "size", "media_type"}]}]`` — the model's manifest is the blob
``digest`` (``size`` bytes) and ``blobs`` are its config and layers. In an image
bundle every one of them is a member ``images/blobs/sha256/<hex>``, in the
same OCI layout as the images (each blob once); a bundle without images
only names them. ``model_bytes`` is what placing them writes.
"description"}]``: operator-supplied secrets, never generated, not in ``secrets``). The backup fields appear only when not
their default: ``backup`` (``{"method", "dump", "restore"}``), ``migrations`` ("one-way") and
``data_in`` (the services holding the data a one-way service migrates). ``wired_to`` (when
not empty): the services of the bundle whose ``[when.X]`` blocks are active for this one — the
connections its configuration implies even where its environment names no address (Weaviate's
Ollama modules are pointed at Ollama per collection); the chart's NetworkPolicy opens them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import BundleError, Problem
from ..fsutil import canonical_json
from .. import names
from ..limits import MAX_MANIFEST_BYTES, MAX_MEMBERS, MAX_PROBLEMS, MAX_SUMS_BYTES
from ..platforms import platform_file
from ..typecheck import field_problems, summarize

BUNDLE_FORMAT = 1

# --------------------------------------------------------------------------- file names

COMPOSE_FILE = "compose.yaml"
COMPOSE_GPU_FILE = "compose.gpu.yaml"      # only in bundles with a [resources] gpus service
LAB_ENV = "lab.env"
SECRETS_EXAMPLE = "secrets.env.example"
LOCK_FILE = "lock.json"
INSTALL_SCRIPT = "install.sh"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURE = "manifest.json.sig"
SIGSTORE = "manifest.json.sigstore.json"            # the same signature as a Sigstore bundle (v0.3)
PROVENANCE = "provenance.intoto.json"               # DSSE: in-toto Statement v1, SLSA Provenance v1
SBOM_DIR = "sbom"                                   # image bundles: one CycloneDX 1.6 document per image and platform
UNSUMMED = frozenset({SUMS, SIGNATURE, SIGSTORE})   # not in SHA256SUMS (made from manifest.json after it)
UNLISTED = frozenset({MANIFEST, SUMS, SIGNATURE, SIGSTORE, PROVENANCE})   # not in manifest["files"]
TRUST_FILES = (MANIFEST, SUMS, SIGNATURE, SIGSTORE, PROVENANCE)           # what verification reads of a bundle

IMAGES_DIR = "images"
IMAGE_BLOBS_PREFIX = "images/blobs/"
DOCKER_LOAD_DEFAULT = "images/manifest.json"        # docker-load manifest of the first platform


def runbook_path(service: str) -> str:
    """Where a service's runbook lives in a bundle."""
    return f"runbooks/{service}.md"


def docker_load_manifest(platform: str) -> str:
    """The docker-load manifest of ``platform`` in a bundle."""
    return f"images/docker-load/{platform_file(platform)}.json"


def bundle_top(lab: str, profile: str, version: str) -> str:
    """The bundle's top directory: ``<lab>-<profile>-<version>``."""
    return f"{lab}-{profile}-{version}"


def bundle_filename(lab: str, profile: str, version: str, with_images: bool) -> str:
    """``<top>.tar.gz``; ``<top>.tar`` for image bundles (layers are compressed already)."""
    return bundle_top(lab, profile, version) + (".tar" if with_images else ".tar.gz")


def delta_top(lab: str, profile: str, version: str, base_version: str) -> str:
    """A delta bundle's top directory: ``<lab>-<profile>-<version>-since-<base version>``."""
    return f"{bundle_top(lab, profile, version)}-since-{base_version}"


def delta_filename(lab: str, profile: str, version: str, base_version: str) -> str:
    """``<delta top>.tar`` (a delta always carries images)."""
    return delta_top(lab, profile, version, base_version) + ".tar"


# --------------------------------------------------------------------------- versions

def is_version(version: object) -> bool:
    """SemVer 2.0 (the ``version`` grammar of ``builder.names``), matched in full."""
    return names.is_valid("version", version)


# --------------------------------------------------------------------------- secrets.env.example

@dataclass(frozen=True)
class ExampleSecret:
    """A generated secret as ``secrets.env.example`` names it (written by
    ``builder.render.envfile.render_secrets_example``): a ``KEY=`` line under
    ``# svc: generate=KIND length=N[ prefix=P][: description]``."""

    key: str
    service: str | None      # None when the comment above the key does not say
    generate: str            # token | password | hex; token when unsaid
    length: int              # 32 when unsaid
    prefix: str = ""         # fixed text before the random part (LiteLLM's sk-)
    description: str = ""


_EXAMPLE_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")
_EXAMPLE_COMMENT = re.compile(r"^# ([a-z][a-z0-9-]*): generate=(\w+) length=(\d+)(?: prefix=([A-Za-z0-9_-]+))?"
                              r"(?:: (.*))?$")
_EXAMPLE_PREFIX = re.compile(r"\bprefix=([A-Za-z0-9][A-Za-z0-9_-]{0,15})(?=[\s:]|$)")
_PREFIX_GRAMMAR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")


def read_secrets_example(text: str) -> list[ExampleSecret]:
    """The generated secrets of a ``secrets.env.example``, in order: its one reader (install
    generates them, the Helm export makes Secrets of them; install.sh's awk reads the same
    lines and is tested to agree). Operator-supplied secrets are commented out (``#KEY=``):
    never read. A comment in the form above gives service, kind, length, prefix and
    description; any other comment lines just above a key are searched for ``generate``,
    ``length`` and ``prefix`` (token/32 when they do not say)."""
    out: list[ExampleSecret] = []
    comments: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        m = _EXAMPLE_KEY.match(line)
        if m:
            out.append(_example_secret(m.group(1), comments))
        comments = []
    return out


def _example_secret(key: str, comments: list[str]) -> ExampleSecret:
    for c in reversed(comments):
        if m := _EXAMPLE_COMMENT.match(c):
            prefix = m[4] if m[4] and _PREFIX_GRAMMAR.fullmatch(m[4]) else ""
            return ExampleSecret(key, m[1], m[2], int(m[3]), prefix, m[5] or "")
    said = " ".join(comments)
    kind = re.search(r"generate[ =:]*(token|password|hex)", said)
    length = re.search(r"length[ =:]*([0-9]+)", said)
    prefix = _EXAMPLE_PREFIX.search(said)
    return ExampleSecret(key, None, kind.group(1) if kind else "token", int(length.group(1)) if length else 32,
                         prefix.group(1) if prefix else "")


# --------------------------------------------------------------------------- SHA256SUMS

def render_sums(files: dict[str, str]) -> bytes:
    """SHA256SUMS text (``sha256sum -c`` format) from ``{arcname: sha256 hex}``."""
    return "".join(f"{h}  {n}\n" for n, h in sorted(files.items(), key=lambda kv: kv[0].encode())).encode()


_SUMS_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^\x00-\x1f\x7f]+)")


def parse_sums(data: bytes, problems: list[Problem]) -> dict[str, str]:
    """``{arcname: sha256 hex}`` from SHA256SUMS; each bad line becomes a Problem.

    Bounded: past ``MAX_SUMS_BYTES`` the file is refused whole, and after
    ``MAX_PROBLEMS`` malformed lines the rest are counted, not listed.
    """
    sums: dict[str, str] = {}
    if len(data) > MAX_SUMS_BYTES:
        problems.append(Problem(file=SUMS, path="", message=f"{len(data)} bytes: larger than a bundle's "
                                f"SHA256SUMS may be ({MAX_SUMS_BYTES})", hint="the bundle is damaged"))
        return sums
    count = data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
    if count > MAX_MEMBERS:
        problems.append(Problem(file=SUMS, path="", message=f"{count} lines: more than a bundle has "
                                f"members ({MAX_MEMBERS})", hint="the bundle is damaged"))
        return sums
    bad = 0
    lines = data.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()                             # the final newline ends the file
    for no, line in enumerate(lines, start=1):
        m = _SUMS_LINE.fullmatch(line)
        if not m:
            bad += 1
            if bad <= MAX_PROBLEMS:
                problems.append(Problem(file=SUMS, path="", line=no, message="malformed line"))
            continue
        if m[2] in sums:
            problems.append(Problem(file=SUMS, path="", line=no, message=f"{m[2]} listed twice"))
        sums[m[2]] = m[1]
    if bad > MAX_PROBLEMS:
        problems.append(Problem(file=SUMS, path="", message=f"and {bad - MAX_PROBLEMS} more malformed lines"))
    return sums


def manifest_grammar_problems(m: "Manifest") -> list[str]:
    """Names in a manifest that reach paths, env files and commands on the target, checked in full."""
    out = []
    for kind, key, value in (("lab", "lab", m.lab), ("profile", "profile", m.profile),
                             ("version", "version", m.version)):
        if not names.is_valid(kind, value):
            out.append(f"{key}: {names.problem(kind, value)}")
    top = bundle_top(m.lab, m.profile, m.version)
    if not out and not (m.name == top or (m.name.startswith(top + "-") and re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", m.name))):
        out.append(f"name: {m.name!r} is not the bundle's top directory {top!r}")
    out += [f"platforms: {names.problem('platform', p)}" for p in m.platforms if not names.is_valid("platform", p)]
    for svc, s in m.services.items():
        if not names.is_valid("service", svc):
            out.append(f"services: {names.problem('service', svc)}")
        out += [f"services.{svc}.secrets: {names.problem('env_key', k)}" for k in s.secrets
                if not names.is_valid("env_key", k)]
        out += [f"services.{svc}.volumes: {v.volume!r} is not a volume name" for v in s.volumes
                if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", v.volume)]
        if not names.is_valid("digest", s.digest):
            out.append(f"services.{svc}.digest: {names.problem('digest', s.digest)}")
        out += model_grammar_problems(svc, s)
    out += [f"files: {rel!r} is not a safe relative path" for rel in m.files if not safe_relative(rel)]
    if m.since is not None:     # a delta: its base's names reach messages, install.sh and file names too
        since = m.since
        if not names.is_valid("version", since.version):
            out.append(f"since.version: {names.problem('version', since.version)}")
        if not re.fullmatch(r"[0-9a-f]{64}", since.manifest_sha256):
            out.append("since.manifest_sha256: not a sha256 hex digest")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", since.bundle):
            out.append(f"since.bundle: {since.bundle[:80]!r} is not a bundle file name")
        out += [f"since.blobs: {names.problem('digest', d)}" for d in since.blobs if not names.is_valid("digest", d)]
        out += [f"since.images: {names.problem('digest', i.config)}" for i in since.images
                if not names.is_valid("digest", i.config)]
    return out


_MODEL_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def model_grammar_problems(svc: str, s: "ManifestService") -> list[str]:
    """A service's models: every name that install turns into a path inside a volume."""
    out = []
    volumes = {v.name for v in s.volumes}
    for i, m in enumerate(s.models):
        where = f"services.{svc}.models.{i}"
        parts = m.name.split("/")
        if len(parts) != 3 or not all(_MODEL_NAME_PART.fullmatch(p) and p not in (".", "..") for p in parts):
            out.append(f"{where}.name: {m.name!r} is not host/namespace/model")
        if not names.is_valid("tag", m.tag):
            out.append(f"{where}.tag: {names.problem('tag', m.tag)}")
        out += [f"{where}: {names.problem('digest', d)}" for d in (m.digest, *(b.digest for b in m.blobs))
                if not names.is_valid("digest", d)]
        if not safe_relative(m.path):
            out.append(f"{where}.path: {m.path!r} is not a safe relative path")
        if m.volume not in volumes:
            out.append(f"{where}.volume: {m.volume!r} is not a volume of {svc}")
        if m.format != "ollama":
            out.append(f"{where}.format: {m.format!r} is not a known layout")
    return out


def safe_relative(rel: str) -> bool:
    """A bundle-relative POSIX path with no empty, '.', '..' parts, backslashes or control characters."""
    parts = rel.split("/")
    return bool(rel) and not any(p in ("", ".", "..") for p in parts) and "\\" not in rel \
        and not re.search(r"[\x00-\x1f\x7f]", rel)


# --------------------------------------------------------------------------- the manifest model

@dataclass(frozen=True)
class ManifestPort:
    name: str
    container: int
    host: int | None
    bind: str
    protocol: str


@dataclass(frozen=True)
class ManifestHealth:
    port: str
    host_port: int | None
    path: str
    scheme: str
    status: tuple[int, ...] = ()
    start_period: str | None = None
    timeout: str | None = None


@dataclass(frozen=True)
class ManifestVolume:
    name: str
    volume: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ManifestSupplied:
    """An operator-supplied secret: its key in the install's .env and where to get it."""
    key: str
    description: str = ""


@dataclass(frozen=True)
class ManifestBlob:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class ManifestModel:
    """One ``[[models]]`` entry of a service as shipped: where it goes and every blob it needs."""

    name: str                               # fully qualified repository
    tag: str
    digest: str                             # the manifest's sha256 (the pin)
    format: str                             # on-disk layout: "ollama"
    volume: str                             # the service's volume (ManifestVolume.name)
    path: str                               # models root relative to the volume's target
    media_type: str                         # of the manifest
    size: int                               # bytes of the manifest
    blobs: tuple[ManifestBlob, ...]         # config, then layers
    role: str | None = None

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def total_size(self) -> int:
        return self.size + sum(b.size for b in self.blobs)


@dataclass(frozen=True)
class ManifestBackup:
    """How ``labbuild backup`` captures a service (``[backup]`` of its blueprint)."""

    method: str = "volume"                  # volume | exec
    dump: tuple[str, ...] = ()              # exec: argv whose stdout is the backup
    restore: tuple[str, ...] = ()           # exec: argv reading the backup on stdin


@dataclass(frozen=True)
class ManifestService:
    image: str                              # name:tag
    digest: str                             # the pin
    verified: bool                          # False: lock entry made by `lock --offline`
    config_digests: dict[str, str]          # platform -> config digest (= image ID after load)
    ports: tuple[ManifestPort, ...]
    health: ManifestHealth | None
    depends_on: tuple[str, ...]             # effective: [when.X].depends_on included
    volumes: tuple[ManifestVolume, ...]
    secrets: tuple[str, ...]                # env keys of the install's .env
    runbook: str
    healthcheck: bool = False               # an in-container healthcheck exists
    memory: str | None = None               # [resources] memory (omitted from the JSON when None)
    gpus: str | int | None = None           # [resources] gpus: reserved only with `install --gpu` (idem)
    optional: bool = False                  # started only once its supplied secrets exist; never fails install
    supplied: tuple[ManifestSupplied, ...] = ()   # operator-supplied secrets (not in ``secrets``)
    models: tuple[ManifestModel, ...] = ()  # optional: omitted from JSON when empty
    backup: ManifestBackup = ManifestBackup()   # omitted from manifest.json when the default
    migrations: str = "reversible"          # "one-way": omitted when reversible
    data_in: tuple[str, ...] = ()           # services holding the data it migrates; omitted when empty
    wired_to: tuple[str, ...] = ()          # partners of its active [when.X] blocks; omitted when empty


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class ReliedImage:
    """A base image a delta bundle relies on: the engine must hold it (by image ID = ``config``)
    because the delta does not carry its config (``whole``) or its ``layers`` bottom layers."""

    reference: str          # name:tag in the base release
    platform: str
    config: str             # its config digest = its image ID after load
    layers: int             # how many of its bottom layers (their chain) the delta relies on
    whole: bool             # the delta's image is this very image: nothing of it is carried


@dataclass(frozen=True)
class DeltaBase:
    """``since`` of a delta bundle's manifest: the base release and what the delta relies on.

    ``blobs``: every blob of the delta's images (all platforms) it does not
    carry, digest -> size; ``images``: the base images that must be in the
    engine (or supplied by ``install --base``) for those blobs' chains.
    """

    lab: str
    profile: str
    version: str
    manifest_sha256: str    # sha256 of the base bundle's manifest.json
    bundle: str             # the base bundle's file name
    blobs: dict[str, int]
    images: tuple[ReliedImage, ...]

    def to_json(self) -> dict[str, Any]:
        return {"lab": self.lab, "profile": self.profile, "version": self.version,
                "manifest_sha256": self.manifest_sha256, "bundle": self.bundle,
                "blobs": dict(sorted(self.blobs.items())), "images": [asdict(i) for i in self.images]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DeltaBase":
        return cls(lab=d["lab"], profile=d["profile"], version=d["version"], manifest_sha256=d["manifest_sha256"],
                   bundle=d["bundle"], blobs=dict(d["blobs"]),
                   images=tuple(ReliedImage(**i) for i in d["images"]))


@dataclass(frozen=True)
class Manifest:
    """manifest.json, format 1 (see the module docstring)."""

    lab: str
    name: str
    version: str
    profile: str
    inputs: str
    labbuild: str
    offline: bool
    platforms: tuple[str, ...]
    services: dict[str, ManifestService]
    files: dict[str, FileEntry]
    format: int = BUNDLE_FORMAT
    since: DeltaBase | None = None          # a delta bundle: its base and what it relies on

    @property
    def carried_blobs(self) -> dict[str, int]:
        """Blob digest -> size of every blob under images/blobs/ this bundle carries."""
        return {"sha256:" + n[len(IMAGE_BLOBS_PREFIX) + len("sha256/"):]: f.size
                for n, f in self.files.items() if n.startswith(IMAGE_BLOBS_PREFIX + "sha256/")}

    @property
    def secret_keys(self) -> list[str]:
        """Every env key of the install's .env that some service needs."""
        return sorted({k for s in self.services.values() for k in s.secrets})

    def to_json(self) -> dict[str, Any]:
        def service(s: ManifestService) -> dict[str, Any]:
            d = asdict(s)
            d.update(ports=[asdict(p) for p in s.ports], volumes=[asdict(v) for v in s.volumes],
                     depends_on=list(s.depends_on), secrets=list(s.secrets),
                     health=None if s.health is None else {**asdict(s.health), "status": list(s.health.status)})
            for optional in ("memory", "gpus"):   # absent unless set: other bundles stay byte-identical
                if d[optional] is None:
                    del d[optional]
            # optional fields: omitted at their default, so bundles that use neither stay byte-identical
            if not s.optional:
                del d["optional"]
            if s.supplied:
                d["supplied"] = [asdict(x) for x in s.supplied]
            else:
                del d["supplied"]
            del d["models"]   # likewise: only services with [[models]] carry the key
            if s.models:
                d["models"] = [{**asdict(m), "blobs": [asdict(b) for b in m.blobs]} for m in s.models]
            # optional fields stay out when default: bundles of labs that don't use them keep their bytes
            if s.backup == ManifestBackup():
                del d["backup"]
            else:
                d["backup"] = {"method": s.backup.method, "dump": list(s.backup.dump),
                               "restore": list(s.backup.restore)}
            if s.migrations == "reversible":
                del d["migrations"]
            if s.data_in:
                d["data_in"] = list(s.data_in)
            else:
                del d["data_in"]
            if s.wired_to:
                d["wired_to"] = list(s.wired_to)
            else:
                del d["wired_to"]
            return d
        out = {
            "format": self.format, "lab": self.lab, "name": self.name, "version": self.version,
            "profile": self.profile, "inputs": self.inputs, "labbuild": self.labbuild,
            "offline": self.offline, "platforms": list(self.platforms),
            "services": {n: service(s) for n, s in sorted(self.services.items())},
            "files": {n: asdict(f) for n, f in sorted(self.files.items())},
        }
        if self.since is not None:      # only delta bundles: full bundles stay byte-identical
            out["since"] = self.since.to_json()
        return out

    def dumps(self) -> bytes:
        """The canonical bytes of manifest.json."""
        return canonical_json(self.to_json()).encode("utf-8")

    @classmethod
    def loads(cls, raw: bytes, where: str = MANIFEST) -> "Manifest":
        """Parse manifest.json's bytes; BundleError naming the file and the bad key."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(f"{where}: {len(raw)} bytes, more than a manifest may have ({MAX_MANIFEST_BYTES})",
                              hint="the bundle is damaged or not a labbuild bundle")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BundleError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})",
                              hint="the bundle is damaged or not a labbuild bundle") from None
        return cls.from_json(data, where)

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST) -> "Manifest":
        """Build a Manifest from parsed JSON; BundleError naming the bad key."""
        key = "(top level)"
        try:
            if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
                raise ValueError(f"not a format-{BUNDLE_FORMAT} manifest")
            services = {}
            for name, s in data["services"].items():
                key = f"services.{name}"
                health = s.get("health")
                services[name] = ManifestService(
                    image=s["image"], digest=s["digest"], verified=bool(s["verified"]),
                    config_digests=dict(s["config_digests"]),
                    ports=tuple(ManifestPort(**p) for p in s["ports"]),
                    health=None if health is None else ManifestHealth(**{**health, "status": tuple(health["status"])}),
                    depends_on=tuple(s["depends_on"]), volumes=tuple(ManifestVolume(**v) for v in s["volumes"]),
                    secrets=tuple(s["secrets"]), runbook=s["runbook"], healthcheck=bool(s.get("healthcheck")),
                    memory=s.get("memory"), gpus=s.get("gpus"),
                    optional=bool(s.get("optional", False)),
                    supplied=tuple(ManifestSupplied(key=x["key"], description=str(x.get("description", "")))
                                   for x in s.get("supplied", ())),
                    models=tuple(ManifestModel(**{**m, "blobs": tuple(ManifestBlob(**b) for b in m["blobs"])})
                                 for m in s.get("models", ())),
                    backup=_backup(s.get("backup")), migrations=str(s.get("migrations", "reversible")),
                    data_in=tuple(s.get("data_in", ())), wired_to=tuple(s.get("wired_to", ())))
            key = "files"
            files = {n: FileEntry(sha256=f["sha256"], size=f["size"]) for n, f in data["files"].items()}
            key = "since"
            since = DeltaBase.from_json(data["since"]) if data.get("since") is not None else None
            key = "(top level)"
            manifest = cls(since=since, lab=data["lab"], name=data["name"], version=data["version"], profile=data["profile"],
                       inputs=data["inputs"], labbuild=data["labbuild"], offline=bool(data["offline"]),
                       platforms=tuple(data["platforms"]), services=services, files=files)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise BundleError(f"{where}: {key}: malformed manifest ({type(exc).__name__}: {str(exc)[:200]})",
                              hint="the bundle is damaged or not a labbuild bundle") from None
        problems = field_problems(manifest) + manifest_grammar_problems(manifest)
        if problems:
            raise BundleError(f"{where}: malformed manifest: {summarize(problems)}",
                              hint="the bundle is damaged or not a labbuild bundle")
        return manifest


def provenance_subjects(manifest: Manifest, manifest_bytes: bytes) -> dict[str, str]:
    """What a release's provenance vouches for: manifest.json (which covers every file) and each image pin."""
    subjects = {MANIFEST: hashlib.sha256(manifest_bytes).hexdigest()}
    for service in manifest.services.values():
        subjects[service.image] = service.digest
    return subjects
@dataclass(frozen=True)
class DeltaSummary:
    """Carried vs relied-on blobs of a delta bundle (counts and bytes), for progress and summaries."""

    base: str                   # the base's version
    base_bundle: str
    carried: int
    carried_bytes: int
    relied: int
    relied_bytes: int
    images: tuple[str, ...]     # "reference (platform)" of every base image relied on

    def to_json(self) -> dict[str, object]:
        return {"base": self.base, "base_bundle": self.base_bundle, "carried_blobs": self.carried,
                "carried_bytes": self.carried_bytes, "relied_blobs": self.relied,
                "relied_bytes": self.relied_bytes, "relied_images": list(self.images)}

    def render(self) -> str:
        return (f"delta since {self.base}: carries {self.carried} blob(s), {_size(self.carried_bytes)}; "
                f"relies on {self.relied} blob(s), {_size(self.relied_bytes)} of {self.base_bundle} "
                f"({len(self.images)} base image(s) that must be in the engine)")


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def delta_summary(manifest: Manifest) -> DeltaSummary:
    """The carried/relied summary of a delta bundle's manifest."""
    since = manifest.since
    carried = manifest.carried_blobs
    return DeltaSummary(base=since.version, base_bundle=since.bundle, carried=len(carried),
                        carried_bytes=sum(carried.values()), relied=len(since.blobs),
                        relied_bytes=sum(since.blobs.values()),
                        images=tuple(f"{i.reference} ({i.platform})" for i in since.images))


# --------------------------------------------------------------------------- models

def model_blob_path(digest: str) -> str:
    """Where a model blob (manifest, config or layer) lives in an image bundle."""
    return f"{IMAGE_BLOBS_PREFIX}sha256/{digest.removeprefix('sha256:')}"


def shipped_models(manifest: Manifest) -> dict[str, tuple[ManifestModel, ...]]:
    """``{service: models}`` of the services whose model blobs the bundle carries
    (an image bundle); a bundle without images ships none."""
    return {svc: s.models for svc, s in sorted(manifest.services.items())
            if s.models and all(model_blob_path(d) in manifest.files
                                for m in s.models for d in (m.digest, *(b.digest for b in m.blobs)))}


def model_bytes(manifest: Manifest) -> int:
    """Bytes of every distinct model blob (manifests included) the bundle ships: what
    placing its models writes into volumes at most (``doctor`` counts them against
    free space; blobs already present are skipped at install)."""
    sizes: dict[str, int] = {}
    for models in shipped_models(manifest).values():
        for m in models:
            sizes[m.digest] = m.size
            sizes.update({b.digest: b.size for b in m.blobs})
    return sum(sizes.values())


def _backup(data: Any) -> ManifestBackup:
    if data is None:
        return ManifestBackup()
    backup = ManifestBackup(method=data["method"], dump=tuple(data.get("dump", ())),
                            restore=tuple(data.get("restore", ())))
    if backup.method not in ("volume", "exec") or (backup.method == "exec" and not (backup.dump and backup.restore)):
        raise ValueError(f"backup: method {backup.method!r} needs dump and restore commands when exec")
    return backup
