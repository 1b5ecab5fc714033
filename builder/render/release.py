"""A release's coordinates: what every renderer reads, and the names it gives.

``ReleaseInput`` bundles the lab, the lock, the profile and the version
(the archive's names come from ``builder.format.files``);
``volume_name`` a service's named volume, ``secret_keys`` its install-time
secrets in ``DIR/.env``, ``supplied_keys`` the ones the operator puts there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..blueprint import Blueprint, Lab, secret_env_key
from ..format.files import bundle_filename, bundle_top
from ..lockfile import Lock
from .door import door_of
from .door_blueprints import door_blueprints


@dataclass(frozen=True)
class ReleaseInput:
    """Everything a bundle's text depends on: the lab, the lock, and where it goes."""

    lab: Lab
    lock: Lock
    profile: str
    version: str
    labbuild_version: str
    offline: bool = False

    @cached_property
    def services(self) -> tuple[str, ...]:
        """The profile's closure, sorted."""
        return tuple(self.lab.profile_closure(self.profile))

    @cached_property
    def optional(self) -> tuple[str, ...]:
        """Services optional in the profile: installed, started only once their supplied secrets exist."""
        return self.lab.optional_services(self.profile)

    @cached_property
    def door(self):
        """The release's front door (``render.door.Door``), or None when the profile has no provider."""
        return door_of(self.lab, self.profile)

    @cached_property
    def door_blueprints(self) -> dict[str, Blueprint]:
        """The blueprints the front door changes in this release ({} when it is off; ``render.door``)."""
        return door_blueprints(self.lab, self.profile)

    def blueprint(self, name: str) -> Blueprint:
        """``name``'s blueprint as this release renders it (with the front door's changes when it is on)."""
        return self.door_blueprints.get(name) or self.lab.services[name]

    @cached_property
    def embedding_models(self) -> dict[str, str]:
        """``{service: Ollama name}`` of the first ``role = "embedding"`` model each service of
        the closure ships — only in offline (image) bundles, the only ones that carry models.
        Drives ``[when.X.embedding]`` wiring."""
        if not self.offline:
            return {}
        found = {}
        for name in self.services:
            model = next((m for m in self.blueprint(name).models if m.role == "embedding"), None)
            if model is not None:
                found[name] = model.served_name
        return found

    @property
    def top(self) -> str:
        """The bundle's top directory: ``<lab>-<profile>-<version>``."""
        return bundle_top(self.lab.name, self.profile, self.version)

    @property
    def filename(self) -> str:
        return bundle_filename(self.lab.name, self.profile, self.version, self.offline)

    def compose_command(self, args: str = "up -d", install_dir: str = "<DIR>") -> str:
        """The one way compose runs an installed lab: plain ``docker compose`` in the install dir,
        whose compose.yaml (written by install) names the project, the release and both env files."""
        return f"cd {install_dir} && docker compose {args}"


def volume_name(service: str, name: str) -> str:
    """The named volume ``<service>_<name>`` (compose prefixes it with the project name)."""
    return f"{service}_{name}"


def secret_keys(ri: ReleaseInput, name: str) -> list[str]:
    """The ``DIR/.env`` keys of service ``name``'s generated secrets (install writes them)."""
    return [secret_env_key(name, s.name) for s in ri.blueprint(name).secrets if not s.supplied]


def supplied_keys(ri: ReleaseInput, name: str) -> list[tuple[str, str]]:
    """``(DIR/.env key, description)`` of service ``name``'s operator-supplied secrets."""
    return [(secret_env_key(name, s.name), s.description) for s in ri.blueprint(name).supplied_secrets]

