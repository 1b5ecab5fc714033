"""Install, upgrade, roll back, inspect and remove a lab on a host.

An install directory ``DIR`` looks like this::

    DIR/releases/<version>/   one unpacked bundle per installed version (compose.yaml,
                              manifest.json, runbooks/, images/ metadata, ...), never
                              changed; image blobs are not kept: the engine holds them
    DIR/current  -> releases/<version>    the active release (symlink, switched atomically)
    DIR/previous -> releases/<version>    the release it replaced (for rollback)
    DIR/.env                  the generated secrets (mode 0600), kept across upgrades
    DIR/.labbuild.lock        serialises installs into the same DIR

``install_bundle`` reads the bundle once: it verifies every member (and the
signature) while streaming the host platform's image blobs into ``docker
load``, completing the load only when everything verified (else the engine
keeps nothing and DIR is not touched); then it checks each image ID against
the lock, adds missing secrets, switches ``current``, runs compose and waits
until every service is healthy. Installing a newer bundle into the same DIR
is an upgrade: volumes (same compose project, same volume names) and secrets
stay, compose recreates only the services whose definition changed.
``rollback`` swaps ``current`` and ``previous`` and brings that release up.

Every function returns data (``InstallResult``/``StatusResult``); the CLI
renders it. Failures a user must act on raise ``InstallError`` (or return a
result with ``ok=False`` when services are up but unhealthy, so the result
can still name each service's state).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets as _secrets
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .compose import Project, hint_for
from .errors import InstallError
from .fsutil import atomic_write
from .health import HealthResult, Probe, probe_once, wait_healthy

Say = Callable[[str], None]

ALPHABETS = {
    "token": string.ascii_letters + string.digits + "-_",
    "password": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
}
DEFAULT_TIMEOUT = 300.0
_ENV_LINE_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- secrets (pure)

def secret_specs(example: str) -> dict[str, tuple[str, int]]:
    """``{KEY: (kind, length)}`` from a bundle's secrets.env.example.

    Each ``KEY=`` line takes its kind and length from the comment lines just
    above it (``# svc: generate=token length=32``); token/32 when unsaid.
    """
    specs: dict[str, tuple[str, int]] = {}
    comment = ""
    for line in example.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment += " " + stripped
            continue
        m = _ENV_LINE_RE.match(line)
        if m:
            text = comment + " " + line
            kind = re.search(r"generate[ =:]*(token|password|hex)", text)
            length = re.search(r"length[ =:]*([0-9]+)", text)
            specs[m.group(1)] = (kind.group(1) if kind else "token", int(length.group(1)) if length else 32)
        comment = ""
    return specs


def generate_secret(kind: str, length: int) -> str:
    """A random value of ``kind`` (token | password | hex) and ``length`` characters."""
    alphabet = ALPHABETS.get(kind, ALPHABETS["token"])
    return "".join(_secrets.choice(alphabet) for _ in range(length))


def env_keys(text: str) -> set[str]:
    """Keys assigned in a .env file's text."""
    return {m.group(1) for line in text.splitlines() if (m := _ENV_LINE_RE.match(line))}


def merge_secrets(existing: str, wanted: dict[str, tuple[str, int]],
                  generate: Callable[[str, int], str] = generate_secret) -> tuple[str, list[str]]:
    """``existing`` .env text plus a generated line for every wanted key it lacks.

    Existing lines (values, comments, overrides) are kept verbatim. Returns
    the new text and the keys added (never the values).
    """
    have = env_keys(existing)
    added = [k for k in sorted(wanted) if k not in have]
    if not added:
        return existing, []
    text = existing if not existing or existing.endswith("\n") else existing + "\n"
    for key in added:
        text += f"{key}={generate(*wanted[key])}\n"
    return text, added


def write_secrets(install_dir: Path, release: Path) -> list[str]:
    """Add the release's missing secrets to ``DIR/.env`` (0600); return the keys added."""
    env_path = install_dir / ".env"
    existing = env_path.read_text("utf-8") if env_path.exists() else ""
    example = release / "secrets.env.example"
    wanted = secret_specs(example.read_text("utf-8")) if example.exists() else {}
    for key in _manifest_secret_keys(read_manifest(release)):
        wanted.setdefault(key, ("token", 32))
    text, added = merge_secrets(existing, wanted)
    if added or not env_path.exists():
        atomic_write(env_path, text, mode=0o600)
    else:
        os.chmod(env_path, 0o600)
    return added


def _manifest_secret_keys(manifest: dict) -> list[str]:
    return sorted({k for s in manifest.get("services", {}).values() for k in s.get("secrets") or ()})


# --------------------------------------------------------------------------- install dir state

def read_manifest(release: Path) -> dict:
    path = release / "manifest.json"
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InstallError(f"{path} is missing", hint="the release is incomplete; install the bundle again") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InstallError(f"{path}: not valid JSON ({exc})", hint="install the bundle again") from None


def _release_link(install_dir: Path, name: str) -> Path | None:
    link = install_dir / name
    if not link.is_symlink():
        return None
    target = (install_dir / os.readlink(link)).resolve()
    return target if target.is_dir() else None


def current_release(install_dir: Path) -> Path:
    """The active release directory of ``install_dir``; InstallError when there is none."""
    release = _release_link(Path(install_dir), "current")
    if release is None:
        raise InstallError(f"{install_dir} holds no installed lab ({install_dir}/current is missing)",
                           hint="pass the --dir you gave to `labbuild install`")
    return release


def _point(install_dir: Path, name: str, release: Path) -> None:
    """Atomically make ``DIR/name`` a relative symlink to ``release``."""
    tmp = install_dir / f".{name}.new"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.relpath(release, install_dir), tmp)
    os.replace(tmp, install_dir / name)


