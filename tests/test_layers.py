"""The shape of the package: install/ imports nothing of the build side, the ground
floor imports neither side, and modules import at the top (except the documented lazy
imports of the CLI's command modules, which keep `labbuild --version` fast)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "builder"
BUILD_SIDE = ("builder.blueprint", "builder.lock", "builder.lockfile", "builder.registry", "builder.blobcache",
              "builder.render", "builder.scaffold", "builder.bundle.pack", "builder.bundle.release",
              "builder.bundle.record", "builder.bundle.fetch", "builder.bundle.archive")


def _imported_by(*modules: str) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('builder'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _modules(package: str) -> list[str]:
    base = PACKAGE / package.removeprefix("builder.").replace(".", "/")
    return sorted(f"{package}.{p.stem}" for p in base.glob("*.py") if p.stem != "__init__")


def test_the_install_side_imports_nothing_of_the_build_side():
    loaded = _imported_by(*_modules("builder.install"), "builder.commands.install")
    assert not [m for m in loaded if m.startswith(BUILD_SIDE)], sorted(loaded)


@pytest.mark.parametrize("module", ["builder.bundle.verify", "builder.bundle.reader", "builder.bundle.layout",
                                    "builder.platforms", "builder.progress", "builder.fsutil", "builder.errors"])
def test_the_read_side_and_the_ground_floor_import_nothing_of_the_build_side(module):
    loaded = _imported_by(module)
    assert not [m for m in loaded if m.startswith(BUILD_SIDE)], sorted(loaded)


def test_version_imports_no_command_module():
    code = "import sys; from builder.cli import main; main(['--version']); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "builder.commands" not in out and "rich" not in out and "docker" not in out


def _documented_lazy(lines: list[str], lineno: int) -> bool:
    """An import inside a function is allowed when the comment block right above it starts ``# Lazy:``."""
    above = lineno - 2
    while above >= 0 and lines[above].strip().startswith("#"):
        if lines[above].strip().startswith("# Lazy:"):
            return True
        above -= 1
    return False


def test_modules_import_at_the_top():
    """Imports inside functions hide the real graph; only the CLI's command modules may defer
    theirs, and a module may keep an expensive one lazy when a ``# Lazy:`` comment says why."""
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "commands":
            continue
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [f"{path.relative_to(PACKAGE.parent)}:{sub.lineno}" for sub in ast.walk(node)
                           if isinstance(sub, (ast.Import, ast.ImportFrom))
                           and not _documented_lazy(lines, sub.lineno)]
    assert hidden == []
