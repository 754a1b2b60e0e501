"""Shared by the tests/reliability prep tests: a small synthetic ScanNet root and
``tttkd-prep scannet`` with the tiny test teacher.

``root`` is a fresh copy, per test, of a one-scene root written once per module; a module
that wants more scenes, or one root for all its tests, defines its own ``root`` from
``write_scannet``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

TINY = ("--teacher", "test_vit_tiny", "--image-size", "28", "--frames", "25k", "--no-progress")


@pytest.fixture(scope="session")
def tiny_prep_options() -> tuple[str, ...]:
    """The ``tttkd-prep`` options of every prep here: tiny teacher, 28 px, 25k frames."""
    return TINY


@pytest.fixture(scope="session")
def write_scannet(tmp_path_factory) -> Callable[[str, list[str]], Path]:
    """``write_scannet(name, splits)``: a new synthetic ScanNet root, one scene per split
    (25k frames, 64x48 images, 2 views a scene, 0.08 m point spacing)."""
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    def write(name: str, splits: list[str]) -> Path:
        root = tmp_path_factory.mktemp(name)
        write_scannet_dataset(
            root,
            len(splits),
            frames=("25k",),
            splits=splits,
            image_size=(64, 48),
            views=2,
            domain=Domain(spacing=0.08),
        )
        return root

    return write


@pytest.fixture(scope="module")
def pristine(write_scannet) -> Path:
    return write_scannet("scannet_one", ["train"])


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    out = tmp_path / "scannet"
    shutil.copytree(pristine, out)
    return out


@pytest.fixture(scope="session")
def prep(tiny_prep_options):
    """``prep(root, out, *options)``: ``tttkd-prep scannet`` in this process (click's
    CliRunner, exceptions caught), with ``tiny_prep_options`` appended."""
    from click.testing import CliRunner

    from tttkd.cli.prep import cli

    def run(root: object, out: object, *options: object):
        args = ["scannet", "--root", root, "--cache", out, *options, *tiny_prep_options]
        return CliRunner().invoke(cli, [str(a) for a in args])

    return run
