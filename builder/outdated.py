"""`labbuild outdated`: which pins are behind the newest tag on their track, and which move together.

``check_outdated(root, services)`` loads the lab, lists every repository's tags
once (``RegistryClient.list_tags``, following ``Link`` pages), picks each pin's
newest tag on its track (``builder.tracks.choose``; a major step only with
``major``), and then asks digests only of those chosen tags — one ``HEAD`` per
chosen tag (its own tag when none is newer, to see whether it was re-pushed)
and per ``[[models]]`` pin. A model's tag names a size or variant
(``0.5b``, ``v1.5``), not a version, so a model is checked for its own tag
only. A registry that cannot be reached is named in the report; the services
behind it are "unknown", never "current".

``plan_tag_moves`` decides the tags of ``lock --update --to TAG`` and
``--latest`` (the same choice, ``newest_tags``); ``group_members`` and
``missing_members`` are the pure group rules (pins that move together,
``[image] group``): a group moves whole unless ``--split``.

The report is data (``OutdatedReport``); ``to_json`` and ``render`` are its two views.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .blueprint import Lab, load_lab
from .errors import ArgumentError, LabbuildError, LockError, Problem, RegistryError
from .registry import RegistryClient, parse_image_name
from .resolve import service_problem
from .tracks import Choice, choose, fitting_tag, track_of

CURRENT, BEHIND, UNKNOWN = "current", "behind", "unknown"
DIGEST = "digest"            # the step of a tag that now points at another digest
MAX_WORKERS = 16


# --------------------------------------------------------------------------- groups (pure)

def group_members(lab: Lab) -> dict[str, tuple[str, ...]]:
    """``{group: its services, sorted}`` for every ``[image] group`` of the lab."""
    groups: dict[str, list[str]] = {}
    for name, bp in sorted(lab.services.items()):
        if bp.image.group is not None:
            groups.setdefault(bp.image.group, []).append(name)
    return {g: tuple(members) for g, members in sorted(groups.items())}


def missing_members(lab: Lab, names: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``{group: members not among names}`` for each group ``names`` touch but do not cover."""
    chosen = set(names)
    return {g: tuple(m for m in members if m not in chosen)
            for g, members in group_members(lab).items()
            if chosen & set(members) and not set(members) <= chosen}


