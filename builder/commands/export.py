"""`labbuild export helm`: a thin shell over builder.export.helm."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output


@click.group()
def export() -> None:
    """Export the lab for other platforms (a Helm chart for Kubernetes)."""


@export.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--profile", help="Export this profile of the lab in --root instead of a bundle.")
@click.option("--version", "version", default="0.0.0", show_default=True,
              help="With --profile: the chart's version (SemVer), as `release VERSION` would give it.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The chart directory to write (new, empty, or an earlier export).")
@pass_output
def helm(out: Output, bundle: Path | None, profile: str | None, version: str, out_dir: Path) -> None:
    """Write a Helm chart (apiVersion v2) of BUNDLE, or of --profile P, into --out DIR.

    The same input gives byte-identical files. `--set global.imageRegistry=REGISTRY/PREFIX`
    at install rewrites every image to a mirror, keeping its locked digest.
    """
    from ..export.helm import export_helm

    if (bundle is None) == (profile is None):
        raise click.UsageError("give either BUNDLE or --profile P")
    result = export_helm(out_dir, bundle=bundle, root=out.root, profile=profile, version=version)
    text = (f"exported {result.chart} {result.version} ({result.profile}, {len(result.services)} services) "
            f"as a Helm chart in {result.out}"
            + (f"; removed {len(result.removed)} stale file(s)" if result.removed else "")
            + f"\nnext: helm lint {result.out} && helm install {result.chart} {result.out} "
              f"--namespace {result.chart} --create-namespace")
    if out.json:
        out.info(text)
    out.result(result.to_json(), text)