def activate(install_dir: Path, release: Path) -> Path | None:
    """Point ``current`` at ``release`` and ``previous`` at what was current; return that."""
    old = _release_link(install_dir, "current")
    if old is not None and old != release.resolve():
        _point(install_dir, "previous", old)
    _point(install_dir, "current", release)
    return old if old != release.resolve() else _release_link(install_dir, "previous")


@contextlib.contextmanager
def _dir_lock(install_dir: Path) -> Iterator[None]:
    install_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(install_dir / ".labbuild.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InstallError(f"another labbuild command is working on {install_dir}",
                               hint="wait for it to finish and try again") from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- docker edges

def docker_client():
    """A docker SDK client, or InstallError saying the engine does not answer."""
    import docker
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception as exc:  # docker.errors.DockerException and transport errors
        raise InstallError(f"the Docker engine does not answer ({type(exc).__name__}: {exc})",
                           hint="start it (systemctl start docker) and check that you may use it "
                                "(member of the docker group, or root)") from None


def _image_id(client, reference: str) -> str | None:
    import docker
    try:
        return client.images.get(reference).id
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise InstallError(f"cannot inspect image {reference}: {exc.explanation or exc}") from None


def check_image_ids(client, manifest: dict, platform: str, *, required: bool) -> dict[str, str]:
    """Every service's engine image ID must be its locked config digest for ``platform``.

    ``required`` (offline bundles): a missing image is an error too. Returns
    ``{service: image id}`` of what was checked.
    """
    from .images import expected_image_id
    checked: dict[str, str] = {}
    for svc, entry in sorted(manifest.get("services", {}).items()):
        ref = entry["image"]
        want = expected_image_id(entry.get("config_digests") or {}, platform)
        if want is None:
            if required:
                raise InstallError(f"{svc}: the lock has no {platform} image for {ref}",
                                   hint="this bundle cannot run on this host's platform")
            continue
        got = _image_id(client, ref)
        if got is None:
            if required:
                raise InstallError(f"{svc}: image {ref} is not in the engine",
                                   hint="the bundle's images/ lacks it: rebuild the bundle with --with-images")
            continue
        if got != want:
            raise InstallError(f"{svc}: image {ref} has ID {got} but the lock says {want}",
                               hint=f"another image holds this tag: `docker rmi {ref}`, then install again")
        checked[svc] = got
    return checked


