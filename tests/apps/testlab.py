"""A test lab is the shipped blueprints with only ``[image]`` replaced by the local build.

``make_test_lab(dest, images, lab_name=..., profile=...)`` copies the repository's
``blueprints/`` and ``lockfiles/lab.lock.json`` to ``dest`` and, in the blueprint of
each service named in ``images``, rewrites ``[image] name``, ``tag`` and ``digest``
to the given reference -- nothing else, every other byte stays the shipped one
(tomlkit keeps the layout and comments; tests/test_apps_testlab.py checks it).

``lab.toml`` is not a blueprint: the test lab gets its own name there (the compose
project, its volumes and containers are named after it, so it never meets an
install of the real lab or another test) and, optionally, a profile holding only
the services under test, since a lab's profiles are the only way to release a part
of it.

``lock_services(root, services)`` resolves those services' images into the lock and
carries every other entry as shipped. The shipped lock was written offline
(unverified pins): ``labbuild lock`` would try to verify them all against registries
this machine cannot reach, so only the substituted ones are resolved. The same holds for
the models a blueprint ships (``[[models]]``: ollama's come from registry.ollama.ai): a
substituted service keeps its shipped, unverified model entries and only its image is
resolved; such a lab can be released as a plain bundle, not as an image bundle (release
refuses unverified models there, as it should).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import tomlkit

REPO = Path(__file__).resolve().parents[2]
LOCK = Path("lockfiles") / "lab.lock.json"
IMAGE_KEYS = ("name", "tag", "digest")


def split_reference(ref: str) -> dict[str, str]:
    """``HOST:PORT/repo:tag@sha256:...`` -> ``{"name", "tag", "digest"}``."""
    named, _, digest = ref.partition("@")
    name, _, tag = named.rpartition(":")
    if not (name and tag and "/" not in tag and digest.startswith("sha256:")):
        raise ValueError(f"not a reference with tag and digest: {ref!r}")
    return {"name": name, "tag": tag, "digest": digest}


def substitute_image(text: str, ref: str) -> str:
    """A blueprint's text with ``[image] name/tag/digest`` set to ``ref`` and its update policy
    (``track``: which upstream tags are candidates) dropped, since the local build's tag is no
    upstream tag; nothing else changed."""
    doc = tomlkit.parse(text)
    table = doc["image"]
    if "track" in table:
        del table["track"]
    for key, value in split_reference(ref).items():
        old = table.item(key)
        new = tomlkit.item(value)
        new.trivia.indent, new.trivia.comment_ws = old.trivia.indent, old.trivia.comment_ws
        new.trivia.comment, new.trivia.trail = old.trivia.comment, old.trivia.trail
        table[key] = new
    return tomlkit.dumps(doc)


def make_test_lab(dest: Path, images: Mapping[str, str], *, lab_name: str,
                  profile: tuple[str, Iterable[str]] | None = None, optional: Iterable[str] = (),
                  source: Path = REPO) -> Path:
    """The shipped lab under ``dest`` with ``images`` ({service: reference}) substituted.

    ``profile``: ``(name, services)`` added to lab.toml (replacing one of that name), with
    ``optional`` as its optional services.
    """
    dest = Path(dest)
    shutil.copytree(source / "blueprints", dest / "blueprints")
    (dest / LOCK).parent.mkdir(parents=True)
    shutil.copy2(source / LOCK, dest / LOCK)
    for service, ref in images.items():
        path = dest / "blueprints" / "services" / f"{service}.toml"
        if not path.is_file():
            raise ValueError(f"no shipped blueprint for service {service!r}")
        path.write_text(substitute_image(path.read_text("utf-8"), ref), "utf-8")
    lab_path = dest / "blueprints" / "lab.toml"
    lab = tomlkit.parse(lab_path.read_text("utf-8"))
    lab["lab"]["name"] = lab_name
    if profile is not None:
        name, services = profile
        table = tomlkit.table()
        table["description"] = "test profile: only the services under test"
        table["services"] = sorted(services)
        if optional:
            table["optional"] = sorted(optional)
        lab["profiles"][name] = table
    lab_path.write_text(tomlkit.dumps(lab), "utf-8")
    return dest


def lock_services(root: Path, services: Iterable[str]) -> None:
    """Resolve ``services`` (from their registries) into ``root``'s lock; carry every other entry."""
    from builder.blueprint import load_lab
    from builder.lockfile import Lock, inputs_hash, read_lock, write_lock
    from builder.registry import RegistryClient
    from builder.resolve import resolve_image, resolve_services

    lab = load_lab(root)
    previous = read_lock(Path(root) / LOCK)
    with_models = sorted(s for s in services if lab.services[s].models)
    with RegistryClient(insecure_registries=lab.insecure_registries) as client:
        fresh = resolve_services(lab, sorted(set(services) - set(with_models)), client)
        for name in with_models:     # the image only; the shipped model entries as they are
            fresh[name] = dataclasses.replace(resolve_image(client, lab.services[name].image, tuple(lab.platforms)),
                                              models=previous.services[name].models)
    write_lock(Path(root) / LOCK, Lock(lab=lab.name, inputs=inputs_hash(lab), platforms=tuple(lab.platforms),
                                       services=dict(sorted({**previous.services, **fresh}.items()))))
