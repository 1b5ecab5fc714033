"""Which tags of a repository are candidates for a pin, in what order, and how big a step is.

A *track* is a regular expression matched against the whole tag. A blueprint
may declare one (``[image] track``); without, it is the tag's own shape
(``default_track``): every run of digits a number, everything else as
written — ``0.6.0-local`` gives ``^(\\d+)\\.(\\d+)\\.(\\d+)-local$``. So
``latest``, digest tags (``sha256-<hex>.sig``), pre-releases (``1.17.0-rc.1``)
and other variants (``-serverless``, ``-alpine``) are never candidates unless
a track says so.

Order: SemVer 2.0 precedence (the ``semver`` library; a leading ``v`` is
dropped and ``16.4`` reads as ``16.4.0``) when every tag compared parses as
SemVer, else numeric: the tuple of the tag's digit runs. A step is ``major``,
``minor`` or ``patch`` by the first of the first three numbers that differs
(a pre-release to its release is a ``patch``). For calendar tags
(``2026.8.2``, MinIO's ``RELEASE.2025-09-07T…``) the first number is the year,
so a new year is a major step.

Pure: strings in, strings out; tested without a registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import semver

MAJOR, MINOR, PATCH = "major", "minor", "patch"


class TrackError(ValueError):
    """A track that is not a regular expression (``message`` says why, for a Problem)."""


def default_track(tag: str) -> str:
    """The tag's own shape: each digit run ``(\\d+)``, the rest escaped, anchored."""
    parts = re.split(r"(\d+)", tag)
    # '-' is literal outside a character class: left as written, the track reads like the tag
    return "^" + "".join(r"(\d+)" if i % 2 else re.escape(p).replace("\\-", "-") for i, p in enumerate(parts)) + "$"


def track_of(tag: str, track: str | None) -> str:
    """The track a pin follows: its declared one, else its tag's shape."""
    return track if track is not None else default_track(tag)


def compile_track(track: str) -> re.Pattern:
    """The compiled track; TrackError naming what is wrong and where."""
    try:
        return re.compile(track)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise TrackError(f"not a regular expression: {exc.msg}{where}") from None


def on_track(tag: str, track: str) -> bool:
    """Whether ``tag`` is a candidate of ``track`` (matched in full)."""
    return compile_track(track).fullmatch(tag) is not None


def _semver(tag: str) -> semver.Version | None:
    text = tag[1:] if tag[:1] in ("v", "V") and tag[1:2].isdigit() else tag
    try:
        return semver.Version.parse(text, optional_minor_and_patch=True)
    except ValueError:
        return None


def _numbers(tag: str) -> tuple[int, ...]:
    return tuple(int(d) for d in re.findall(r"\d+", tag))


def _version_key(tags: list[str]):
    """The order of ``tags``: SemVer when all of them parse, else their numbers."""
    versions = {t: _semver(t) for t in tags}
    if all(v is not None for v in versions.values()):
        return versions.__getitem__
    return _numbers


def sort_tags(tags: Iterable[str]) -> list[str]:
    """``tags`` oldest first: by SemVer when all of them parse, else by their numbers
    (ties, such as ``v1.2.0`` and ``1.2.0`` on a loose track, by the text)."""
    tags = list(dict.fromkeys(tags))
    key = _version_key(tags)
    return sorted(tags, key=lambda t: (key(t), t))


def step(old: str, new: str) -> str:
    """``major``, ``minor`` or ``patch``: the first of the first three numbers that differs."""
    a, b = _semver(old), _semver(new)
    if a is not None and b is not None:
        x, y = (a.major, a.minor, a.patch), (b.major, b.minor, b.patch)
    else:
        x, y = (_numbers(old) + (0, 0, 0))[:3], (_numbers(new) + (0, 0, 0))[:3]
    return MAJOR if x[0] != y[0] else MINOR if x[1] != y[1] else PATCH


@dataclass(frozen=True)
class Choice:
    """The tag a pin would move to: ``newest`` (its own tag when none is newer on the track),
    the ``step`` there (None: no newer tag), and ``held``, a newer tag on the track left
    out because it is a major step and majors were not asked for."""

    current: str
    newest: str
    step: str | None = None
    held: str | None = None


def choose(current: str, tags: Iterable[str], track: str | None, *, major: bool = False) -> Choice:
    """The newest of ``tags`` on the pin's track, newer than ``current``; a major step only with ``major``."""
    pattern = compile_track(track_of(current, track))
    candidates = list(dict.fromkeys([current, *(t for t in tags if pattern.fullmatch(t))]))
    key = _version_key(candidates)
    newer = [t for t in sort_tags(candidates) if key(t) > key(current)]
    offered = [t for t in newer if major or step(current, t) != MAJOR]
    newest = offered[-1] if offered else current
    held = newer[-1] if newer and newer[-1] not in offered else None
    return Choice(current=current, newest=newest, step=step(current, newest) if newest != current else None,
                  held=held)


def fitting_tag(current: str, track: str | None, wanted: Iterable[str]) -> list[str]:
    """Those of ``wanted`` (``lock --update --to``) that are on the pin's track."""
    pattern = compile_track(track_of(current, track))
    return [t for t in dict.fromkeys(wanted) if pattern.fullmatch(t)]
