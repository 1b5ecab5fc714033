"""``blueprints/lab.toml``: the lab's name, platforms, profiles and front door (``[access]``).

Checked by hand (it is small and has no schema file): unknown keys, profiles
naming blueprints that exist, ``extends`` without cycles, a known
``default_profile`` and well-formed platforms; ``check_optional``: no service
that always starts depends on one that is ``optional`` in its profile.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import names
from ..errors import BlueprintError
from .access import parse_access
from .model import DEFAULT_PLATFORMS, Blueprint, Lab, Profile
from .rules import find_cycle
from .source import Collector, Source

_LAB_KEYS = {"lab", "profiles", "access"}
_LAB_LAB_KEYS = {"name", "default_profile", "platforms", "insecure_registries", "description"}
_PROFILE_KEYS = {"services", "extends", "description", "optional"}


def _check_keys(src: Source, path: tuple, table: Any, allowed: set[str], out: Collector) -> bool:
    if not isinstance(table, dict):
        out.add(src, path, f"expected a table, got {type(table).__name__}")
        return False
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
            out.add(src, path + (key,), f"unknown key {key!r}",
                    hint=f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(sorted(allowed)))
    return True


def _str_list(src: Source, path: tuple, value: Any, out: Collector) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        out.add(src, path, "expected a list of strings")
        return ()
    return tuple(value)


def parse_lab(src: Source, services: dict[str, Any], out: Collector) -> dict | None:
    """lab.toml's checked fields (name, default_profile, profiles, platforms, insecure_registries), or None."""
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
    if not names.is_valid("lab", name):
        out.add(src, ("lab", "name"), "lab name must be lower-case letters, digits and single hyphens",
                hint=names.describe("lab") + ' e.g. name = "local-ai-lab"')
    profiles_raw = d.get("profiles", {})
    profiles: dict[str, Profile] = {}
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        out.add(src, ("profiles",), "at least one [profiles.NAME] is required")
        profiles_raw = {}
    for pname, p in profiles_raw.items():
        if not names.is_valid("profile", pname):
            out.add(src, ("profiles", pname), names.problem("profile", pname),
                    hint="profile names become file and directory names: e.g. [profiles.phase1]")
            continue
        if not _check_keys(src, ("profiles", pname), p, _PROFILE_KEYS, out):
            continue
        svcs = _str_list(src, ("profiles", pname, "services"), p.get("services", []), out)
        ext = _str_list(src, ("profiles", pname, "extends"), p.get("extends", []), out)
        opt = _str_list(src, ("profiles", pname, "optional"), p.get("optional", []), out)
        for key, listed in (("services", svcs), ("optional", opt)):
            for i, s in enumerate(listed):
                if s not in services:
                    close = difflib.get_close_matches(s, sorted(services), n=1)
                    out.add(src, ("profiles", pname, key, i), f"no blueprint for service {s!r}",
                            hint=f"did you mean {close[0]!r}?" if close
                            else f"add blueprints/services/{s}.toml or remove it from the profile")
        for i, e in enumerate(ext):
            if e not in profiles_raw:
                out.add(src, ("profiles", pname, "extends", i), f"unknown profile {e!r}",
                        hint="known profiles: " + ", ".join(sorted(profiles_raw)))
        profiles[pname] = Profile(name=pname, services=svcs, extends=ext,
                                  description=str(p.get("description", "")), optional=opt)
    cycle = find_cycle({n: p.extends for n, p in profiles.items()})
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
        if not names.is_valid("platform", plat):
            out.add(src, ("lab", "platforms", i), f"{plat!r} is not a platform", hint="e.g. linux/amd64")
    insecure = _str_list(src, ("lab", "insecure_registries"), lab.get("insecure_registries", []), out)
    access = parse_access(src, d.get("access"), services, out)
    return {"name": name, "default_profile": default, "profiles": profiles,
            "platforms": platforms or DEFAULT_PLATFORMS, "insecure_registries": insecure, "access": access}


def check_optional(src: Source, profiles: dict[str, Profile], services: dict[str, Blueprint],
                   out: Collector) -> None:
    """No service that always starts may wait for one that is optional in the same profile.

    An optional service may never be started (its supplied secret is missing),
    so a hard ``depends_on`` on it, or a ``[when.X] depends_on = true`` towards
    it, would keep its dependant from starting.
    """
    if not all(p.name in profiles for p in profiles.values()) or find_cycle(
            {n: p.extends for n, p in profiles.items()}):
        return
    known = {n: replace(p, services=tuple(s for s in p.services if s in services),
                        optional=tuple(s for s in p.optional if s in services))
             for n, p in profiles.items()}   # unknown names are reported by parse_lab
    lab = Lab(root=Path("."), name="check", default_profile=next(iter(known), ""), profiles=known,
              services=services)
    for pname in sorted(profiles):
        try:
            optional = set(lab.optional_services(pname))
            closure = lab.profile_closure(pname)
        except (BlueprintError, KeyError):
            continue  # unknown profiles or services are reported elsewhere
        for name in closure:
            if name in optional:
                continue
            for dep in services[name].effective_depends_on(closure):
                if dep not in services:
                    continue
                if dep in optional:
                    out.add(src, ("profiles", pname, "optional"),
                            f"{dep!r} is optional in profile {pname!r} but {name!r} depends on it",
                            hint=f"make {name!r} optional too, or drop the dependency "
                                 f"(wire it with [when.{dep}.env] and depends_on = false)")
