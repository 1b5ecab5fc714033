"""`labbuild mirror`: a thin shell over builder.mirror."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "to", required=True, metavar="REGISTRY[/PREFIX]",
              help="Target registry and optional path prefix, e.g. registry.lan:5000/lab.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Talk plain HTTP to this registry (repeatable; adds to lab.toml's insecure_registries "
                   "when --root holds a lab). Loopback registries always speak plain HTTP.")
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="Public key: the bundle's signature must verify with it.")
@pass_output
def mirror(out: Output, bundle: Path, to: str, insecure: tuple[str, ...], key: Path | None) -> None:
    """Push every image of an image BUNDLE into a registry, by digest.

    Each image goes to REGISTRY/PREFIX/<repository path> (the image name
    without its registry host) with its exact manifest bytes, so digests are
    unchanged, and gets the tag of the lock. The bundle is verified first,
    its blobs while they are pushed: a damaged blob stops the mirror before
    any manifest or tag. Blobs already in the registry are skipped (HEAD),
    so a second run pushes nothing and an interrupted run resumes.
    """
    from ..mirror import lab_insecure_registries, mirror_bundle

    result = mirror_bundle(bundle, to, insecure_registries=(*insecure, *lab_insecure_registries(out.root)),
                           key=key, say=out.info)
    out.result(result.to_json(), result.render())
