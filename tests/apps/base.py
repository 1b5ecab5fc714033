"""The shared base image: a minimal Debian root filesystem, imported into the engine.

``debootstrap --variant=minbase`` of the Debian release the test machines run
(DESIGN.md, "Test environment": its mirror is reachable, Docker Hub is not, so no
``debian:*-slim`` can be pulled), then ``docker import``. The result is close to
``debian:<suite>-slim``, the base of the official postgres image: the same
essential packages, apt pointed at the release, its updates and its security
archive. Docs and man pages are left out of later installs, as in the slim image.

The image is tagged ``labbuild-apps/base:<hash>``, the hash taken over this
recipe (``BASE_RECIPE``); ``ensure_base`` finds it there or builds it (about a
minute, mostly downloads).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = "labbuild-apps"             # local image names: labbuild-apps/<recipe>:<hash>
RECIPE_LABEL = "org.local-ai-lab.apps.recipe"   # the full recipe hash, on every image built here

# Bookworm is the release installed on the test machines; its packages are what the recipes
# install (PostgreSQL 15, Redis 7.0, Prometheus 2.42, node-exporter 1.5). Trixie would bring
# PostgreSQL 17, Redis 8.0, Prometheus 2.53 and node-exporter 1.9 (closer to the pins), and
# the recipes name their major versions where they must (recipes/postgres/Dockerfile).
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

# Files written into the root filesystem after debootstrap (path -> content).
SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# What debian:*-slim leaves out of every later install (docs, man pages), and apt's caches.
SLIM_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
"""
APT_CLEAN = 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'

BASE_RECIPE = {
    "format": 1,                         # bump when the steps below change meaning
    "debootstrap": {"options": ["--variant=minbase", "--components=main"], "suite": SUITE, "mirror": MIRROR},
    "files": {
        "etc/apt/sources.list.d/debian.sources": SOURCES,
        "etc/dpkg/dpkg.cfg.d/slim": SLIM_EXCLUDES,
        "etc/apt/apt.conf.d/clean": APT_CLEAN,
        "etc/apt/sources.list": None,    # None: removed (debootstrap's one-line list)
    },
    # what debootstrap already installed of the above: emptied (a package's copyright stays)
    "prune": ["usr/share/doc", "usr/share/man", "usr/share/groff", "usr/share/info", "usr/share/lintian",
              "usr/share/linda"],
    "changes": ['CMD ["bash"]'],
}


class AppImageError(RuntimeError):
    """A test image could not be built or pushed; the message says why and what to do."""


@dataclass(frozen=True)
class BuiltImage:
    """An image in the local engine: ``ref`` (repository:tag), its ID and recipe hash."""

    ref: str
    image_id: str
    recipe_hash: str
    built: bool                          # False: found in the engine (cached)
    seconds: float = 0.0


def base_hash() -> str:
    return hashlib.sha256(json.dumps(BASE_RECIPE, sort_keys=True).encode()).hexdigest()


def image_ref(name: str, recipe_hash: str) -> str:
    return f"{REPOSITORY}/{name}:{recipe_hash[:20]}"


def find_image(engine, ref: str, recipe_hash: str):
    """The engine's image ``ref`` when it carries ``recipe_hash``, else None."""
    import docker.errors
    try:
        image = engine.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    return image if (image.labels or {}).get(RECIPE_LABEL) == recipe_hash else None


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """One builder of ``name`` at a time on this host (parallel test workers wait, then reuse)."""
    path = Path(tempfile.gettempdir()) / f"labbuild-apps-{name}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_base(engine, log: Callable[[str], None] = lambda _: None) -> BuiltImage:
    """The base image, from the engine when this recipe was built before, else built now."""
    digest = base_hash()
    ref = image_ref("base", digest)
    with exclusive("base"):
        found = find_image(engine, ref, digest)
        if found is not None:
            return BuiltImage(ref, found.id, digest, built=False)
        start = time.monotonic()
        log(f"building {ref}: debootstrap {SUITE} (minbase) from {MIRROR}")
        image_id = _build_base(engine, ref, digest)
        return BuiltImage(ref, image_id, digest, built=True, seconds=time.monotonic() - start)


def _prune(root: Path) -> None:
    for rel in BASE_RECIPE["prune"]:
        for path in sorted((root / rel).rglob("*"), reverse=True):   # children before their directories
            if path.name == "copyright" and rel == "usr/share/doc":
                continue
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):                   # still holds a copyright
                    path.rmdir()
            else:
                path.unlink()
    for rel in ("var/lib/apt/lists", "var/cache/apt/archives", "var/log"):
        for child in (root / rel).glob("*"):
            if child.is_file():
                child.unlink()


def _build_base(engine, ref: str, digest: str) -> str:
    exe = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if exe is None:
        raise AppImageError("debootstrap is not installed: apt-get install debootstrap (scripts/bootstrap.sh does)")
    if os.geteuid() != 0:
        raise AppImageError("debootstrap needs root to make the base root filesystem")
    work = Path(tempfile.mkdtemp(prefix="labbuild-apps-base-", dir="/var/tmp"))
    try:
        root = work / "root"
        boot = BASE_RECIPE["debootstrap"]
        proc = subprocess.run([exe, *boot["options"], boot["suite"], str(root), boot["mirror"]],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise AppImageError(f"debootstrap failed (exit {proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        for rel, content in BASE_RECIPE["files"].items():
            path = root / rel
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        _prune(root)
        (root / "etc/machine-id").write_text("")
        tarball = work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-cf", str(tarball), "."], check=True)
        repository, tag = ref.rsplit(":", 1)
        changes = [*BASE_RECIPE["changes"], f"LABEL {RECIPE_LABEL}={digest}"]
        engine.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=changes)
        return engine.images.get(ref).id
    finally:
        shutil.rmtree(work, ignore_errors=True)
