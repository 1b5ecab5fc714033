"""The lock stage: resolve every blueprint's pin into its content-addressed closure.

``make_lock(root)`` loads the lab, decides *offline* which services need
resolving (``plan_lock``: new, changed or unverified entries; nothing at all
when the lock is fresh and verified, so a no-op run makes no request),
resolves those concurrently (``builder.resolve``, through ``builder.registry``), and writes
``lockfiles/lab.lock.json`` atomically only when every service resolved.
Unchanged entries are carried over as they are.

``check_lock(root)`` answers "is the lock fresh?" without network.
``make_lock(root, update=[...])`` first moves pins to their tags' current
digests (or, with ``to``/``latest``, to other tags on their tracks, groups
whole) and rewrites the blueprints (``rewrite_digest`` keeps comments and
layout) — after the new pins resolved, so a failure changes no file.

Pure parts (``plan_lock``, ``unverified_record``, ``diff_locks``,
``rewrite_digest``, ``with_pins``) take plain data and are tested without a
registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .blueprint import Image, Lab, Model, load_lab
from .errors import LockError
from .fsutil import atomic_write
from .lockfile import (
    LOCK_PATH,
    ImageRecord,
    Lock,
    ModelRecord,
    inputs_hash,
    read_lock,
    stale_services,
    write_lock,
)
from .outdated import plan_tag_moves
from .registry import RegistryClient
from .resolve import PinUpdate, resolve_pin_updates, resolve_services

FIX_COMMAND = "labbuild lock"


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Change:
    """One service's entry moving from ``old`` to ``new`` (either may be None)."""

    service: str
    old: ImageRecord | None
    new: ImageRecord | None

    @property
    def kind(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "updated"

    def render(self) -> str:
        if self.new is None:
            return f"Removed '{self.service}': {_describe(self.old)}"
        return f"Updated '{self.service}': {_describe(self.old)} -> {_describe(self.new)}"


def _describe(rec: ImageRecord | None) -> str:
    if rec is None:
        return "(none)"
    text = f"{rec.reference}@{rec.digest[:19]}"
    if rec.models:
        text += " with models " + ", ".join(f"{m.reference}@{m.digest[:19]}" for m in rec.models)
    return text if rec.verified else text + " (unverified)"


@dataclass(frozen=True)
class LockResult:
    """What one ``lock`` run did."""

    lock: Lock
    path: Path
    changes: tuple[Change, ...]
    resolved: tuple[str, ...]         # services fetched from registries in this run
    written: bool
    pins: tuple[PinUpdate, ...] = ()   # --update: pins moved in the blueprints

    def to_json(self, display_path: str) -> dict:
        changed = {c.service: c.kind for c in self.changes}
        return {
            "ok": True,
            "lockfile": display_path,
            "written": self.written,
            "resolved": list(self.resolved),
            "inputs": self.lock.inputs,
            "services": {
                name: {"reference": rec.reference, "digest": rec.digest, "verified": rec.verified,
                       "media_type": rec.media_type, "platforms": sorted(rec.platforms),
                       "status": changed.get(name, "unchanged"),
                       **({"models": [{"reference": m.reference, "digest": m.digest, "verified": m.verified,
                                       "size": m.total_size} for m in rec.models]} if rec.models else {})}
                for name, rec in sorted(self.lock.services.items())
            },
            "removed": sorted(c.service for c in self.changes if c.new is None),
            # per service its image pin (a model's when only models moved); "tag": the image's new tag
            "pins": {p.service: {"old": p.old, "new": p.new, **({"tag": p.tag} if p.tag is not None else {})}
                     for p in sorted(self.pins, key=lambda p: p.model is None)},
        }


@dataclass(frozen=True)
class CheckResult:
    """``lock --check``: ``stale`` maps service (or ``*``) to why; empty means fresh."""

    path: Path
    present: bool
    stale: dict[str, str]
    unverified: tuple[str, ...] = ()   # fresh entries recorded by --offline

    @property
    def ok(self) -> bool:
        return self.present and not self.stale

    def to_json(self, display_path: str) -> dict:
        return {"ok": self.ok, "lockfile": display_path, "present": self.present,
                "services": dict(sorted(self.stale.items())), "unverified": list(self.unverified),
                "hint": None if self.ok else f"run `{FIX_COMMAND}` and commit {display_path}"}


# --------------------------------------------------------------------------- pure core

def plan_lock(lab: Lab, previous: Lock | None, *, offline: bool = False, refresh: bool = False) -> list[str]:
    """Services whose entry must be (re)made: new, changed, or unverified (online).

    Everything when there is no previous lock, when the lab's platforms
    changed, or with ``refresh`` (online). Offline, unverified entries that still match
    their pin are kept: there is nothing more to learn without a network.
    """
    if previous is None or (refresh and not offline):
        return sorted(lab.services)
    stale = stale_services(lab, previous)
    if "*" in stale or tuple(sorted(previous.platforms)) != tuple(sorted(lab.platforms)):
        return sorted(lab.services)
    todo = {n for n in stale if n in lab.services}
    if not offline:
        todo |= {n for n, rec in previous.services.items() if n in lab.services and not rec.verified}
    return sorted(todo)


def unverified_record(image: Image, models: tuple[Model, ...] = ()) -> ImageRecord:
    """The entry ``lock --offline`` records: the pins as written (image and models), never fetched."""
    return ImageRecord(reference=image.reference, digest=image.digest, media_type=None,
                       verified=False, platforms={}, size=0,
                       models=tuple(ModelRecord(reference=m.reference, digest=m.digest, verified=False)
                                    for m in models))


def diff_locks(old: Lock | None, new: Lock) -> list[Change]:
    """Entries added, removed or changed between two locks, sorted by service."""
    before = old.services if old else {}
    changes = []
    for name in sorted(set(before) | set(new.services)):
        a, b = before.get(name), new.services.get(name)
        if a != b:
            changes.append(Change(service=name, old=a, new=b))
    return changes


def rewrite_digest(text: str, new_digest: str, model: int | None = None, tag: str | None = None) -> str:
    """Set ``[image].digest`` (or ``[[models]][model].digest``) in a blueprint's TOML text, and
    ``[image].tag`` when ``tag`` is given, keeping everything else byte for byte."""
    # Lazy: tomlkit (~50 ms) is needed only by --update; `lock --check`, run by CI on
    # every pull request, never pays for it.
    import tomlkit

    doc = tomlkit.parse(text)
    table = doc["image"] if model is None else doc["models"][model]
    for key, value in (("digest", new_digest), ("tag", tag)):
        if value is None:
            continue
        item = table[key]
        trivia = item.trivia
        new = tomlkit.string(value, literal=item.as_string().startswith("'"))
        new.trivia.indent, new.trivia.comment_ws, new.trivia.comment, new.trivia.trail = (
            trivia.indent, trivia.comment_ws, trivia.comment, trivia.trail)
        table[key] = new
    return tomlkit.dumps(doc)


# --------------------------------------------------------------------------- orchestration

def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_PATH


def _previous_lock(path: Path, progress: Callable[[str], None]) -> Lock | None:
    """The current lock, or None when it is missing or unreadable (then it is remade)."""
    if not path.exists():
        return None
    try:
        return read_lock(path)
    except LockError as exc:
        progress(f"ignoring the current lock: {exc.message}")
        return None


class _LazyClient:
    """Creates the RegistryClient on first use, so a run that needs no registry opens none."""

    def __init__(self, factory: Callable[..., RegistryClient], insecure_registries: tuple[str, ...]) -> None:
        self._factory = factory
        self._insecure = insecure_registries
        self._client: RegistryClient | None = None

    def get(self) -> RegistryClient:
        if self._client is None:
            self._client = self._factory(insecure_registries=self._insecure)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def make_lock(root: str | Path, *, offline: bool = False, refresh: bool = False,
              update: list[str] | tuple[str, ...] | None = None,
              to: tuple[str, ...] = (), latest: bool = False, major: bool = False, split: bool = False,
              insecure_registries: tuple[str, ...] = (),
              client_factory: Callable[..., RegistryClient] = RegistryClient,
              progress: Callable[[str], None] = lambda _: None) -> LockResult:
    """Resolve the lab under ``root`` and write its lock when anything changed.

    With ``update`` (a list of services; empty means all), their tags are
    re-resolved first and their pins moved (``--update``); ``to`` (tags) or
    ``latest`` (with ``major``: also major steps) move images to other tags on
    their tracks, a group only whole unless ``split`` (``outdated.plan_tag_moves``).
    No registry is contacted when nothing needs resolving, and never with ``offline``.
    Everything is resolved in memory before anything is written: then the
    moved pins' blueprints (only the ``digest`` lines, and ``tag`` lines moved by
    ``to``/``latest``), then the lock,
    atomically. A failure raises LockError/RegistryError and changes no file.
    """
    if offline and update is not None:
        raise LockError("--update needs the registries; it cannot run --offline")
    lab = load_lab(root)
    path = lock_path(Path(root))
    previous = _previous_lock(path, progress)
    registries = tuple(dict.fromkeys((*lab.insecure_registries, *insecure_registries)))
    clients = _LazyClient(client_factory, registries)
    try:
        pins: list[PinUpdate] = []
        if update is not None:
            tags = plan_tag_moves(lab, update, clients.get, to=to, latest=latest, major=major, split=split) \
                if to or latest else {}
            pins = resolve_pin_updates(lab, update, clients.get(), progress, tags=tags)
            lab = with_pins(lab, {p.service: p.new for p in pins if p.model is None},
                            {(p.service, p.model): p.new for p in pins if p.model is not None},
                            {p.service: p.tag for p in pins if p.tag is not None})
        todo = plan_lock(lab, previous, offline=offline, refresh=refresh)
        carried = {n: previous.services[n] for n in lab.services
                   if previous and n in previous.services and n not in todo}
        if offline:
            fresh = {n: unverified_record(lab.services[n].image, lab.services[n].models) for n in todo}
        elif todo:
            progress(f"resolving {len(todo)} service(s): {', '.join(todo)}")
            fresh = resolve_services(lab, todo, clients.get())
        else:
            fresh = {}
    finally:
        clients.close()
    lock = Lock(lab=lab.name, inputs=inputs_hash(lab), platforms=tuple(lab.platforms),
                services=dict(sorted({**carried, **fresh}.items())))
    for service in sorted({p.service for p in pins}):
        file = Path(root) / lab.services[service].path   # absolute paths stay absolute
        text = file.read_text("utf-8")
        for pin in (p for p in pins if p.service == service):
            text = rewrite_digest(text, pin.new, pin.model, pin.tag)
        atomic_write(file, text)
    written = _on_disk(path) != lock.dumps()
    if written:
        write_lock(path, lock)
    return LockResult(lock=lock, path=path, changes=tuple(diff_locks(previous, lock)),
                      resolved=() if offline else tuple(todo), written=written, pins=tuple(pins))


def with_pins(lab: Lab, digests: dict[str, str], models: dict[tuple[str, int], str] | None = None,
              tags: dict[str, str] | None = None) -> Lab:
    """``lab`` with the given services' ``[image].digest`` (and ``models``: ``{(service, index):
    digest}`` of ``[[models]]`` pins; ``tags``: ``[image].tag``) replaced, in memory."""
    models, tags = models or {}, tags or {}
    services = {}
    for name, bp in lab.services.items():
        if name in digests:
            bp = dataclasses.replace(bp, image=dataclasses.replace(bp.image, digest=digests[name],
                                                                   tag=tags.get(name, bp.image.tag)))
        if any(s == name for s, _ in models):
            bp = dataclasses.replace(bp, models=tuple(
                dataclasses.replace(m, digest=models.get((name, i), m.digest)) for i, m in enumerate(bp.models)))
        services[name] = bp
    return dataclasses.replace(lab, services=services)


def _on_disk(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except OSError:
        return None


def check_lock(root: str | Path) -> CheckResult:
    """Offline: is ``lockfiles/lab.lock.json`` present and does it match the blueprints?"""
    lab = load_lab(root)
    path = lock_path(Path(root))
    if not path.exists():
        return CheckResult(path=path, present=False, stale={"*": "no lockfile"})
    lock = read_lock(path)
    return CheckResult(path=path, present=True, stale=stale_services(lab, lock),
                       unverified=tuple(sorted(n for n, r in lock.services.items() if not r.verified)))
