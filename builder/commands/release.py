"""`labbuild release`, `verify`, `diff` and `keygen`: thin shells over builder.bundle
(release, verify, diff) and builder.signing."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli import Output, pass_output


@click.command()
@click.argument("version", required=False)
@click.option("--profile", help="Profile to release (default: the lab's default_profile).")
@click.option("--with-images", is_flag=True, help="Ship the images in the bundle (air-gapped installs).")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH",
              help="With --with-images: ship only these platforms (repeatable; default: the lab's).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: ROOT/dist).")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path),
              help="Sign with this private key (from `labbuild keygen`): manifest.json.sig (cosign/openssl), "
                   "manifest.json.sigstore.json and the provenance.")
@click.option("--sbom", is_flag=True,
              help="Without --with-images: fetch the layers anyway to ship sbom/ (image bundles always do).")
@click.option("--since", "since", metavar="BASE",
              help="With --with-images: a delta bundle holding only the blobs BASE lacks. BASE is a "
                   "recorded version of the profile (e.g. 1.0.0) or a base bundle file.")
@click.option("--rebuild", metavar="PROFILE-VERSION",
              help="Rebuild a recorded release from lockfiles/releases/ and check its sha256 "
                   "(a delta: delta/PROFILE-VERSION-since-BASE).")
@click.option("--reuse-from", "reuse_from", multiple=True, metavar="DIR", envvar="LABBUILD_REUSE_FROM",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="With --with-images: copy blobs from the image bundles (*.tar) in DIR instead of "
                   "downloading them (repeatable; or LABBUILD_REUSE_FROM=DIR[:DIR...]). Each bundle is "
                   "verified first; one that fails is skipped with a warning.")
@pass_output
@click.pass_context
def release(ctx: click.Context, out: Output, version: str | None, profile: str | None, with_images: bool,
            platforms: tuple[str, ...], out_dir: Path | None, sign_key: Path | None, sbom: bool,
            since: str | None, rebuild: str | None, reuse_from: tuple[Path, ...]) -> None:
    """Build the immutable, reproducible bundle VERSION (SemVer) of a profile.

    Writes DIR/<lab>-<profile>-<VERSION>.tar.gz (.tar with images) and records
    it in lockfiles/releases/<profile>-<VERSION>.json. Releasing the same
    version again with identical content is a no-op; with different content it
    is refused: bump the version. The lock must be fresh (`labbuild lock`).
    Every bundle carries provenance.intoto.json (SLSA Provenance v1, signed with
    --sign); image bundles carry one CycloneDX SBOM per image and platform.

    With images, each blob is written once, straight into the .tar. An
    interrupted release leaves DIR/.<bundle>.partial and .journal: the same
    command again resumes them, fetching only the blobs that were in flight.
    Blobs inside bundles written earlier (unchanged since) are copied, not
    downloaded; so are those of the bundles in each --reuse-from DIR (e.g. copied
    from CI), once each verified as `labbuild verify` does.

    With --since BASE: DIR/<lab>-<profile>-<VERSION>-since-<BASE>.tar, a delta
    carrying only the blobs (layers, configs, manifests) the base release
    lacks, recorded in lockfiles/releases/delta/. Install it with
    `labbuild install` on a host running the base (or pass --base BASE_BUNDLE).
    """
    from ..bundle.release import build_release, rebuild_release

    if reuse_from and ctx.get_parameter_source("reuse_from") is not click.core.ParameterSource.COMMANDLINE \
            and (rebuild or not with_images):
        reuse_from = ()         # LABBUILD_REUSE_FROM set for image releases: nothing to reuse here
    if rebuild:
        if version or profile or with_images or platforms or sbom or since or reuse_from:
            raise click.UsageError("--rebuild takes only --out and --sign: the rest comes from the record")
        result = rebuild_release(out.root, rebuild, out_dir=out_dir, sign_key=sign_key)
        text = f"reproduced {result.bundle} (sha256 {result.sha256})"
    else:
        if not version:
            raise click.UsageError("VERSION is required (or --rebuild PROFILE-VERSION)")
        if since and not with_images:
            raise click.UsageError("--since builds a delta of an image bundle: add --with-images")
        if reuse_from and not with_images:
            raise click.UsageError("--reuse-from reuses image blobs: add --with-images")
        result = build_release(out.root, version, profile=profile, out_dir=out_dir, with_images=with_images,
                               platforms=platforms or None, sign_key=sign_key, sbom=sbom, since=since,
                               reuse_from=reuse_from)
        if result.noop:
            text = (f"release {result.profile} {result.version} already recorded with identical content: nothing to do"
                    + (f" (archive written to {result.bundle})" if result.restored else f" ({result.bundle})"))
        else:
            size = result.bundle.stat().st_size
            text = (f"released {result.bundle} ({len(result.services)} services, {size / 1024:.0f} KiB"
                    + (", signed" if result.signed_by else "") + f")\nsha256 {result.sha256}")
        if result.delta is not None:
            text += "\n" + result.delta.render()
        text += "".join(f"\nwarning: {w}" for w in result.warnings)
    if out.json:
        out.info(text)
    out.result(result.to_json(), text)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="Public key (.pub from `labbuild keygen`): the bundle's signature, Sigstore bundle and "
                   "provenance must verify with it.")
@pass_output
@click.pass_context
def verify(ctx: click.Context, out: Output, bundle: Path, key: Path | None) -> None:
    """Check every checksum of BUNDLE (and its signature with --key).

    BUNDLE is an archive or an extracted bundle directory (e.g. DIR/current).
    Every file against SHA256SUMS and manifest.json; unlisted or missing files;
    unsafe members (absolute paths, '..', links, devices, duplicates). Exit 1 on any problem.
    Provenance is required of every bundle whose manifest.json says labbuild 0.2.0 or
    later made it. An empty or garbled manifest.json.sig is damage, never "signed".
    A delta bundle is checked for what it carries; the blobs it relies on (from
    its base release) are listed, not checked: install checks them in the engine.
    """
    from ..bundle.verify import verify_bundle
    from ..format.delta import delta_summary
    from ..format.files import PROVENANCE_SINCE

    result = verify_bundle(bundle, key)
    for problem in result.errors:
        out.info(problem.render())
    if result.ok:
        sig = ("signature valid" if result.signature_checked
               else "signed (pass --key PUB to check the signature)" if result.signed else "unsigned")
        prov = {"signed": "provenance signed" + (" and checked" if result.signature_checked else ""),
                "unsigned": "provenance unsigned",
                "absent": f"no provenance (made by labbuild {result.manifest.labbuild}, before {PROVENANCE_SINCE})"}
        text = f"{bundle}: OK, {len(result.files)} files verified, {sig}, {prov[result.provenance]}"
        if result.manifest is not None and result.manifest.since is not None:
            text += "\n" + delta_summary(result.manifest).render()
    else:
        text = f"{bundle}: FAILED, {len(result.errors)} problem(s)"
    if out.json:
        out.info(text)
        out.result({**result.to_json(), "bundle": str(bundle)})
    else:
        click.echo(text, err=not result.ok)
    if not result.ok:
        ctx.exit(1)


@click.command()
@click.argument("bundle_a", type=click.Path(path_type=Path))
@click.argument("bundle_b", type=click.Path(path_type=Path))
@pass_output
def diff(out: Output, bundle_a: Path, bundle_b: Path) -> None:
    """What changed from release BUNDLE_A to BUNDLE_B: images, ports, env, volumes, files.

    Either may be an archive or an extracted bundle directory. Never shows secret values.
    """
    from ..bundle.diff import diff_bundles, read_bundle_view

    result = diff_bundles(read_bundle_view(bundle_a), read_bundle_view(bundle_b))
    out.result(result.to_json(), result.render_text())


@click.command()
@click.option("--out", "private", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("labbuild-signing.key"), show_default=True,
              help="Private key path (mode 0600); the public key goes beside it with .pub.")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--type", "key_type", type=click.Choice(["ecdsa-p256", "ed25519"]), default="ecdsa-p256",
              show_default=True, help="ECDSA P-256 is what cosign and openssl check by default.")
@pass_output
def keygen(out: Output, private: Path, force: bool, key_type: str) -> None:
    """Create a key pair for `release --sign` and `verify --key` (ECDSA P-256 by default).

    Keep the private key off the air-gapped host; carry only the .pub file.
    `cosign verify-blob --key K.pub --signature manifest.json.sig manifest.json`
    and `openssl dgst -sha256 -verify K.pub` check bundles signed with it.
    """
    from ..signing import generate_keypair

    public = private.with_name(private.name.removesuffix(".key") + ".pub")
    fp = generate_keypair(private, public, force=force, key_type=key_type)
    text = f"private key {private} (keep it secret)\npublic key  {public}\nfingerprint {fp}"
    out.result({"private_key": str(private), "public_key": str(public), "fingerprint": fp}, text)


@click.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--service", help="Only this service's images.")
@pass_output
def sbom(out: Output, bundle: Path, service: str | None) -> None:
    """List the software components (CycloneDX SBOMs under sbom/) of a verified bundle.

    One document per image and platform: OS packages (dpkg, apk), Python and
    Node packages, each with its purl and the layer it comes from.
    """
    from ..bundle.inventory import read_inventory

    inventories = read_inventory(bundle, service)
    lines = []
    for inv in inventories:
        lines.append(f"{inv.service} ({inv.platform}): {len(inv.components)} components")
        lines += [f"  {c['name']} {c['version'] or ''}  {c['purl'] or ''}".rstrip() for c in inv.components]
    if not inventories:
        lines.append(f"{bundle}: no SBOMs (release with --with-images or --sbom to ship them)")
    out.result({"ok": True, "bundle": str(bundle), "images": [i.to_json() for i in inventories]},
               "\n".join(lines))
