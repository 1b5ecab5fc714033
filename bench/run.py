"""Run every benchmark in bench/ (one command: `make bench`) and summarise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    names = sys.argv[1:] or sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run")
    failed = []
    for name in names:
        print(f"\n== bench/{name}.py", flush=True)
        if subprocess.run([sys.executable, str(HERE / f"{name}.py")], cwd=HERE).returncode != 0:
            failed.append(name)
    print("\nall targets met" if not failed else f"\ntargets missed or errors in: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
