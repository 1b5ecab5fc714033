"""Bundles in directories the maintainer names (``release --reuse-from DIR``): their blobs join
the index of ``located``, so a release copies them instead of downloading them.

``located`` notes the bundles this labbuild wrote. A bundle copied from CI or from another
maintainer's ``dist/`` is not among them, so each regular ``*.tar`` directly in DIR (an
image bundle is an uncompressed ``.tar``; a ``.tar.gz`` carries no images) is indexed
here, unless the index already holds that file unchanged:

1. verified exactly as ``labbuild verify`` does without ``--key``
   (``verify.read_verified``: every member hashed against SHA256SUMS and
   manifest.json, every blob's bytes hashed to the digest its name says, unsafe
   members refused). No signature is asked for: a blob is found by its
   digest and its bytes hashed to it, so who made the bundle does not matter
   for what a release takes from it;
2. its blobs' places (``reader.BlobRanges``: one header scan of the tar) are noted with the file's
   stamp taken before the read, and only when the stamp after the read is the
   same (a file written to while it was read is not noted).

From then on the rule of ``located`` holds: trusted while unchanged, not hashed again. A
bundle that fails is skipped with a warning naming it and never noted; its blobs are
downloaded. Anything else in DIR (other files, directories) is ignored.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, Iterable

from ..errors import BundleError
from ..progress import progress_display
from ..format.files import IMAGE_SHA256_BLOBS
from .located import noted, remember, stamp_of
from .reader import BlobRanges
from .verify import read_verified

def bundles_in(directory: Path) -> list[Path]:
    """The candidate image bundles in ``directory``: its regular ``*.tar`` files, by name."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise BundleError(f"{directory}: cannot list it ({exc.strerror})",
                          hint="--reuse-from takes a readable directory holding image bundles") from None
    return [p for p in entries if p.name.endswith(".tar") and not p.name.startswith(".") and p.is_file()]


def index_directories(directories: Iterable[Path], progress: Any = None) -> tuple[int, list[str]]:
    """Index every bundle of ``directories`` not yet noted unchanged; ``(bundles now noted, warnings)``.
    ``progress``: a bar a bundle verified (None: when stderr is a terminal)."""
    count, warnings = 0, []
    for directory in directories:
        for path in bundles_in(Path(directory)):
            if noted(path):
                count += 1
                continue
            with progress_display(None if progress is None else bool(progress)) as bars:
                task = bars.add_task(f"verifying {path.name} to reuse it", total=_size(path))
                why = _index(path, lambda n: bars.advance(task, n))
            if why is None:
                count += 1
            else:
                warnings.append(f"{path}: not reused ({why}); its blobs are downloaded")
    return count, warnings


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None     # gone: _index says so


def _index(path: Path, on_bytes) -> str | None:
    """Verify ``path`` and note its blobs; the reason it was not noted, or None."""
    try:
        before = stamp_of(os.stat(path))
        result = read_verified(path, on_bytes=on_bytes)
        if not result.ok:
            first = result.errors[0]
            return (f"it fails verification: {first.file}: {first.message}"
                    + (f" and {len(result.errors) - 1} more problem(s)" if len(result.errors) > 1 else ""))
        blobs = {rel: sha for rel, (sha, _) in result.files.items() if rel.startswith(IMAGE_SHA256_BLOBS)}
        ranges = BlobRanges(path)
        ranges.close()
        verified = {"sha256:" + sha for sha in blobs.values()}
        places = {d: where for d, where in ranges.ranges.items() if d in verified}
        if stamp_of(os.stat(path)) != before:
            return "it changed while it was read"
    except BundleError as exc:
        return exc.message
    except (OSError, tarfile.TarError, EOFError) as exc:
        return f"cannot read it: {exc}"
    if not places:
        return "it holds no image blobs"
    remember(path, places, stamp=before)
    return None

