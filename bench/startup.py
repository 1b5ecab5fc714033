"""`labbuild --version` start time: nothing heavy may be imported on that path.

Target: <= 150 ms on the reference machine (2 cores). Also prints which
heavy modules (docker, httpx, cookiecutter, jsonschema, rich, yaml) the
--version path imports: there must be none.
"""

from __future__ import annotations

import subprocess
import sys

from _common import labbuild_exe, median, report, time_command

HEAVY = ("docker", "httpx", "cookiecutter", "jsonschema", "rich", "yaml", "cryptography", "tomlkit")


def main() -> int:
    exe = labbuild_exe()
    time_command([exe, "--version"], runs=3)  # warm the page cache
    times = time_command([exe, "--version"], runs=20)
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from builder.cli import main; main(['--version']);"
         f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"],
        capture_output=True, text=True)
    heavy = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ""
    print(f"heavy modules imported by --version: {heavy or 'none'}")
    python_only = median(time_command([sys.executable, "-c", "pass"], runs=10))
    print(f"bare python start for comparison: {python_only * 1000:.0f} ms "
          f"(labbuild = {median(times) / python_only:.2f}x bare python)")
    ok = report("labbuild --version (median of 20)", median(times) * 1000, 150, "ms")
    return 0 if ok and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
