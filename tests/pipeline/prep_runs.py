"""What the end-to-end prep tests share (tests/pipeline/test_run_*.py): the synthetic rooms'
size, the scenes the serial reference holds, and how two caches are compared.

Import as ``from tests.pipeline.prep_runs import ...``; the fixtures that build the rooms and
the serial reference cache are in ``tests/pipeline/conftest.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tttkd.pipeline.cache import Cache, CacheError

N_SCENES = 8
FIRST4 = tuple(f"scene{i:04d}_00" for i in range(4))


def contents(url: Path) -> dict:
    """Every complete scene's arrays and attributes, minus run stamps and timings."""
    cache = Cache.open(str(url), read_only=True)
    out = {}
    for sid in cache.scene_ids():
        rec = cache.read_scene(sid)
        info = dict(rec.attrs)
        info.pop("run"), info.pop("timing_s")
        arrays = {k: v for k, v in vars(rec).items() if isinstance(v, np.ndarray)}
        out[sid] = (arrays, info, rec.image_names, rec.split)
    return out


def assert_same_contents(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and a
    for sid in a:
        (arr_a, info_a, names_a, split_a), (arr_b, info_b, names_b, split_b) = a[sid], b[sid]
        assert info_a == info_b and names_a == names_b and split_a == split_b
        assert sorted(arr_a) == sorted(arr_b)
        for k in arr_a:
            np.testing.assert_array_equal(arr_a[k], arr_b[k], err_msg=f"{sid} {k}")


def complete(url: Path) -> list[str]:
    """The cache's complete scenes (none while it does not exist yet)."""
    try:
        return Cache.open(str(url), read_only=True).scene_ids()
    except CacheError:
        return []


def prep_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    """``tttkd-prep scannet`` with the tiny teacher, as a command line."""
    return [
        sys.executable, "-m", "tttkd.cli.prep", "scannet", "--root", str(root), "--cache",
        str(out), "--teacher", "test_vit_tiny", "--image-size", "28", "--frames", "25k",
        "--no-progress", *extra,
    ]  # fmt: skip
