"""The package installs as tttkd.* and lists every folder that holds a package."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _declared() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def test_every_package_folder_is_declared() -> None:
    packages, package_dir = _declared()
    found = set()
    for top_pkg, folder in package_dir.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([top_pkg, *rel.parts]) if rel.parts else top_pkg)
    assert found == set(packages), (
        f"pyproject packages list is out of date: {found ^ set(packages)}"
    )


def test_subpackages_import_from_the_mapped_folders() -> None:
    _, package_dir = _declared()
    for name, folder in package_dir.items():
        mod = importlib.import_module(name)
        assert Path(mod.__file__).resolve().parent == (REPO / folder).resolve()


def _modules() -> list[tuple[str, Path]]:
    """``(dotted name, file)`` of every module of every mapped package folder."""
    _, package_dir = _declared()
    out = []
    for top, folder in package_dir.items():
        root = REPO / folder
        for py in sorted(root.rglob("*.py")):
            parts = [p for p in py.relative_to(root).with_suffix("").parts if p != "__init__"]
            out.append((".".join([top, *parts]), py))
    return out


def test_every_module_imports_from_its_folder() -> None:
    """Each real module (not only the one-line ``__init__``s) imports as ``tttkd.*`` from the
    file in this checkout: a broken import or a stale installed copy fails here."""
    modules = _modules()
    assert len(modules) > 50 and "tttkd.adapt.runner" in dict(modules)
    for name, path in modules:
        mod = importlib.import_module(name)
        assert Path(mod.__file__).resolve() == path.resolve(), name


def test_import_is_light() -> None:
    """Importing every module of the library (in a fresh interpreter) pulls in no optional
    heavy backend: they load only when a backend or teacher is asked for."""
    names = [name for name, _ in _modules()]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(m for m in ('spconv', 'MinkowskiEngine', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at package import: {out.stdout.strip()}"


def test_console_scripts_declared_and_runnable(monkeypatch) -> None:
    """Every command the README documents is declared and its entry point answers --help."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"tttkd-prep", "tttkd-train", "tttkd-adapt", "tttkd-synth"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit) as exit_info:
            entry()
        assert exit_info.value.code == 0, name
