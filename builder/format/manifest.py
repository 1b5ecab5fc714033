"""manifest.json, format 1: the typed model, its one reader (``Manifest.loads`` /
``from_json``, which checks types and grammar) and its one writer (``Manifest.dumps``).
The fields are described in this package's docstring."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BundleError
from ..fsutil import canonical_json
from ..limits import MAX_MANIFEST_BYTES
from ..typecheck import field_problems, summarize
from .files import BUNDLE_FORMAT, IMAGE_SHA256_BLOBS, MANIFEST
from .grammar import manifest_grammar_problems


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
    format: str                             # on-disk layout: a key of models.MODEL_FORMATS
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
class ManifestRotation:
    """A secret's rotation decision (``[secrets.NAME] rotate``, ...), keyed by its .env key in
    ``ManifestService.rotation``: only decided secrets are listed (undecided: rotate refuses)."""

    rotate: bool
    reason: str = ""                        # why it never changes (rotate False)
    days: int | None = None                 # due this many days after it was last set (rotate True)
    holder: tuple[str, ...] = ()            # argv run first in the owning service's container

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rotate": self.rotate}
        if self.reason:
            out["reason"] = self.reason
        if self.days is not None:
            out["days"] = self.days
        if self.holder:
            out["holder"] = list(self.holder)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ManifestRotation":
        holder = d.get("holder", [])
        if not isinstance(holder, list):
            raise ValueError("rotation: holder is not a list")
        return cls(rotate=d["rotate"], reason=d.get("reason", ""), days=d.get("days"), holder=tuple(holder))


@dataclass(frozen=True)
class ManifestProvision:
    """One ``[[provision]]`` step as shipped: ``body`` is the request's JSON text in which
    ``${KEY}`` (a DIR/.env key, listed in ``keys``) stands for a secret; install fills the
    values into the decoded strings and encodes the body again (never pastes text)."""

    description: str
    method: str
    host_port: int | None                   # None: the port is not published (the front door's UIs)
    path: str
    body: str                               # canonical JSON text; "" for no body
    keys: tuple[str, ...]                   # the DIR/.env keys its body names
    status: tuple[int, ...]                 # it did it
    already_status: tuple[int, ...] = ()    # with already_text in the answer: done before
    already_text: str = ""
    container_port: int | None = None       # the port in the container: used when host_port is None
    bearer: str = ""                        # a DIR/.env key (in ``keys``) sent as Authorization: Bearer; omitted when ""

    def to_json(self) -> dict[str, Any]:
        return {"description": self.description, "method": self.method, "host_port": self.host_port,
                "path": self.path, "body": self.body, "keys": list(self.keys), "status": list(self.status),
                "already_status": list(self.already_status), "already_text": self.already_text,
                **({"container_port": self.container_port} if self.container_port is not None else {}),
                **({"bearer": self.bearer} if self.bearer else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ManifestProvision":
        return cls(description=d["description"], method=d["method"], host_port=d["host_port"], path=d["path"],
                   body=d["body"], keys=tuple(d["keys"]), status=tuple(d["status"]),
                   already_status=tuple(d.get("already_status", ())), already_text=d.get("already_text", ""),
                   container_port=d.get("container_port"), bearer=d.get("bearer", ""))


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
    rotation: dict[str, ManifestRotation] = field(default_factory=dict)   # .env key -> decision; omitted when empty
    provision: tuple[ManifestProvision, ...] = ()   # [[provision]] steps; omitted when empty
    show: tuple[str, ...] = ()              # .env keys of sign-in credentials printed once when generated; omitted when empty


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
        return {"sha256:" + n[len(IMAGE_SHA256_BLOBS):]: f.size
                for n, f in self.files.items() if n.startswith(IMAGE_SHA256_BLOBS)}

    @property
    def secret_keys(self) -> list[str]:
        """Every env key of the install's .env that some service needs."""
        return sorted({k for s in self.services.values() for k in s.secrets})

    @property
    def secret_owners(self) -> dict[str, str]:
        """.env key -> the service whose secret it is (generated and supplied alike)."""
        return {k: name for name, s in sorted(self.services.items())
                for k in (*s.secrets, *(x.key for x in s.supplied))}

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
            del d["rotation"]   # likewise: only services with a decided secret carry the key
            if s.rotation:
                d["rotation"] = {k: r.to_json() for k, r in sorted(s.rotation.items())}
            for key, value in (("provision", [p.to_json() for p in s.provision]), ("show", list(s.show))):
                del d[key]      # likewise: only services that use them carry the keys
                if value:
                    d[key] = value
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
                    data_in=tuple(s.get("data_in", ())), wired_to=tuple(s.get("wired_to", ())),
                    rotation={k: ManifestRotation.from_json(r) for k, r in s.get("rotation", {}).items()},
                    provision=tuple(ManifestProvision.from_json(p) for p in s.get("provision", ())),
                    show=tuple(s.get("show", ())))
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


def _backup(data: Any) -> ManifestBackup:
    if data is None:
        return ManifestBackup()
    backup = ManifestBackup(method=data["method"], dump=tuple(data.get("dump", ())),
                            restore=tuple(data.get("restore", ())))
    if backup.method not in ("volume", "exec") or (backup.method == "exec" and not (backup.dump and backup.restore)):
        raise ValueError(f"backup: method {backup.method!r} needs dump and restore commands when exec")
    return backup
