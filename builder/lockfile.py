"""The lockfile model (format 1): typed records, the inputs hash, staleness.

Pure functions on plain data: nothing here touches the network. Resolving a
lock against registries lives in ``builder.lock``; this module only says
what a lock *is*, reads and writes it canonically, and decides offline
whether it still matches the blueprints (``lock --check``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import names
from .blueprint import Lab
from .errors import LockError
from .fsutil import CapExceeded, atomic_write, canonical_json, read_capped
from .limits import MAX_LOCK_BYTES
from .typecheck import field_problems, summarize

LOCK_FORMAT = 1
LOCK_PATH = Path("lockfiles") / "lab.lock.json"


@dataclass(frozen=True)
class LayerRecord:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class PlatformRecord:
    """One platform's image: manifest, config (= Docker image ID) and layers."""
    manifest: str
    media_type: str
    config: str
    size: int
    layers: tuple[LayerRecord, ...] = ()
    config_media_type: str = "application/vnd.oci.image.config.v1+json"
    manifest_size: int = 0
    config_size: int = 0

    @property
    def total_size(self) -> int:
        return self.manifest_size + self.config_size + sum(l.size for l in self.layers)


class _Reference:
    """``name`` and ``tag`` of a record's ``reference`` (``name:tag``)."""

    reference: str

    @property
    def name(self) -> str:
        return self.reference.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.reference.rsplit(":", 1)[1]


@dataclass(frozen=True)
class ModelRecord(_Reference):
    """The locked closure of one ``[[models]]`` pin: its manifest, config and every layer."""
    reference: str                    # name:tag
    digest: str                       # the blueprint's pin (sha256 of the manifest)
    verified: bool                    # False: recorded by --offline, never fetched
    media_type: str | None = None     # of the manifest (None when unverified)
    size: int = 0                     # bytes of the manifest
    config: LayerRecord | None = None
    layers: tuple[LayerRecord, ...] = ()

    @property
    def blobs(self) -> tuple[LayerRecord, ...]:
        """Config and layers: every blob the manifest names."""
        return ((self.config,) if self.config else ()) + self.layers

    @property
    def total_size(self) -> int:
        return self.size + sum(b.size for b in self.blobs)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "layers": [asdict(l) for l in self.layers]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelRecord":
        config = d.get("config")
        return cls(**{**d, "config": LayerRecord(**config) if config else None,
                      "layers": tuple(LayerRecord(**l) for l in d.get("layers", ()))})


@dataclass(frozen=True)
class ImageRecord(_Reference):
    """The locked closure of one service's image."""
    reference: str                    # name:tag
    digest: str                       # the blueprint's pin
    media_type: str | None            # of the pinned manifest (None when unverified)
    verified: bool                    # False: recorded by --offline, never fetched
    platforms: dict[str, PlatformRecord] = field(default_factory=dict)
    size: int = 0                     # bytes of the pinned manifest (index or single)
    models: tuple[ModelRecord, ...] = ()   # the service's [[models]], in blueprint order


@dataclass(frozen=True)
class Lock:
    lab: str
    inputs: str
    platforms: tuple[str, ...]
    services: dict[str, ImageRecord]
    format: int = LOCK_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "lab": self.lab,
            "inputs": self.inputs,
            "platforms": list(self.platforms),
            "services": {n: _image_to_json(r) for n, r in sorted(self.services.items())},
        }

    def dumps(self) -> str:
        return canonical_json(self.to_json())


def _image_to_json(r: ImageRecord) -> dict[str, Any]:
    d = asdict(r)
    d["platforms"] = {p: {**asdict(rec), "layers": [asdict(l) for l in rec.layers]}
                      for p, rec in sorted(r.platforms.items())}
    del d["models"]
    if r.models:   # optional: locks of labs without models stay byte-identical
        d["models"] = [m.to_json() for m in r.models]
    return d