def _containers(client, lab: str) -> dict[str, Any]:
    """service -> its (most recent) container of the lab's compose project."""
    out: dict[str, Any] = {}
    for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={lab}"}):
        svc = c.labels.get("com.docker.compose.service")
        if svc:
            out.setdefault(svc, c)
    return out


def _running(client, lab: str) -> list[str]:
    return sorted(s for s, c in _containers(client, lab).items() if c.status in ("running", "restarting"))


# --------------------------------------------------------------------------- results

@dataclass
class InstallResult:
    ok: bool
    dir: Path
    lab: str
    version: str
    release: Path
    previous: str | None = None
    started: bool = True
    loaded: list[str] = field(default_factory=list)
    secrets_added: list[str] = field(default_factory=list)
    services: dict[str, HealthResult] = field(default_factory=dict)
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "dir": str(self.dir), "lab": self.lab, "version": self.version,
                "release": str(self.release), "previous": self.previous, "started": self.started,
                "images_loaded": self.loaded, "secrets_added": self.secrets_added,
                "services": {s: r.state for s, r in sorted(self.services.items())},
                "details": {s: r.detail for s, r in sorted(self.services.items())},
                "error": self.failure}


# --------------------------------------------------------------------------- install

SMALL_FILE_LIMIT = 64 << 20


@dataclass
class _Unpacked:
    """What one pass over a bundle produced: its verified small files, the images it loaded."""

    staged: Path
    loaded: list[str]


