"""Operator-supplied inputs: secrets only a third party can issue, and the optional
services that wait for them.

A bundle's manifest lists per service its ``supplied`` secrets (``[{"key",
"description"}]``, keys of the install's ``DIR/.env``; never generated) and
whether the service is ``optional`` in its profile.

- ``check_supplied`` runs before install touches anything (no image load, no
  file in DIR, no compose): when a supplied secret of a service that is not
  optional is missing from ``DIR/.env`` (or empty), it stops at once naming
  the key, the file and where to get the value.
- An optional service is installed (its image loaded, it is in compose.yaml
  under a compose profile of its own name) but started only once all its
  supplied secrets exist: ``startable_optional`` names the compose profiles
  install enables; ``waiting_optional`` says what each of the others needs
  (``status`` and ``check`` show it as ``not started: needs KEY``). Running
  install again after adding the key starts it.

Reading the manifest from an archive before verification (``peek_manifest``)
is only used to stop early; the verified manifest is checked again after
unpacking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..bundle import reader
from ..errors import BundleError, InstallError
from ..format.manifest import Manifest
from ..host.dotenv import filled_keys, read_env
from ..host.labdir import ENV_FILE


@dataclass(frozen=True)
class MissingInput:
    service: str
    key: str
    description: str


def missing_inputs(manifest: Manifest, env_text: str) -> list[MissingInput]:
    """Every supplied secret of every service that ``env_text`` lacks, sorted by service and key."""
    have = filled_keys(env_text)
    return [MissingInput(name, s.key, s.description)
            for name, svc in sorted(manifest.services.items())
            for s in sorted(svc.supplied, key=lambda x: x.key) if s.key not in have]


def check_supplied(manifest: Manifest, install_dir: Path) -> None:
    """Raise InstallError naming each supplied secret a non-optional service lacks in ``DIR/.env``."""
    env_file = install_dir / ENV_FILE
    missing = [m for m in missing_inputs(manifest, read_env(install_dir))
               if not manifest.services[m.service].optional]
    if not missing:
        return
    lines = [f"{m.key} (for {m.service})" + (f": {m.description}" if m.description else "") for m in missing]
    keys = " and ".join(m.key for m in missing)
    raise InstallError(
        f"{len(missing)} operator-supplied secret(s) missing from {env_file}; nothing was installed:\n  "
        + "\n  ".join(lines),
        hint=f"add {keys} to {env_file} as KEY=value lines (create the file with mode 0600 if needed); "
             "install never generates them. Then run install again.")


def waiting_optional(manifest: Manifest, env_text: str) -> dict[str, list[str]]:
    """``{service: [missing keys]}`` for each optional service that cannot start yet."""
    out: dict[str, list[str]] = {}
    for m in missing_inputs(manifest, env_text):
        if manifest.services[m.service].optional:
            out.setdefault(m.service, []).append(m.key)
    return out


def startable_optional(manifest: Manifest, env_text: str) -> list[str]:
    """Optional services whose supplied secrets all exist: the compose profiles to enable."""
    waiting = waiting_optional(manifest, env_text)
    return sorted(n for n, s in manifest.services.items() if s.optional and n not in waiting)


def not_started_detail(keys: list[str]) -> str:
    """``needs KEY[, KEY]``: why an optional service is not started."""
    return "needs " + ", ".join(keys)


def peek_manifest(bundle: Path) -> Manifest | None:
    """The (not yet verified) manifest.json of a bundle archive, read without reading
    the image blobs (a plain tar is read by seeking); None when it cannot be read —
    verification then reports why."""
    try:
        return reader.peek_manifest(bundle)
    except (BundleError, OSError):
        return None  # damage is for verification to report, with its reasons


__all__ = ["MissingInput", "check_supplied", "missing_inputs",
           "not_started_detail", "peek_manifest", "startable_optional", "waiting_optional"]
