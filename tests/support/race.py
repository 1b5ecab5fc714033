"""Two real `labbuild` processes racing, made deterministic.

The first is paused at a seam — a module function it calls once it is past its
look for the release record (``"builder.bundle.pack:write_tar"``) — until the
second either waits for a flock (the kernel lists it in ``/proc/locks``) or
ends. With a lock around the look and the writing, the second is always
waiting there when the first goes on; without one, it has already looked (and
written) by then. No sleep decides the outcome: each step waits for the last.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

RUN = textwrap.dedent("""
    import importlib, sys, time
    from pathlib import Path
    from builder.cli import main
    seam, at, go = sys.argv[1:4]
    if seam:
        module, name = seam.split(":")
        module = importlib.import_module(module)
        real = getattr(module, name)
        def paused(*args, **kw):
            Path(at).touch()
            while not Path(go).exists():
                time.sleep(0.01)
            return real(*args, **kw)
        setattr(module, name, paused)
    sys.exit(main(sys.argv[4:]))
""")


def blocked_on_a_lock(pid: int) -> bool:
    """Whether the kernel lists ``pid`` as waiting for a flock (``/proc/locks``: ``N: -> FLOCK ... PID``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1:3] == ["->", "FLOCK"] and fields[5] == str(pid):
            return True
    return False


def race(first: list[str], second: list[str], *, seam: str, tmp: Path,
         timeout: float = 120) -> list[tuple[int, str, str]]:
    """Run ``labbuild *first`` until it reaches ``seam`` ("module:function"), then ``labbuild
    *second`` until it waits for a lock or ends, then let the first go on. Returns
    ``(exit code, stdout, stderr)`` of each, first then second."""
    at, go = tmp / "race-at-seam", tmp / "race-go"

    def start(seam_: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", RUN, seam_, str(at), str(go), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [start(seam, first)]
    try:
        deadline = time.monotonic() + timeout
        while not at.exists():
            assert procs[0].poll() is None, ("the first release ended before the seam", procs[0].communicate())
            assert time.monotonic() < deadline, "the first release never reached the seam"
            time.sleep(0.01)
        procs.append(start("", second))
        while procs[1].poll() is None and not blocked_on_a_lock(procs[1].pid):
            assert time.monotonic() < deadline, "the second release neither waited for a lock nor ended"
            time.sleep(0.01)
        go.touch()
        return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
