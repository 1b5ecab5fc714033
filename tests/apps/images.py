"""``python -m tests.apps.images --registry HOST:PORT [--json] [--only APP]...``

Builds (or finds already built) every recipe of ``recipe.RECIPES``, pushes each to
the registry and prints, for every shipped catalog service a build serves, the
reference to pin (``HOST:PORT/labbuild-apps/<app>:<hash>@sha256:...``), and for
every application of the catalog without an image, why:

    {"images": {service: ref}, "unbuilt": {application: reason}, "stand_ins": {service: what}}

A protocol stand-in (``Recipe.stand_in``: ollama-standin) is published under "images" for the
services it serves, so a test lab can be assembled with it, and named under "stand_ins"; the
application it stands in for stays under "unbuilt" with its reason.
(with ``--json``; as text lines without). Exit 1 when a recipe failed to build or
push; applications that have no recipe, and a recipe whose host file (``Recipe.host_files``)
is absent on this machine (named under "unbuilt"), do not fail it. Progress goes to stderr.
``build_and_push`` is the same as a function, for tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .base import AppImageError, BuiltImage, ensure_base
from .build import ensure_image, push_image
from .recipe import NO_RECIPE, RECIPES, application

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ImagesResult:
    images: dict[str, str] = field(default_factory=dict)       # catalog service -> pushed reference
    unbuilt: dict[str, str] = field(default_factory=dict)      # application -> why it has no image
    failed: list[str] = field(default_factory=list)            # recipes that did not build or push
    builds: dict[str, BuiltImage] = field(default_factory=dict)   # application -> its local image
    stand_ins: dict[str, str] = field(default_factory=dict)   # catalog service -> what stands in for it

    def to_json(self) -> dict:
        return {"images": dict(sorted(self.images.items())), "unbuilt": dict(sorted(self.unbuilt.items())),
                "stand_ins": dict(sorted(self.stand_ins.items()))}


def catalog_images(root: Path = REPO) -> dict[str, str]:
    """Every shipped service and the image repository its blueprint pins."""
    from builder.blueprint import load_lab
    return {name: bp.image.name for name, bp in sorted(load_lab(root).services.items())}


def build_and_push(registry: str, *, only: Iterable[str] = (), engine=None,
                   log: Callable[[str], None] = lambda _: None, root: Path = REPO,
                   storage: Path | None = None) -> ImagesResult:
    """Build every recipe (or those named in ``only``), push each to ``registry`` (``storage``: its
    storage directory, when it is a test's own registry: see ``build.push_image``)."""
    only = set(only)
    unknown = only - {r.name for r in RECIPES}
    if unknown:
        raise AppImageError(f"no recipe named {', '.join(sorted(unknown))} (known: {', '.join(r.name for r in RECIPES)})")
    services = catalog_images(root)
    result = ImagesResult()
    recipes = [r for r in RECIPES if not only or r.name in only]
    with_recipe = {r.upstream for r in RECIPES if not r.stand_in}
    for repository in sorted(set(services.values()) - with_recipe):
        app = application(repository)
        result.unbuilt[app] = NO_RECIPE.get(app, "no recipe yet")
    try:
        engine = engine or _engine()
        base = ensure_base(engine, log)
    except AppImageError as exc:
        for recipe in recipes:
            result.unbuilt[recipe.name] = str(exc)
            result.failed.append(recipe.name)
        return result
    for recipe in recipes:
        served = sorted(s for s, repo in services.items() if repo == recipe.upstream)
        if recipe.missing():
            result.unbuilt[application(recipe.upstream)] = recipe.missing()
            continue
        try:
            built = ensure_image(engine, recipe, base, log)
            ref = push_image(engine, built, registry, storage)
        except AppImageError as exc:
            result.unbuilt[recipe.name] = str(exc)
            result.failed.append(recipe.name)
            continue
        log(f"{recipe.name}: {'built in %.0f s' % built.seconds if built.built else 'cached'}; pushed {ref}")
        result.builds[recipe.name] = built
        result.images.update({s: ref for s in served})
        if recipe.stand_in:
            result.stand_ins.update({s: recipe.stand_in for s in served})
    return result


def _engine():
    import docker
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:   # any failure means: no usable engine
        raise AppImageError(f"no Docker engine reachable ({type(exc).__name__}: {exc})") from None
    return client


def render_text(result: ImagesResult) -> str:
    lines = [f"{svc}  {ref}" for svc, ref in sorted(result.images.items())]
    lines += [f"unbuilt {app}: {why}" for app, why in sorted(result.unbuilt.items())]
    lines += [f"stand-in {svc}: {what}" for svc, what in sorted(result.stand_ins.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.apps.images",
                                     description="Build (cached) and push the real-application test images.")
    parser.add_argument("--registry", required=True, metavar="HOST:PORT", help="push here (e.g. 127.0.0.1:5000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", action="append", default=[], metavar="APP",
                        help="build only this recipe (repeatable): " + ", ".join(r.name for r in RECIPES))
    args = parser.parse_args(argv)
    try:
        result = build_and_push(args.registry, only=args.only, log=lambda text: print(text, file=sys.stderr))
    except AppImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2, sort_keys=True) if args.json else render_text(result))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
