"""Shared bits of the benchmarks: where labbuild is, and timing a command."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def labbuild_exe() -> str:
    """The labbuild console script of the venv running this benchmark."""
    beside = Path(sys.executable).with_name("labbuild")
    return str(beside) if beside.exists() else (shutil.which("labbuild") or "labbuild")


def time_command(argv: list[str], *, runs: int = 1, env: dict | None = None,
                 cwd: str | Path | None = None, check: bool = True) -> list[float]:
    """Wall-clock seconds of each of ``runs`` executions of ``argv``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env={**os.environ, **(env or {})}, cwd=cwd)
        times.append(time.perf_counter() - start)
        if check and proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    return times


def report(name: str, seconds: float, target: float, unit: str = "s") -> bool:
    ok = seconds <= target
    print(f"{name:<48} {seconds:8.3f} {unit}   target <= {target:g} {unit}   {'OK' if ok else 'MISSED'}")
    return ok


def median(values: list[float]) -> float:
    return statistics.median(values)
