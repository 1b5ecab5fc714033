"""Where an export's input comes from: the text members of one bundle.

Two ways in, one shape out (``{arcname: bytes}``, arcnames relative to the
bundle's top directory):

- ``bundle_members(path)``: a released archive (or an extracted bundle
  directory), verified first; only the small text members the chart needs.
- ``profile_members(root, profile, version)``: the bundle ``labbuild release``
  would build from the blueprints and the lock, planned in memory.
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..blueprint import load_lab
from ..bundle.pack import plan_bundle
from ..bundle.release import check_version
from ..bundle.verify import read_verified, require_verified
from ..errors import BundleError, LockError
from ..format.files import ACCESS_JSON, COMPOSE_FILE, LAB_ENV, MANIFEST, SECRETS_EXAMPLE, TRUST_FILES
from ..fsutil import CapExceeded, read_capped, sha256_bytes
from ..lockfile import LOCK_PATH, read_lock, stale_services
from ..render import ReleaseInput

# The members a chart is made of (images/, sbom/, install.sh, ... are not read).
WANTED_FILES = (COMPOSE_FILE, LAB_ENV, MANIFEST, SECRETS_EXAMPLE, ACCESS_JSON)
WANTED_DIRS = ("config/", "observability/", "runbooks/", "access/home/")   # access/home/: the front door's page


def _wanted(rel: str) -> bool:
    return rel in WANTED_FILES or rel.startswith(WANTED_DIRS)


def bundle_members(path: str | Path) -> dict[str, bytes]:
    """The chart's members of a verified bundle archive or extracted bundle directory."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle", hint="pass a bundle made by `labbuild release`")
    if not path.is_dir():  # one verify-while-reading pass keeps the members
        result = read_verified(path, keep=lambda rel: rel in TRUST_FILES or _wanted(rel))
        if not result.ok:
            raise BundleError(f"{path}: bundle failed verification ({len(result.errors)} problem(s))",
                              problems=result.errors, hint="export only verified bundles; copy or rebuild it")
        return {rel: data for rel, data in sorted(result.contents.items()) if _wanted(rel)}
    result = require_verified(path)   # its files within the totals of builder.limits
    members, changed = {}, []
    for rel in sorted(rel for rel in result.files if _wanted(rel)):
        sha256, size = result.files[rel]
        try:
            members[rel] = read_capped(path / rel, size)     # no more than verified
        except CapExceeded:
            changed.append(rel)
            continue
        if sha256_bytes(members[rel]) != sha256:
            changed.append(rel)
    if changed:
        raise BundleError(f"{path} changed while it was being read: {', '.join(changed)}",
                          hint="copy the bundle again and retry")
    return members


def profile_members(root: str | Path, profile: str | None, version: str) -> dict[str, bytes]:
    """The bundle of ``profile`` at ``version`` as ``release`` would write it, in memory."""
    root = Path(root)
    check_version(version)
    lab = load_lab(root)
    lock = read_lock(root / LOCK_PATH)
    stale = stale_services(lab, lock)
    if stale:
        raise LockError(f"the lock is stale for {', '.join(sorted(stale))}",
                        hint="run `labbuild lock` (or `lock --update SERVICE`) and commit the lockfile")
    ri = ReleaseInput(lab=lab, lock=lock, profile=profile or lab.default_profile, version=version,
                      labbuild_version=__version__)
    ri.services  # raises BlueprintError for an unknown profile before anything is planned
    plan = plan_bundle(ri, platforms=lab.platforms)
    return {f.arcname: f.data for f in plan.files if f.data is not None and _wanted(f.arcname)}