def _unpack(bundle: Path, install_dir: Path, key, client, platform: str, say: Say) -> _Unpacked:
    """Verify ``bundle`` and load its images in ONE streaming pass; stage its other files.

    Every member is hashed and checked against manifest.json, SHA256SUMS and
    the signature (``check_contents``). Image blobs for ``platform`` are fed to
    ``docker load`` while they are hashed; the stream is completed only when
    the whole bundle verified, else aborted so the engine keeps nothing. The
    small files are held in memory and written (to a staging directory under
    DIR/releases/) only after verification; blobs are not kept on disk (the
    engine holds them). Nothing in DIR exists before the bundle verified.
    """
    import hashlib

    from .bundle import MANIFEST, SIGNATURE_NAME, SUMS, ScannedBundle, check_contents, walk_bundle
    from .errors import BundleError, Problem
    from .images import StreamingLoad, platform_file, tar_header

    if isinstance(key, (str, Path)):
        from .signing import load_public_key
        key = load_public_key(Path(key))
    scan = ScannedBundle()
    small: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    state: dict[str, Any] = {"plan": None, "load": None}
    wanted_manifest = f"images/docker-load/{platform_file(platform)}.json"

    def load_plan() -> set[str]:
        """At the first blob: which blobs the host platform needs (from the docker-load manifest)."""
        if state["plan"] is None:
            raw = small.get(wanted_manifest) or next(
                (small[n] for n in sorted(small) if n.startswith(wanted_manifest[:-5] + "_")), None) \
                or small.get("images/manifest.json")
            if raw is None:
                raise InstallError(f"{bundle.name} holds no images for {platform}",
                                   hint=f"build it with --with-images --platform {platform}")
            try:
                entries = json.loads(raw)
                state["tags"] = sorted(t for e in entries for t in e["RepoTags"])
                state["plan"] = {e["Config"] for e in entries} | {l for e in entries for l in e["Layers"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise InstallError(f"{bundle.name}: images/ has a malformed docker-load manifest ({exc})") from None
            state["load"] = StreamingLoad(client)
            state["load"].put(tar_header("manifest.json", len(raw)) + raw + b"\0" * (-len(raw) % 512))
            say(f"loading the images for {platform} into the engine while verifying")
        return state["plan"]

    def on_file(rel: str, member, tar) -> None:
        fh = tar.extractfile(member)
        h, size = hashlib.sha256(), 0
        if rel.startswith("images/blobs/"):
            inner = rel[len("images/"):]
            load = state["load"] if inner in load_plan() else None
            if load is not None:
                load.put(tar_header(inner, member.size))
            while block := fh.read(1 << 20):
                h.update(block)
                size += len(block)
                state["advance"](len(block))
                if load is not None:
                    load.put(block)
            if load is not None and size % 512:
                load.put(b"\0" * (512 - size % 512))
        else:
            if member.size > SMALL_FILE_LIMIT:
                scan.problems.append(Problem(file=rel, path="", message=f"{member.size} bytes: too big for a bundle file"))
                return
            data = fh.read()
            h.update(data)
            size = len(data)
            state["advance"](size)
            small[rel] = data
            modes[rel] = 0o755 if member.mode & 0o111 else 0o644
        scan.files[rel] = (h.hexdigest(), size)

    say(f"verifying {bundle.name}" + (" and its signature" if key else ""))
    from .images import progress_display
    try:
        with progress_display(None) as bars:
            task = bars.add_task(f"verifying {bundle.name}", total=bundle.stat().st_size)
            state["advance"] = lambda n: bars.advance(task, n)
            walk_bundle(bundle, scan, on_file)
        kept = {n: small[n] for n in (MANIFEST, SUMS, SIGNATURE_NAME) if n in small}
        problems, manifest, _signed, _checked = check_contents(scan.files, kept, top=scan.top, key=key)
        problems = scan.problems + problems
        if problems:
            raise BundleError(f"{bundle} failed verification: nothing was installed", problems=problems,
                              hint="do not install it; copy or rebuild the bundle")
    except BaseException as exc:
        if state["load"] is not None:
            state["load"].abort(exc if isinstance(exc, Exception) else InstallError("interrupted"))
        raise
    if state["load"] is not None:
        state["load"].finish()
    staging = install_dir / "releases" / f".incoming-{os.getpid()}-{_secrets.token_hex(4)}"
    for rel, data in sorted(small.items()):
        atomic_write(staging / rel, data, mode=modes[rel])
    return _Unpacked(staging, state.get("tags", []))


def _place(staged: Path, install_dir: Path, say: Say) -> Path:
    """Move a staged release to ``DIR/releases/<version>/`` (reusing an identical one)."""
    manifest = read_manifest(staged)
    version = str(manifest.get("version", ""))
    if not version or "/" in version or version.startswith("."):
        shutil.rmtree(staged, ignore_errors=True)
        raise InstallError(f"the bundle's manifest names no usable version ({version!r})")
    final = install_dir / "releases" / version
    if final.exists():
        same = _sums(final) == _sums(staged)
        shutil.rmtree(staged, ignore_errors=True)
        if not same:
            raise InstallError(f"{final} already holds a different release {version}",
                               hint="releases are immutable: build the new bundle with a new version")
        say(f"release {version} is already unpacked in {final}")
        return final
    os.replace(staged, final)
    return final


def _sums(release: Path) -> str | None:
    p = release / "SHA256SUMS"
    return p.read_text("utf-8") if p.exists() else None


def install_bundle(bundle: str | os.PathLike, install_dir: str | os.PathLike, *, key: str | os.PathLike | None = None,
                   start: bool = True, timeout: float = DEFAULT_TIMEOUT, say: Say = _quiet,
                   live: bool | None = None) -> InstallResult:
    """Install (or upgrade to) ``bundle`` in ``install_dir``; see the module docstring."""
    bundle, install_dir = Path(bundle), Path(install_dir).absolute()
    if not bundle.is_file():
        raise InstallError(f"{bundle}: no such bundle", hint="pass the path of a .tar.gz or .tar bundle")
    client = docker_client()
    from .images import host_platform
    platform = host_platform(client)
    unpacked = _unpack(bundle, install_dir, key, client, platform, say)
    try:
        with _dir_lock(install_dir):
            lab = read_manifest(unpacked.staged).get("lab")
            installed = _release_link(install_dir, "current")
            if installed is not None and (other := _safe_manifest(installed).get("lab")) not in (None, lab):
                raise InstallError(f"{install_dir} holds the lab {other!r}, this bundle is the lab {lab!r}",
                                   hint="install each lab into its own --dir")
            release = _place(unpacked.staged, install_dir, say)
            return _install_release(client, install_dir, release, start, timeout, say, live, platform,
                                    unpacked.loaded)
    finally:
        shutil.rmtree(unpacked.staged, ignore_errors=True)


def _install_release(client, install_dir: Path, release: Path, start: bool, timeout: float, say: Say,
                     live: bool | None, platform: str, loaded: list[str]) -> InstallResult:
    manifest = read_manifest(release)
    lab, version = manifest["lab"], str(manifest["version"])
    result = InstallResult(ok=False, dir=install_dir, lab=lab, version=version, release=release, started=start,
                           loaded=loaded)
    check_image_ids(client, manifest, platform, required=bool(manifest.get("offline")) or bool(loaded))
    result.secrets_added = write_secrets(install_dir, release)
    if result.secrets_added:
        say(f"generated {len(result.secrets_added)} secret(s) into {install_dir / '.env'}: "
            + ", ".join(result.secrets_added))
    previous = activate(install_dir, release)
    result.previous = previous.name if previous else None
    say(f"{lab} {version} is the current release in {install_dir}")
    if not start:
        result.ok = True
        return result
    return _bring_up(client, install_dir, release, manifest, result, platform, timeout, say, live)


def _bring_up(client, install_dir: Path, release: Path, manifest: dict, result: InstallResult, platform: str,
              timeout: float, say: Say, live: bool | None) -> InstallResult:
    """compose up, then the image-ID check of what runs, then health; fill ``result``."""
    lab = manifest["lab"]
    project = Project(name=lab, release=release, env_file=install_dir / ".env")
    say(f"starting {lab} {result.version}: docker compose -p {lab} up -d")
    try:
        proc = project.up(timeout=max(timeout, 120))
        # compose may exit 0 although a pull or a start failed: trust only what runs
        containers = _containers(client, lab)
        failed = [f"{svc}: no container" for svc in sorted(manifest.get("services", {})) if svc not in containers]
        failed += [f"{svc}: {c.status}" + (f" ({c.attrs['State']['Error']})" if c.attrs["State"].get("Error") else "")
                   for svc, c in sorted(containers.items())
                   if c.status in ("created", "dead") or (c.status == "exited" and c.attrs["State"].get("Error"))]
        if failed:
            detail = [l for l in (proc.stderr.strip() or proc.stdout.strip()).splitlines() if "Error" in l][-6:]
            raise InstallError("docker compose up failed:\n  " + "\n  ".join(failed + detail),
                               hint=hint_for(proc.stderr + " ".join(failed)))
    except InstallError as exc:
        running = _running(client, lab)
        left = (f"containers of {lab} running now: {', '.join(running)} (stop them: labbuild uninstall --dir {install_dir})"
                if running else f"no container of {lab} is running")
        raise InstallError(f"{exc.message}\n{left}", hint=exc.hint) from None
    _check_running_images(client, manifest, lab, platform)
    services = manifest.get("services", {})
    probes = {s: Probe.from_manifest(s, e.get("health")) for s, e in services.items()}
    depends = {s: e.get("depends_on") or [] for s, e in services.items()}

    def state(svc: str) -> str | None:
        c = _containers(client, lab).get(svc)
        if c is None:
            return "missing"
        return c.status

    result.services = wait_healthy(probes, depends, timeout, container_state=state, say=say, live=live)
    bad = [r for r in result.services.values() if r.state == "unhealthy"]
    result.ok = not bad
    if bad:
        r = bad[0]
        logs = project.logs(r.service, tail=20) or "(no log output)"
        runbook = release / (services[r.service].get("runbook") or f"runbooks/{r.service}.md")
        result.failure = (f"{r.service} is not healthy: {r.detail}\n"
                          f"last log lines of {r.service}:\n  " + "\n  ".join(logs.splitlines()[-20:]) +
                          f"\nrunbook: {runbook}\n"
                          f"{lab} {result.version} is installed but unhealthy; its containers are left running "
                          f"for inspection. Roll back: labbuild rollback --dir {install_dir}; "
                          f"remove: labbuild uninstall --dir {install_dir}")
    return result


def _check_running_images(client, manifest: dict, lab: str, platform: str) -> None:
    """Each running container's image ID must be the locked config digest."""
    from .images import expected_image_id
    containers = _containers(client, lab)
    for svc, entry in sorted(manifest.get("services", {}).items()):
        c = containers.get(svc)
        want = expected_image_id(entry.get("config_digests") or {}, platform)
        if c is None or want is None:
            continue
        got = c.attrs.get("Image")
        if got != want:
            raise InstallError(f"{svc}: the container runs image {got}, not the locked {want}",
                               hint=f"labbuild uninstall --dir DIR, `docker rmi {entry['image']}`, install again")


# --------------------------------------------------------------------------- rollback / status / uninstall

def rollback(install_dir: str | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT, start: bool = True,
             say: Say = _quiet, live: bool | None = None) -> InstallResult:
    """Make the previous release current again and bring it up (volumes and secrets kept)."""
    install_dir = Path(install_dir).absolute()
    current = current_release(install_dir)
    previous = _release_link(install_dir, "previous")
    if previous is None or previous == current:
        raise InstallError(f"{install_dir} has no previous release to roll back to",
                           hint="installed releases: " + ", ".join(sorted(p.name for p in (install_dir / "releases").iterdir()
                                                                         if p.is_dir() and not p.name.startswith("."))))
    client = docker_client()
    with _dir_lock(install_dir):
        manifest = read_manifest(previous)
        from .images import host_platform
        platform = host_platform(client)
        result = InstallResult(ok=False, dir=install_dir, lab=manifest["lab"], version=str(manifest["version"]),
                               release=previous, started=start)
        try:
            check_image_ids(client, manifest, platform, required=bool(manifest.get("offline")))
        except InstallError as exc:
            # releases keep no copy of the image blobs (the engine holds them)
            raise InstallError(f"cannot roll back to {result.version}: {exc.message}",
                               hint=f"its images are gone from the engine: install its bundle again "
                                    f"(labbuild install BUNDLE --dir {install_dir})") from None
        result.secrets_added = write_secrets(install_dir, previous)
        activate(install_dir, previous)
        result.previous = current.name
        say(f"rolled back {install_dir} from {current.name} to {previous.name}")
        if not start:
            result.ok = True
            return result
        return _bring_up(client, install_dir, previous, manifest, result, platform, timeout, say, live)


@dataclass
class ServiceStatus:
    service: str
    state: str              # running, exited, restarting, missing, ...
    health: str             # healthy | unhealthy | no-probe | not-running
    image: str
    image_id: str | None
    locked_id: str | None
    detail: str = ""

    @property
    def image_ok(self) -> bool:
        return self.locked_id is None or self.image_id == self.locked_id

    @property
    def ok(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "no-probe") and self.image_ok

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "health": self.health, "image": self.image, "image_id": self.image_id,
                "locked_id": self.locked_id, "image_matches_lock": self.image_ok, "detail": self.detail}


@dataclass
class StatusResult:
    dir: Path
    lab: str
    version: str
    previous: str | None
    services: dict[str, ServiceStatus]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.services.values())

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "dir": str(self.dir), "lab": self.lab, "version": self.version,
                "previous": self.previous,
                "services": {n: s.to_json() for n, s in sorted(self.services.items())}}


