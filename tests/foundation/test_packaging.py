"""The package installs as tttkd.* and lists every folder that holds a package."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

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


def test_import_is_light() -> None:
    """Importing the library (in a fresh interpreter) pulls in no optional heavy backend."""
    code = (
        "import sys, tttkd.pipeline, tttkd.model, tttkd.adapt, tttkd.cli\n"
        "print(','.join(m for m in ('spconv', 'MinkowskiEngine', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at package import: {out.stdout.strip()}"


def test_console_scripts_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"tttkd-prep", "tttkd-train", "tttkd-adapt"} <= set(scripts)
