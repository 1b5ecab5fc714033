"""The one progress display of a labbuild run (rich bars on stderr, only on a terminal).

rich allows a single live display at a time, so everyone who shows
progress at once shares it: the download bars of a release and its packing
bar, or the verify bar of an install. ``progress_display`` is the context
manager for a block; ``acquire``/``release`` serve work that outlives a
block (background downloads end when their last blob is fetched).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

_shared: dict[str, Any] = {"bars": None, "users": 0}
_lock = threading.Lock()


def _new(enabled: bool | None) -> Progress:
    console = Console(stderr=True)
    show = console.is_terminal if enabled is None else (enabled and console.is_terminal)
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                    disable=not show, transient=False)


def acquire(enabled: bool | None) -> Progress:
    """The shared display (started on first use). ``enabled``: None = when stderr is a TTY."""
    with _lock:
        if _shared["bars"] is None:
            _shared["bars"] = _new(enabled)
            _shared["bars"].start()
        _shared["users"] += 1
        return _shared["bars"]


def release() -> None:
    """Done with the display; it stops when its last user is done."""
    with _lock:
        _shared["users"] -= 1
        if _shared["users"] == 0 and _shared["bars"] is not None:
            _shared["bars"].stop()
            _shared["bars"] = None


@contextlib.contextmanager
def progress_display(enabled: bool | None) -> Iterator[Progress]:
    """A rich Progress (bytes, rate, ETA) for the block, disabled when stderr is not a TTY."""
    bars = acquire(enabled)
    try:
        yield bars
    finally:
        release()
