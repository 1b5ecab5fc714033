"""Build a recipe into the engine (or find it built), and push it to a registry.

``ensure_image`` builds ``recipes/<name>/`` with ``docker build`` (the engine's
classic builder, through the Docker SDK) FROM the base image; the build context is
the recipe's directory, plus ``recipes/common/`` as ``common/`` for the recipes
that assemble a busybox root filesystem. Apt runs inside the build against
Debian's mirror; recipes that download from npm or PyPI also get the host's CA
bundle (``host_ca_bundle``: this machine's egress may present its own CA). The
image is tagged ``labbuild-apps/<name>:<hash>`` and labelled with the full recipe
hash: the next run finds it and builds nothing.

``push_image`` tags it ``HOST:PORT/labbuild-apps/<name>:<hash>``, pushes it (a
loopback registry speaks plain HTTP to the engine), drops that extra tag again and
returns ``HOST:PORT/labbuild-apps/<name>:<hash>@sha256:...``; given the registry's storage
directory (the tests' own registries), it pushes each image once and links that result into the
next registry's storage instead.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import ssl
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from .base import RECIPE_LABEL, AppImageError, BuiltImage, ensure_base, exclusive, find_image, image_ref
from .recipe import RECIPES, Recipe, file_mode

BUILD_TIMEOUT = 3600      # seconds the engine may stay silent during one build step


def ensure_image(engine, recipe: Recipe, base: BuiltImage, log: Callable[[str], None] = lambda _: None) -> BuiltImage:
    """``recipe``'s image, from the engine when this recipe (and base) was built before, else built now."""
    digest = recipe.hash(base.recipe_hash)
    ref = image_ref(recipe.name, digest)
    with exclusive(recipe.name):
        found = find_image(engine, ref, digest)
        if found is not None:
            return BuiltImage(ref, found.id, digest, built=False)
        log(f"building {ref} from {recipe.directory} (FROM {base.ref})")
        start = time.monotonic()
        image_id = _build(engine, recipe, base, ref, digest, log)
        return BuiltImage(ref, image_id, digest, built=True, seconds=time.monotonic() - start)


def recipe_image(engine, name: str, log: Callable[[str], None] = lambda _: None) -> BuiltImage:
    """The image of the recipe named ``name`` on the base image: found built, else built now."""
    (recipe,) = [r for r in RECIPES if r.name == name]
    return ensure_image(engine, recipe, ensure_base(engine, log), log)


def host_ca_bundle() -> Path:
    """The CA bundle the host's clients trust ($SSL_CERT_FILE, else OpenSSL's default file)."""
    path = Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile).resolve()
    if not path.is_file():
        raise AppImageError(f"no CA bundle at {path} for a build that downloads from npm or PyPI (set SSL_CERT_FILE)")
    return path


def _context(recipe: Recipe) -> io.BytesIO:
    """The build context as a tar (``Recipe.context_files``, and ``host/ca-certificates.crt`` for a
    recipe with ``registries``), modes as git keeps them, owned by root."""
    files = recipe.context_files() + ([("host/ca-certificates.crt", host_ca_bundle())] if recipe.registries else [])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in files:
            info = tar.gettarinfo(path, arcname=name)
            info.mode, info.uid, info.gid, info.uname, info.gname = file_mode(path), 0, 0, "", ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    buf.seek(0)
    return buf


