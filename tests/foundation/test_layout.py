"""The layout's import rules (docs/design.md, "Who may import whom") hold in the code.

Subpackages with one public face (``tttkd.core``, ``tttkd.pipeline.cache``,
``tttkd.pipeline.teacher``) are imported through their ``__init__`` by every library module
outside them; ``tttkd.core`` imports nothing else of the project; prep never imports the 3D
network or adaptation; the model never imports adaptation; no library module imports ``cli``.
Tests and benchmarks may reach inside (they test and measure the internals).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = ("core", "pipeline", "model", "adapt", "tttkd")  # folders of library code
FACADES = {
    "tttkd.core": "core",
    "tttkd.pipeline.cache": "pipeline/cache",
    "tttkd.pipeline.teacher": "pipeline/teacher",
}
FORBIDDEN = {  # folder -> project packages it must never import
    "core": ("tttkd.pipeline", "tttkd.model", "tttkd.adapt", "tttkd.cli", "tttkd.synthetic"),
    "pipeline": ("tttkd.model", "tttkd.adapt", "tttkd.cli"),
    "model": ("tttkd.adapt", "tttkd.cli"),
    "adapt": ("tttkd.cli",),
    "tttkd": ("tttkd.cli",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, including function-local ones."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return found


def _library_files() -> list[Path]:
    return sorted(p for top in LIBRARY for p in (REPO / top).rglob("*.py"))


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def facade_violations(files: list[Path], root: Path = REPO) -> list[str]:
    """Imports of a facade package's internal modules from outside that package."""
    bad = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        for line, module in _imports(path):
            for facade, folder in FACADES.items():
                inside = rel.startswith(folder + "/")
                if module.startswith(facade + ".") and not inside:
                    bad.append(f"{rel}:{line} imports {module} (use {facade})")
    return bad


def direction_violations(files: list[Path], root: Path = REPO) -> list[str]:
    """Imports against the data flow's direction (FORBIDDEN)."""
    bad = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        top = rel.split("/")[0]
        for line, module in _imports(path):
            for banned in FORBIDDEN.get(top, ()):
                if _under(module, banned):
                    bad.append(f"{rel}:{line} imports {module}")
    return bad


def test_facade_packages_are_imported_through_their_init() -> None:
    assert facade_violations(_library_files()) == []


def test_imports_follow_the_data_flow() -> None:
    assert direction_violations(_library_files()) == []


@pytest.mark.parametrize(
    ("source", "expect"),
    [
        ("from tttkd.pipeline.cache.store import Cache\n", "facade"),
        ("from tttkd.core.scene import Scene\n", "facade"),
        ("def f():\n    from tttkd.adapt.runner import run\n", "direction"),
        ("from tttkd.pipeline.cache import Cache\nfrom tttkd.core import Scene\n", None),
    ],
)
def test_the_checks_catch_a_violation(tmp_path: Path, source: str, expect: str | None) -> None:
    """Each rule fails on a module that breaks it (so the two tests above can fail)."""
    fake = tmp_path / "pipeline" / "probe.py"
    fake.parent.mkdir()
    fake.write_text(source)
    facade, direction = facade_violations([fake], tmp_path), direction_violations([fake], tmp_path)
    assert bool(facade) == (expect == "facade")
    assert bool(direction) == (expect == "direction")
