"""Image names as the registry API sees them, and how to reach a registry.

``parse_image_name`` normalises a repository the way Docker does (Docker Hub
aliases, ``library/``); ``registry_scheme`` decides plain HTTP (loopback and
explicitly insecure registries) or HTTPS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import RegistryError

DOCKER_HUB = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class ImageName:
    """A repository as the registry API sees it: which host, which repository path."""

    registry: str       # host[:port] contacted, e.g. "registry-1.docker.io", "127.0.0.1:5000"
    repository: str     # e.g. "library/postgres"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


def parse_image_name(name: str) -> ImageName:
    """Normalise a repository name as Docker does.

    ``postgres`` and ``docker.io/postgres`` -> ``registry-1.docker.io/library/postgres``;
    the first component is a registry host when it has a ``.`` or ``:`` or is
    ``localhost``.
    """
    if not name or "@" in name or name != name.strip():
        raise RegistryError(f"{name!r} is not an image name", image=name,
                            hint="expected e.g. docker.io/qdrant/qdrant")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, path = first, rest
    else:
        host, path = "docker.io", name
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return ImageName(registry=host, repository=path)


def _host_only(registry: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """True for registries on this host: 127.0.0.0/8, ``localhost``, ``[::1]``."""
    host = _host_only(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_scheme(registry: str, insecure_registries: tuple[str, ...] | list[str] = ()) -> str:
    """``http`` for loopback and explicitly insecure registries, else ``https``."""
    insecure = {normalise_registry(r) for r in insecure_registries}
    if is_loopback(registry) or registry in insecure or _host_only(registry) in insecure:
        return "http"
    return "https"


def normalise_registry(key: str) -> str:
    """A registry as written in config.json or lab.toml -> the host[:port] contacted."""
    key = key.strip()
    key = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]
    return DOCKER_HUB if key in _HUB_ALIASES else key

