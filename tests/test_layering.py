"""The packages depend on each other in one direction only:
``common <- cache <- extractor <- heads <- quality <- finetune <- inference <- cli``.

Each package is imported in a fresh interpreter, together with every module in it, and none of
the packages above it may appear in ``sys.modules`` afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

LAYERS = ["common", "cache", "extractor", "heads", "quality", "finetune", "inference", "cli"]


def _modules_of(package: str) -> list[str]:
    return sorted(_module_name(p) for p in (REPO / package).rglob("*.py"))


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(("tlx", *(parts[:-1] if parts[-1] == "__init__" else parts)))


@pytest.mark.parametrize("level", range(len(LAYERS)))
def test_a_package_never_imports_the_ones_above_it(level):
    package, above = LAYERS[level], LAYERS[level + 1 :]
    modules = [f"tlx.{package}", *_modules_of(package)]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[1] for m in sys.modules "
        "if m.startswith('tlx.') and m.count('.') >= 1})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(above), f"tlx.{package} imports {sorted(loaded & set(above))}, which sit above it"


def test_every_package_is_in_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages == set(LAYERS)


def _tlx_imports(path) -> set[str]:
    """The tlx packages a module names in any import statement, at the top or inside a function
    (relative imports resolved against the module's own package)."""
    import ast

    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            names = [
                ".".join([*base, node.module]) if node.module else ".".join(base) + "." + a.name for a in node.names
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("tlx.") and n.count(".") >= 1}
    return found


@pytest.mark.parametrize("level", range(len(LAYERS)))
def test_no_import_anywhere_in_a_package_points_up(level):
    package, above = LAYERS[level], set(LAYERS[level + 1 :])
    upward = {f"{p.name} imports tlx.{q}" for p in (REPO / package).rglob("*.py") for q in _tlx_imports(p) & above}
    assert not upward, f"tlx.{package}: {sorted(upward)}"