def with_groups(lab: Lab, names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` (all services when empty) and every other member of their groups, sorted."""
    chosen = set(names or lab.services)
    for members in group_members(lab).values():
        if chosen & set(members):
            chosen |= set(members)
    return sorted(chosen)


# --------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class ModelStatus:
    """A ``[[models]]`` pin: where its own tag points now (None when that is unknown)."""

    reference: str
    digest: str
    registry: str
    now: str | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        return UNKNOWN if self.now is None else CURRENT if self.now == self.digest else BEHIND

    def to_json(self) -> dict:
        return {"reference": self.reference, "digest": self.digest, "registry": self.registry, "now": self.now,
                "status": self.status, "error": self.error}


@dataclass(frozen=True)
class ServiceStatus:
    """One service's image pin against its track."""

    service: str
    image: str
    tag: str
    digest: str
    track: str
    track_declared: bool
    group: str | None
    registry: str
    newest: str | None = None          # newest tag offered on the track (the pin's own when none is newer)
    newest_digest: str | None = None   # where ``newest`` points now
    step: str | None = None            # major | minor | patch | digest; None when current or unknown
    held: str | None = None            # a newer major on the track, offered only with --major
    error: str | None = None
    models: tuple[ModelStatus, ...] = ()

    @property
    def status(self) -> str:
        if self.step is not None or any(m.status == BEHIND for m in self.models):
            return BEHIND
        if self.error is not None or self.newest_digest is None or any(m.status == UNKNOWN for m in self.models):
            return UNKNOWN
        return CURRENT

    def to_json(self) -> dict:
        return {
            "image": self.image, "tag": self.tag, "digest": self.digest, "registry": self.registry,
            "track": self.track, "track_declared": self.track_declared, "group": self.group,
            "status": self.status, "error": self.error, "held_major": self.held,
            "newest": None if self.newest is None else {"tag": self.newest, "digest": self.newest_digest,
                                                        "step": self.step},
            "models": [m.to_json() for m in self.models],
        }


@dataclass(frozen=True)
class OutdatedReport:
    services: dict[str, ServiceStatus]
    groups: dict[str, tuple[str, ...]]     # groups of the reported services, every member reported
    unreachable: dict[str, str]            # registry -> why it could not be reached
    major: bool

    @property
    def behind(self) -> list[str]:
        return [n for n, s in sorted(self.services.items()) if s.status == BEHIND]

    @property
    def unknown(self) -> list[str]:
        return [n for n, s in sorted(self.services.items()) if s.status == UNKNOWN]

    @property
    def ok(self) -> bool:
        """Nothing behind (exit 0); unknown services alone do not make it fail."""
        return not self.behind

    def group_status(self, group: str) -> str:
        states = {self.services[m].status for m in self.groups[group]}
        return BEHIND if BEHIND in states else UNKNOWN if UNKNOWN in states else CURRENT

    def update_command(self, names: list[str] | tuple[str, ...]) -> str:
        return "labbuild lock --update --latest " + ("--major " if self.major else "") + " ".join(names)

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "major": self.major, "behind": self.behind, "unknown": self.unknown,
            "services": {n: s.to_json() for n, s in sorted(self.services.items())},
            "groups": {g: {"services": list(m), "status": self.group_status(g),
                           "command": self.update_command(m) if self.group_status(g) == BEHIND else None}
                       for g, m in self.groups.items()},
            "unreachable": dict(sorted(self.unreachable.items())),
        }

    def render(self) -> str:
        """One row per service; a group's members together under its name, then the rest."""
        grouped = {m for members in self.groups.values() for m in members}
        width = max((len(n) for n in self.services), default=0) + 2
        image_width = max((len(f"{s.image}:{s.tag}") for s in self.services.values()), default=0) + 2
        row = lambda s, indent: self._row(s, width + 2 - len(indent), image_width, indent)  # noqa: E731
        lines: list[str] = []
        for group, members in self.groups.items():
            state = self.group_status(group)
            lines.append(f"group {group} ({state}; its pins move together)")
            lines += [row(self.services[m], "  ") for m in members]
            if state == BEHIND:
                lines.append(f"  -> {self.update_command(members)}")
        lines += [row(s, "") for n, s in sorted(self.services.items()) if n not in grouped]
        for registry, why in sorted(self.unreachable.items()):
            count = sum(1 for s in self.services.values() if registry in (s.registry, *(m.registry for m in s.models)))
            lines.append(f"unreachable: {registry} ({count} service(s) not checked): {why}")
        lines.append(f"{len(self.behind)} of {len(self.services)} service(s) behind"
                     + (f", {len(self.unknown)} unknown" if self.unknown else "")
                     + ("" if self.major else " (major steps only with --major)"))
        return "\n".join(lines)

    def _unknown(self, registry: str, error: str | None) -> str:
        return f"unknown ({registry} unreachable)" if registry in self.unreachable else f"unknown: {error}"

    def _row(self, s: ServiceStatus, width: int, image_width: int, indent: str) -> str:
        head = f"{indent}{s.service:<{width}}{s.image + ':' + s.tag:<{image_width}}"
        if s.error is not None:
            text = f"{head}{self._unknown(s.registry, s.error)}"
        elif s.step == DIGEST:
            text = f"{head}re-pushed: {s.digest[:19]} -> {(s.newest_digest or '')[:19]}"
        elif s.step is not None:
            text = f"{head}-> {s.newest} ({s.step}, {(s.newest_digest or '')[:19]})"
        else:
            text = f"{head}{s.status}"
        if s.held is not None:
            text += f"  [{s.held}: major, with --major]"
        for m in s.models:
            if m.status != CURRENT:
                text += f"\n{indent}{'':<{width}}  model {m.reference}: " + (
                    f"re-pushed: {m.digest[:19]} -> {m.now[:19]}" if m.now else self._unknown(m.registry, m.error))
        return text


# --------------------------------------------------------------------------- asking the registries

def _concurrently(client: RegistryClient, asks: set[tuple[str, ...]]) -> dict[tuple[str, ...], object]:
    """Answers to ``("tags", repository)`` (its tag list) and ``("digest", repository, tag)``
    (where the tag points), asked concurrently; a failure is kept as its RegistryError."""
    def ask(key: tuple[str, ...]) -> object:
        return client.list_tags(key[1]) if key[0] == "tags" else client.resolve_tag(key[1], key[2])

    keys = sorted(asks)
    if not keys:
        return {}
    results: dict[tuple[str, ...], object] = {}
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(keys)), thread_name_prefix="outdated") as pool:
        futures = {k: pool.submit(ask, k) for k in keys}
        for k, fut in futures.items():
            try:
                results[k] = fut.result()
            except RegistryError as exc:
                results[k] = exc
    return results


def _choices(lab: Lab, names: list[str], answers: dict, major: bool) -> dict[str, Choice | RegistryError]:
    """Each service's chosen tag, from its repository's tag list in ``answers``."""
    out: dict[str, Choice | RegistryError] = {}
    for n in names:
        image = lab.services[n].image
        tags = answers[("tags", image.name)]
        out[n] = tags if isinstance(tags, RegistryError) else choose(image.tag, tags, image.track, major=major)
    return out


def newest_tags(lab: Lab, names: list[str], client: RegistryClient, *, major: bool = False) -> dict[str, str]:
    """``lock --update --latest``: each service's newest tag on its track; LockError naming every failure."""
    answers = _concurrently(client, {("tags", lab.services[n].image.name) for n in names})
    choices = _choices(lab, names, answers, major)
    failed = {n: c for n, c in choices.items() if isinstance(c, RegistryError)}
    if failed:
        raise LockError(f"--latest: could not list the tags of {len(failed)} service(s); no file was changed",
                        hint="; ".join(f"{n}: {exc.message}" for n, exc in sorted(failed.items())),
                        services={n: exc.message for n, exc in sorted(failed.items())})
    return {n: c.newest for n, c in choices.items()}


def outdated(lab: Lab, names: list[str], client: RegistryClient, *, major: bool = False) -> OutdatedReport:
    """The report for ``names`` (already widened to whole groups): tag lists and model tags
    first, together; then the digests of the chosen tags."""
    answers = _concurrently(client, {("tags", lab.services[n].image.name) for n in names}
                            | {("digest", m.name, m.tag) for n in names for m in lab.services[n].models})
    choices = _choices(lab, names, answers, major)
    answers |= _concurrently(client, {("digest", lab.services[n].image.name, c.newest)
                                      for n, c in choices.items() if isinstance(c, Choice)})
    services = {n: _status(lab, n, choices[n], answers) for n in names}
    groups = {g: m for g, m in group_members(lab).items() if set(m) & set(names)}
    return OutdatedReport(services=services, groups=groups, unreachable=client.unreachable(), major=major)


def _status(lab: Lab, name: str, choice: Choice | RegistryError, answers: dict) -> ServiceStatus:
    bp = lab.services[name]
    image = bp.image
    models = []
    for m in bp.models:
        now = answers.get(("digest", m.name, m.tag))
        models.append(ModelStatus(reference=m.reference, digest=m.digest, registry=parse_image_name(m.name).registry,
                                  now=now if isinstance(now, str) else None,
                                  error=now.message if isinstance(now, LabbuildError) else None))
    base = dict(service=name, image=image.name, tag=image.tag, digest=image.digest,
                track=track_of(image.tag, image.track), track_declared=image.track is not None,
                group=image.group, registry=parse_image_name(image.name).registry, models=tuple(models))
    if isinstance(choice, RegistryError):
        return ServiceStatus(**base, error=choice.message)
    now = answers[("digest", image.name, choice.newest)]
    if isinstance(now, RegistryError):
        return ServiceStatus(**base, newest=choice.newest, held=choice.held, error=now.message)
    step = choice.step or (DIGEST if now != image.digest else None)
    return ServiceStatus(**base, newest=choice.newest, newest_digest=now, step=step, held=choice.held)


def check_outdated(root: str | Path, services: list[str] | tuple[str, ...] = (), *, major: bool = False,
                   insecure_registries: tuple[str, ...] = (),
                   client_factory: Callable[..., RegistryClient] = RegistryClient) -> OutdatedReport:
    """Load the lab under ``root`` and report ``services`` (all when empty) with their groups."""
    lab = load_lab(root)
    unknown = [s for s in services if s not in lab.services]
    if unknown:
        raise ArgumentError(f"unknown service(s): {', '.join(unknown)}",
                            hint="known services: " + ", ".join(sorted(lab.services)))
    registries = tuple(dict.fromkeys((*lab.insecure_registries, *insecure_registries)))
    with client_factory(insecure_registries=registries) as client:
        return outdated(lab, with_groups(lab, list(services)), client, major=major)



# --------------------------------------------------------------------------- lock --update --to / --latest

def plan_tag_moves(lab: Lab, services: list[str] | tuple[str, ...], client_of: Callable[[], RegistryClient], *,
                   to: tuple[str, ...] = (), latest: bool = False, major: bool = False,
                   split: bool = False) -> dict[str, str]:
    """``{service: new tag}`` for ``lock --update --to TAG... SERVICE...`` or ``--latest``.

    Offline first: unknown services, a group moved in part without ``split``, and a
    ``--to`` tag that is not on a service's track (each service takes the one TAG on
    its track) are refused before any registry is asked. ``--latest`` then lists tags.
    """
    names = sorted(services or lab.services)
    unknown = [s for s in names if s not in lab.services]
    if unknown:
        raise LockError(f"--update: unknown service(s) {', '.join(unknown)}",
                        hint="known services: " + ", ".join(sorted(lab.services)))
    partial = missing_members(lab, names)
    if partial and not split:
        problems = [_group_problem(lab, g, [n for n in names if lab.services[n].image.group == g], others)
                    for g, others in partial.items()]
        raise LockError(f"{len(partial)} group(s) would move in part: their pins move together",
                        problems=problems, hint="name every member (`labbuild lock --update "
                        + ("--to TAG " if to else "--latest ") + "SERVICE...`), or pass --split to move these alone")
    if not to:
        return newest_tags(lab, names, client_of(), major=major) if latest else {}
    moves, problems = {}, []
    for n in names:
        image = lab.services[n].image
        fits = fitting_tag(image.tag, image.track, to)
        if len(fits) == 1:
            moves[n] = fits[0]
            continue
        track = track_of(image.tag, image.track)
        why = LockError(f"none of {', '.join(to)} is on its track '{track}'" if not fits
                        else f"{' and '.join(fits)} are all on its track '{track}'",
                        hint=None if fits else "to leave the track, edit [image] tag (and track) by hand, "
                                               f"then run `labbuild lock --update {n}`")
        problems.append(service_problem(lab.root, lab.services[n], why, ("image", "track" if image.track else "tag")))
    if problems:
        raise LockError("--to: every service needs exactly one TAG on its track; no file was changed",
                        problems=problems, hint="give one --to TAG per track (repeat --to for a group)")
    return moves


def _group_problem(lab: Lab, group: str, named: list[str], others: tuple[str, ...]) -> Problem:
    why = LockError(f"it is in group {group!r} with {', '.join(others)}, which would stay behind"
                    + (f" (also named: {', '.join(named[1:])})" if len(named) > 1 else ""))
    return service_problem(lab.root, lab.services[named[0]], why, ("image", "group"))