def status(install_dir: str | os.PathLike) -> StatusResult:
    """Every service of the current release: container state, one health probe, image ID vs lock."""
    from .images import expected_image_id, host_platform
    install_dir = Path(install_dir).absolute()
    release = current_release(install_dir)
    manifest = read_manifest(release)
    client = docker_client()
    platform = host_platform(client)
    containers = _containers(client, manifest["lab"])
    previous = _release_link(install_dir, "previous")
    out: dict[str, ServiceStatus] = {}
    for svc, entry in sorted(manifest.get("services", {}).items()):
        c = containers.get(svc)
        locked = expected_image_id(entry.get("config_digests") or {}, platform)
        state = c.status if c is not None else "missing"
        probe = Probe.from_manifest(svc, entry.get("health"))
        if state != "running":
            health, detail = "not-running", ""
        elif probe is None:
            health, detail = "no-probe", ""
        else:
            ok, detail = probe_once(probe)
            health = "healthy" if ok else "unhealthy"
        out[svc] = ServiceStatus(svc, state, health, entry["image"], c.attrs.get("Image") if c is not None else None,
                                 locked, detail)
    return StatusResult(install_dir, manifest["lab"], str(manifest["version"]),
                        previous.name if previous else None, out)


@dataclass
class UninstallResult:
    dir: Path
    lab: str
    volumes_removed: bool
    images_removed: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "dir": str(self.dir), "lab": self.lab, "volumes_removed": self.volumes_removed,
                "images_removed": self.images_removed}


