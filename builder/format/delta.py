"""What a delta bundle carries and what it relies on, counted: for progress lines and summaries."""

from __future__ import annotations

from dataclasses import dataclass

from .manifest import Manifest


@dataclass(frozen=True)
class DeltaSummary:
    """Carried vs relied-on blobs of a delta bundle (counts and bytes), for progress and summaries."""

    base: str                   # the base's version
    base_bundle: str
    carried: int
    carried_bytes: int
    relied: int
    relied_bytes: int
    images: tuple[str, ...]     # "reference (platform)" of every base image relied on

    def to_json(self) -> dict[str, object]:
        return {"base": self.base, "base_bundle": self.base_bundle, "carried_blobs": self.carried,
                "carried_bytes": self.carried_bytes, "relied_blobs": self.relied,
                "relied_bytes": self.relied_bytes, "relied_images": list(self.images)}

    def render(self) -> str:
        return (f"delta since {self.base}: carries {self.carried} blob(s), {_size(self.carried_bytes)}; "
                f"relies on {self.relied} blob(s), {_size(self.relied_bytes)} of {self.base_bundle} "
                f"({len(self.images)} base image(s) that must be in the engine)")


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def delta_summary(manifest: Manifest) -> DeltaSummary:
    """The carried/relied summary of a delta bundle's manifest."""
    since = manifest.since
    carried = manifest.carried_blobs
    return DeltaSummary(base=since.version, base_bundle=since.bundle, carried=len(carried),
                        carried_bytes=sum(carried.values()), relied=len(since.blobs),
                        relied_bytes=sum(since.blobs.values()),
                        images=tuple(f"{i.reference} ({i.platform})" for i in since.images))

