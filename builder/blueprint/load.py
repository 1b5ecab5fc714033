"""The public entry points: load and validate a lab, or only some files.

Data flows one way: ``load_lab(root)`` reads ``blueprints/lab.toml`` and
``blueprints/services/*.toml``, collects *every* problem (schema, then
semantics) and either raises one ``BlueprintError`` holding them all or
returns a ``Lab``. ``validate_paths`` returns the problems instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..errors import BlueprintError, Problem
from .access import check_access, check_front_door, parse_access
from .labfile import check_optional, parse_lab
from .model import Blueprint, Lab, build_blueprint
from .rules import check_cross, check_service_local
from .schema import schema_problems
from .source import Collector, Source, display_name, read_toml


def lab_paths(root: Path) -> tuple[Path, list[Path]]:
    """``(lab.toml, sorted blueprint files)`` under ``root``."""
    bdir = root / "blueprints"
    return bdir / "lab.toml", sorted((bdir / "services").glob("*.toml"))


def _load_sources(paths: Iterable[Path], root: Path | None, out: Collector) -> list[Source]:
    return [read_toml(p, display_name(p, root), out) for p in paths]


def _validated_blueprints(sources: list[Source], out: Collector) -> dict[str, tuple[Blueprint, Source]]:
    result: dict[str, tuple[Blueprint, Source]] = {}
    for src in sources:
        if src.data is None:
            continue
        before = len(out.problems)
        schema_problems(src, out)
        if len(out.problems) != before:
            continue
        bp = build_blueprint(src.data, src.display)
        check_service_local(bp, src, out)
        check_front_door(bp, src, out)
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
    out = Collector()
    lab_file, files = lab_paths(root)
    if paths:
        given = [Path(p) for p in paths]
        sources = _load_sources(given, root, out)
        given_resolved = {p.resolve() for p in given}
        context_out = Collector()
        context = _load_sources([f for f in files if f.resolve() not in given_resolved], root, context_out)
        ctx = _validated_blueprints(context, context_out)
        mine = _validated_blueprints(sources, out)
        merged = {**ctx, **mine}
        check_cross(merged, set(mine), out)
        _check_access_of(root, merged, {src.display for _, src in mine.values()}, out)
        return _sorted(out.problems)
    if not lab_file.exists() and not files:
        out.add(str(root), (), "no lab here: blueprints/lab.toml and blueprints/services/*.toml are missing",
                hint="run labbuild from the lab repository or pass --root DIR")
        return out.problems
    _check_whole_lab(root, out)
    return _sorted(out.problems)


def _check_access_of(root: Path, services: dict[str, tuple[Blueprint, Source]], files: set[str],
                     out: Collector) -> None:
    """The front-door rules across services, reported for ``files`` only (lab.toml read quietly)."""
    lab_file, all_files = lab_paths(root)
    if not lab_file.exists():
        return
    quiet = Collector()
    lab_src = read_toml(lab_file, display_name(lab_file, root), quiet)
    if lab_src.data is None or not isinstance(lab_src.data, dict):
        return
    access = parse_access(lab_src, lab_src.data.get("access"), {f.stem: None for f in all_files}, quiet)
    if access is None:
        return
    found = Collector()
    check_access(lab_src, access, services, found)
    out.problems += [p for p in found.problems if p.file in files]


def _check_whole_lab(root: Path, out: Collector) -> tuple[dict[str, tuple[Blueprint, Source]], dict | None]:
    """Read and check every blueprint and lab.toml once; problems go to ``out``."""
    lab_file, files = lab_paths(root)
    services = _validated_blueprints(_load_sources(files, root, out), out)
    check_cross(services, set(services), out)
    lab_src = read_toml(lab_file, display_name(lab_file, root), out)
    parsed = None
    if lab_src.data is not None:
        parsed = parse_lab(lab_src, {f.stem: None for f in files}, out)
        if parsed is not None and len(services) == len(files):
            check_optional(lab_src, parsed["profiles"], {n: bp for n, (bp, _) in services.items()}, out)
        if parsed is not None and parsed["access"] is not None:
            check_access(lab_src, parsed["access"], services, out)
    return services, parsed


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.path))


def load_lab(root: str | Path) -> Lab:
    """Load and validate the whole lab under ``root``; raise BlueprintError listing every problem."""
    root = Path(root)
    out = Collector()
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
               platforms=tuple(parsed["platforms"]), insecure_registries=tuple(parsed["insecure_registries"]),
               access=parsed["access"])
