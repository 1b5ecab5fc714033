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
              help="Sign manifest.json with this Ed25519 private key (from `labbuild keygen`).")
@click.option("--rebuild", metavar="PROFILE-VERSION",
              help="Rebuild a recorded release from lockfiles/releases/ and check its sha256.")
@pass_output
def release(out: Output, version: str | None, profile: str | None, with_images: bool,
            platforms: tuple[str, ...], out_dir: Path | None, sign_key: Path | None,
            rebuild: str | None) -> None:
    """Build the immutable, reproducible bundle VERSION (SemVer) of a profile.

    Writes DIR/<lab>-<profile>-<VERSION>.tar.gz (.tar with images) and records
    it in lockfiles/releases/<profile>-<VERSION>.json. Releasing the same
    version again with identical content is a no-op; with different content it
    is refused: bump the version. The lock must be fresh (`labbuild lock`).
    """
    from ..bundle.release import build_release, rebuild_release

    if rebuild:
        if version or profile or with_images or platforms:
            raise click.UsageError("--rebuild takes only --out and --sign: the rest comes from the record")
        result = rebuild_release(out.root, rebuild, out_dir=out_dir, sign_key=sign_key)
        text = f"reproduced {result.bundle} (sha256 {result.sha256})"
    else:
        if not version:
            raise click.UsageError("VERSION is required (or --rebuild PROFILE-VERSION)")
        result = build_release(out.root, version, profile=profile, out_dir=out_dir, with_images=with_images,
                               platforms=platforms or None, sign_key=sign_key)
        if result.noop:
            text = (f"release {result.profile} {result.version} already recorded with identical content: nothing to do"
                    + (f" (archive written to {result.bundle})" if result.restored else f" ({result.bundle})"))
        else:
            size = result.bundle.stat().st_size
            text = (f"released {result.bundle} ({len(result.services)} services, {size / 1024:.0f} KiB"
                    + (", signed" if result.signed_by else "") + f")\nsha256 {result.sha256}")
    if out.json:
        out.info(text)
    out.result(result.to_json(), text)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 public key: the bundle must carry a valid signature by it.")
@pass_output
@click.pass_context
def verify(ctx: click.Context, out: Output, bundle: Path, key: Path | None) -> None:
    """Check every checksum of BUNDLE (and its signature with --key).

    BUNDLE is an archive or an extracted bundle directory (e.g. DIR/current).
    Every file against SHA256SUMS and manifest.json; unlisted or missing files;
    unsafe members (absolute paths, '..', links, devices, duplicates). Exit 1 on any problem.
    """
    from ..bundle.verify import verify_bundle

    result = verify_bundle(bundle, key)
    for problem in result.errors:
        out.info(problem.render())
    if result.ok:
        sig = ("signature valid" if result.signature_checked
               else "signed (pass --key PUB to check the signature)" if result.signed else "unsigned")
        text = f"{bundle}: OK, {len(result.files)} files verified, {sig}"
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
@pass_output
def keygen(out: Output, private: Path, force: bool) -> None:
    """Create an Ed25519 key pair for `release --sign` and `verify --key`.

    Keep the private key off the air-gapped host; carry only the .pub file.
    """
    from ..signing import generate_keypair

    public = private.with_name(private.name.removesuffix(".key") + ".pub")
    fp = generate_keypair(private, public, force=force)
    text = f"private key {private} (keep it secret)\npublic key  {public}\nfingerprint {fp}"
    out.result({"private_key": str(private), "public_key": str(public), "fingerprint": fp}, text)
