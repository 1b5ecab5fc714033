"""The shape of the package: the install side (host, install, backups, operate) imports
nothing of the build side, the ground floor (format and the top-level helpers) imports
neither side, the packages of builder/ import each other without a cycle, no module is
over 500 lines, one module builds tar headers, one knows the model formats, one touches
the Docker SDK's private attributes, and modules import at the top (except the documented
lazy imports of the CLI's command modules, which keep `labbuild --version` fast)."""

from __future__ import annotations

import ast
import json
import re
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


INSTALL_SIDE = ("builder.host", "builder.install", "builder.backups", "builder.operate")


def test_the_install_side_imports_nothing_of_the_build_side():
    loaded = _imported_by(*[m for p in INSTALL_SIDE for m in _modules(p)], "builder.commands.install",
                          "builder.commands.backup")
    assert not [m for m in loaded if m.startswith(BUILD_SIDE)], sorted(loaded)


@pytest.mark.parametrize("module", ["builder.bundle.verify", "builder.bundle.reader", *_modules("builder.format"),
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


# --------------------------------------------------------------------------- the house's shape

def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def _package_of(module: str) -> str:
    """``builder.install.apply`` -> ``install``; top-level modules are their own node (``builder.lock`` -> ``lock``)."""
    return module.split(".")[1]


def _package_graph() -> dict[str, set[str]]:
    """Package -> the packages its modules import (relative imports resolved)."""
    graph: dict[str, set[str]] = {}
    for rel, text in _sources().items():
        module = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        is_pkg = rel.endswith("__init__.py")
        here = module.split(".") if is_pkg else module.split(".")[:-1]
        src = _package_of(module) if "." in module else module
        for node in ast.walk(ast.parse(text)):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here[:len(here) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if base == "builder" else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target.startswith("builder.") and target.count(".") >= 1:
                    dst = _package_of(target)
                    if dst != src and dst not in ("__init__",):
                        graph.setdefault(src, set()).add(dst)
    return graph


def test_the_package_graph_of_builder_has_no_cycle():
    graph = _package_graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            assert (cycle := visit(node)) is None, " -> ".join(cycle)
    # the floors: format stands on nothing above the ground, and the format is below bundle and render
    assert graph.get("format", set()) <= {"errors", "fsutil", "names", "limits", "platforms", "typecheck"}
    assert "bundle" not in graph.get("render", set())


def test_no_module_of_builder_is_over_500_lines():
    long = {rel: text.count("\n") for rel, text in _sources().items() if text.count("\n") > 500}
    assert long == {}


def test_one_module_knows_the_model_formats():
    literal = re.compile(r"""["']ollama["']""")
    holders = [rel for rel, text in _sources().items() if literal.search(text)]
    assert holders == ["builder/format/models.py"]


def test_one_module_builds_tar_headers():
    """A header is built by calling ``TarInfo(...)`` or ``.tobuf(...)``; reading tars (a TarInfo
    subclass that parses) is not building them."""
    def builds(text: str) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))
                   and (n.func.id if isinstance(n.func, ast.Name) else n.func.attr) in ("TarInfo", "tobuf")
                   for n in ast.walk(ast.parse(text)))
    assert [rel for rel, text in _sources().items() if builds(text)] == ["builder/format/tar.py"]


def test_only_the_engine_module_uses_private_attributes_of_the_docker_sdk():
    """``client.api._url`` and the like: outside ``host/engine.py`` no attribute starting with an
    underscore is read off anything but ``self``/``cls`` (labbuild's own objects read their own)."""
    found = []
    for rel, text in _sources().items():
        if rel == "builder/host/engine.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and ast.unparse(node.value).split(".")[0] in ("client", "api", "docker", "container", "self.client"):
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_the_schema_enum_of_model_formats_is_the_formats_table():
    from builder.blueprint.schema import blueprint_schema
    from builder.format.models import MODEL_FORMATS

    enums = [node["format"]["enum"] for node in _walk(blueprint_schema())
             if isinstance(node, dict) and isinstance(node.get("format"), dict) and "enum" in node["format"]]
    assert enums and all(sorted(e) == sorted(MODEL_FORMATS) for e in enums)


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


def test_the_engine_sends_request_bodies_in_one_mib_blocks():
    """The one process-wide library setting (docker-py's unix-socket connection blocksize) takes
    effect for connections the SDK builds after ``docker_client``'s first call."""
    from docker.transport.unixconn import UnixHTTPConnection

    from builder.host import engine

    engine._send_bodies_in_big_blocks()
    engine._send_bodies_in_big_blocks()            # idempotent: wrapped once
    conn = UnixHTTPConnection("http+docker://localhost", "/nonexistent.sock")
    assert conn.blocksize == engine.BODY_BLOCK


def test_a_wheel_of_labbuild_holds_every_package_and_its_data(tmp_path):
    """A non-editable install must hold every package of builder/ (the rooms moved; a fixed
    package list in pyproject.toml missed the new ones) and the schema and templates."""
    import zipfile
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(PACKAGE.parent)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("labbuild-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("__init__.py"))
    assert [p for p in packages if f"{p}/__init__.py" not in names] == []
    assert "builder/schemas/blueprint.schema.json" in names and "builder/templates/install.sh" in names