def lock_from_json(data: Any, where: str = "lock") -> Lock:
    """Build a Lock from parsed JSON; raise LockError naming the bad key."""
    try:
        if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
            if not isinstance(data, dict):
                raise LockError(f"{where}: not a lockfile (expected a JSON object)",
                                hint="regenerate it with `labbuild lock`")
            raise LockError(f"{where}: unsupported lock format {data.get('format')!r}",
                            hint=f"this labbuild reads format {LOCK_FORMAT}; run `labbuild lock`")
        services = {}
        for name, s in data["services"].items():
            plats = {p: PlatformRecord(**{**rec, "layers": tuple(LayerRecord(**l) for l in rec["layers"])})
                     for p, rec in s.get("platforms", {}).items()}
            models = tuple(ModelRecord.from_json(m) for m in s.get("models", ()))
            services[name] = ImageRecord(**{**s, "platforms": plats, "models": models})
        lock = Lock(lab=data["lab"], inputs=data["inputs"], platforms=tuple(data["platforms"]),
                    services=services, format=data["format"])
    except LockError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise LockError(f"{where}: malformed lock ({type(exc).__name__}: {exc})",
                        hint="regenerate it with `labbuild lock`") from None
    problems = field_problems(lock) + _grammar_problems(lock)
    if problems:
        raise LockError(f"{where}: malformed lock: {summarize(problems)}", hint="regenerate it with `labbuild lock`")
    return lock


def _grammar_problems(lock: Lock) -> list[str]:
    """Names and digests of a lock that later reach files, paths and commands."""
    out = [f"platforms[{i}]: {names.problem('platform', p)}" for i, p in enumerate(lock.platforms)
           if not names.is_valid("platform", p)]
    for svc, rec in lock.services.items():
        if not names.is_valid("service", svc):
            out.append(f"services: {names.problem('service', svc)}")
        digests = [("digest", rec.digest)] + [
            (f"platforms.{p}.{what}", d) for p, pr in rec.platforms.items()
            for what, d in [("manifest", pr.manifest), ("config", pr.config)] + [
                (f"layers[{i}]", layer.digest) for i, layer in enumerate(pr.layers)]]
        out += [f"services.{svc}.{key}: {names.problem('digest', d)}" for key, d in digests
                if not names.is_valid("digest", d)]
    return out


def read_lock(path: str | Path) -> Lock:
    path = Path(path)
    try:
        data = json.loads(read_capped(path, MAX_LOCK_BYTES))
    except FileNotFoundError:
        raise LockError(f"{path}: no lockfile", hint="run `labbuild lock` to create it") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, CapExceeded) as exc:
        raise LockError(f"{path}: not valid JSON ({exc})", hint="regenerate it with `labbuild lock`") from None
    return lock_from_json(data, str(path))


def write_lock(path: str | Path, lock: Lock) -> None:
    atomic_write(path, lock.dumps())


def service_inputs(lab: Lab, name: str) -> dict[str, Any]:
    """What one service's lock entry depends on: its image pin, and its model pins when it has any."""
    bp = lab.services[name]
    inputs: dict[str, Any] = {"reference": bp.image.reference, "digest": bp.image.digest}
    if bp.models:
        inputs["models"] = [{"reference": m.reference, "digest": m.digest} for m in bp.models]
    return inputs


def lock_inputs(lab: Lab) -> dict[str, Any]:
    """Everything in blueprints/ and lab.toml that the lock depends on."""
    return {
        "format": LOCK_FORMAT,
        "platforms": sorted(lab.platforms),
        "services": {n: service_inputs(lab, n) for n in sorted(lab.services)},
    }


def inputs_hash(lab: Lab) -> str:
    blob = json.dumps(lock_inputs(lab), sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def stale_services(lab: Lab, lock: Lock) -> dict[str, str]:
    """``{service: why}`` for every service whose lock entry no longer matches.

    Empty means fresh. Decided offline from the blueprints and the lock alone.
    """
    why: dict[str, str] = {}
    for name in sorted(set(lab.services) | set(lock.services)):
        if name not in lock.services:
            why[name] = "not in the lock"
        elif name not in lab.services:
            why[name] = "in the lock but no longer a blueprint"
        else:
            want = service_inputs(lab, name)
            rec = lock.services[name]
            if rec.reference != want["reference"]:
                why[name] = f"reference {rec.reference} -> {want['reference']}"
            elif rec.digest != want["digest"]:
                why[name] = f"digest {rec.digest[:19]} -> {want['digest'][:19]}"
            elif (have := [{"reference": m.reference, "digest": m.digest} for m in rec.models]) \
                    != want.get("models", []):
                why[name] = "models " + (", ".join(f"{m['reference']}@{m['digest'][7:19]}" for m in have) or "none") \
                    + " -> " + (", ".join(f"{m['reference']}@{m['digest'][7:19]}" for m in want.get("models", []))
                                or "none")
    if not why and (lock.inputs != inputs_hash(lab) or tuple(sorted(lock.platforms)) != tuple(sorted(lab.platforms))):
        why["*"] = "lab platforms changed"
    return why