def uninstall(install_dir: str | os.PathLike, *, volumes: bool = False, say: Say = _quiet) -> UninstallResult:
    """Stop and remove the lab's containers and networks (and volumes with ``volumes``),
    remove the images its bundles loaded, and the install directory's releases.

    ``DIR/.env`` (the secrets) is kept unless ``volumes``: the data in the
    volumes may need them.
    """
    import docker
    install_dir = Path(install_dir).absolute()
    release = current_release(install_dir)
    manifest = read_manifest(release)
    lab = manifest["lab"]
    client = docker_client()
    with _dir_lock(install_dir):
        project = Project(name=lab, release=release, env_file=install_dir / ".env")
        say(f"stopping {lab}: docker compose -p {lab} down" + (" -v" if volumes else ""))
        project.down(volumes=volumes)
        removed: list[str] = []
        releases = [p for p in (install_dir / "releases").iterdir() if p.is_dir() and not p.name.startswith(".")]
        manifests = [_safe_manifest(r) for r in releases]
        refs = sorted({e["image"] for m in manifests if m.get("offline")   # images this install loaded
                       for e in m.get("services", {}).values()})
        for ref in refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                try:
                    client.images.remove(ref)
                    removed.append(ref)
                except docker.errors.APIError as exc:  # still used by another container: keep it
                    say(f"kept image {ref}: {exc.explanation or exc}")
        for name in ("current", "previous"):
            with contextlib.suppress(FileNotFoundError):
                (install_dir / name).unlink()
        shutil.rmtree(install_dir / "releases", ignore_errors=True)
        if volumes:
            with contextlib.suppress(FileNotFoundError):
                (install_dir / ".env").unlink()
    with contextlib.suppress(OSError):
        (install_dir / ".labbuild.lock").unlink()
        install_dir.rmdir()
    return UninstallResult(install_dir, lab, volumes, removed)


def _safe_manifest(release: Path) -> dict:
    try:
        return read_manifest(release)
    except InstallError:
        return {}