def _build(engine, recipe: Recipe, base: BuiltImage, ref: str, digest: str, log: Callable[[str], None]) -> str:
    import docker
    if not (recipe.directory / "Dockerfile").is_file():
        raise AppImageError(f"{recipe.directory}/Dockerfile is missing")
    client = docker.from_env(timeout=BUILD_TIMEOUT)    # the same engine, with patience for long steps
    api = client.api
    tail: list[str] = []
    try:
        for chunk in api.build(fileobj=_context(recipe), custom_context=True, tag=ref, rm=True, forcerm=True,
                               pull=False, buildargs={"BASE": base.ref}, labels={RECIPE_LABEL: digest},
                               decode=True):
            if "error" in chunk:
                raise AppImageError(f"docker build of {recipe.name} failed: {chunk['error'].strip()}\n"
                                    + "".join(tail[-30:]))
            text = chunk.get("stream", "")
            if text:
                tail.append(text)
                if text.startswith("Step "):
                    log(f"  {recipe.name}: {text.strip()[:160]}")
    finally:
        client.close()
    found = find_image(engine, ref, digest)
    if found is None:
        raise AppImageError(f"docker build of {recipe.name} ended without an image {ref}:\n" + "".join(tail[-30:]))
    return found.id


PUSHED = Path(os.environ.get("LABBUILD_APPS_PUSHED", Path.home() / ".cache" / "labbuild-tests" / "pushed"))
V2 = Path("docker/registry/v2")          # the Distribution registry's filesystem layout, under its root


def _blob(root: Path, digest: str) -> Path:
    algo, hexa = digest.split(":", 1)
    return root / "blobs" / algo / hexa[:2] / hexa / "data"


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` to the same path under ``dst`` (copied across devices)."""
    for path in src.rglob("*"):
        if path.is_dir():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)


def _keep_pushed(storage: Path, repository: str, digest: str, entry: Path) -> None:
    """Save what one push wrote into a registry's storage -- the repository's links, the manifest,
    config and layer blobs -- as ``entry`` (hard links), so the next registry gets it without a push."""
    v2 = storage / V2
    manifest = json.loads(_blob(v2, digest).read_bytes())
    blobs = [digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _link_tree(v2 / "repositories" / repository, tmp / "v2" / "repositories" / repository)
    for d in blobs:
        target = _blob(tmp / "v2", d)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(_blob(v2, d), target)
    (tmp / "digest").write_text(digest)
    for old in entry.parent.glob(entry.name.rsplit("-", 1)[0] + "-*"):   # earlier builds of this recipe
        if old != entry and ".tmp-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(entry)
    except OSError:                     # another worker kept it first
        shutil.rmtree(tmp, ignore_errors=True)


def push_image(engine, built: BuiltImage, registry: str, storage: Path | None = None) -> str:
    """Push ``built`` to ``registry`` (HOST:PORT); its reference ``HOST:PORT/repo:tag@sha256:...``.

    ``storage``: the root directory of that registry's filesystem storage (a test's own registry).
    Then the push is done once per image: its result is kept under ``PUSHED`` and hard-linked into
    the next registry's storage, which serves it like a push (Distribution reads its storage on each
    request) -- ``docker push`` compresses every layer again each time, minutes for the larger apps."""
    local_repo, tag = built.ref.rsplit(":", 1)
    repository = f"{registry}/{local_repo}"
    entry = PUSHED / f"{local_repo.rsplit('/', 1)[-1]}-{built.image_id.split(':')[-1][:32]}"
    if storage is not None and (entry / "digest").is_file():
        _link_tree(entry / "v2", storage / V2)
        return f"{repository}:{tag}@{(entry / 'digest').read_text()}"
    engine.api.tag(built.image_id, repository, tag)
    digest = None
    try:
        for chunk in engine.api.push(repository, tag, stream=True, decode=True):
            if "error" in chunk:
                raise AppImageError(f"push of {repository}:{tag} failed: {chunk['error']}")
            digest = (chunk.get("aux") or {}).get("Digest") or digest
    finally:
        engine.api.remove_image(f"{repository}:{tag}", noprune=True)   # the cache tag keeps the image
    if not digest:
        raise AppImageError(f"push of {repository}:{tag} reported no digest")
    if storage is not None:
        PUSHED.mkdir(parents=True, exist_ok=True)
        _keep_pushed(storage, local_repo, digest, entry)
    return f"{repository}:{tag}@{digest}"
