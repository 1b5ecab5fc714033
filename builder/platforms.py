"""Platforms (``os/arch[/variant]``): how the lock, the bundle and the engine name them.

Shared by the build side (which platforms of an image to ship) and the
install side (which image ID the host's engine must hold), so both match a
platform the same way.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def platform_file(platform: str) -> str:
    """``linux/arm64/v8`` -> ``linux_arm64_v8``: a platform as a file stem."""
    return platform.replace("/", "_")


def match_platform(wanted: str, available: Iterable[str]) -> str | None:
    """The locked platform key for ``wanted`` (``linux/arm64`` also matches ``linux/arm64/v8``)."""
    available = sorted(available)
    if wanted in available:
        return wanted
    return next((p for p in available if p.startswith(wanted + "/")), None)


def expected_image_id(config_digests: Mapping[str, str], platform: str) -> str | None:
    """The locked config digest (= image ID after load) for ``platform``, or None."""
    key = match_platform(platform, config_digests)
    return config_digests.get(key) if key else None
