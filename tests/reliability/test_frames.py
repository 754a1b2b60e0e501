"""Frames that contradict their files are dropped by name, and every dropped frame is printed
in the run summary and listed in ``<out>.warnings.json``.

Before: a depth PNG of another size than the one its intrinsics were made for was used with
wrong correspondences, an 8-bit depth PNG gave "zero correspondences" without naming the file,
and dropped frames were only in the scene attrs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttkd.core import DatasetError
from tttkd.pipeline.cache import Cache
from tttkd.pipeline.datasets import scannet

SCENE = "scene0000_00"


def _last_valid_depth(root: Path) -> Path:
    frames = scannet.load_scene(root, SCENE, frames="25k").frames
    valid = [f for f in frames if np.isfinite(f.c2w).all()]
    assert len(valid) >= 2
    return Path(valid[-1].depth.path)


def _write(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


@pytest.mark.parametrize("damage", ["other_size", "eight_bit"])
def test_a_contradicting_depth_png_is_dropped_by_name(root, tmp_path, prep, damage):
    depth = _last_valid_depth(root)
    h, w = np.asarray(Image.open(depth)).shape
    if damage == "other_size":
        _write(depth, np.full((h, w // 2), 2000, np.uint16))
        reason = f"{w // 2}x{h}"
    else:
        _write(depth, np.full((h, w), 200, np.uint8))
        reason = "8-bit"
    frame = next(f for f in scannet.load_scene(root, SCENE, frames="25k").frames
                 if f.depth.path == str(depth))  # fmt: skip
    with pytest.raises(DatasetError) as e:
        frame.load_depth()
    assert str(depth) in str(e.value) and reason in str(e.value), str(e.value)

    out = tmp_path / "feats.zarr"
    r = prep(root, out)
    assert r.exit_code == 0, r.output
    dropped = dict(
        Cache.open(str(out), read_only=True).scene_info(SCENE)["info"]["frames"]["dropped"]
    )
    assert str(depth) in dropped[frame.name] and reason in dropped[frame.name]
    report = json.loads(Path(f"{out}.warnings.json").read_text())["scenes"][SCENE]
    lines = [w for w in report if "frames dropped" in w]
    assert len(lines) == 1 and str(depth) in lines[0] and frame.name in lines[0]
    assert f"WARNING {SCENE}: {lines[0]}" in r.output


@pytest.mark.parametrize("damage", ["corrupt_colour", "non_finite_pose"])
def test_a_dropped_frame_of_any_cause_is_in_the_summary_and_the_report(
    root, tmp_path, prep, damage
):
    frames = scannet.load_scene(root, SCENE, frames="25k").frames
    frame = [f for f in frames if np.isfinite(f.c2w).all()][-1]  # the first sets the image size
    colour = Path(frame.color.path)
    if damage == "corrupt_colour":
        colour.write_bytes(colour.read_bytes()[:40])  # a JPEG cut short
        named = str(colour)
    else:
        pose = colour.parent.parent / "pose" / f"{colour.stem}.txt"
        pose.write_text("nan nan nan nan\n" * 4)  # damage, not ScanNet's -inf of a lost track
        named = str(pose)
    out = tmp_path / "feats.zarr"
    r = prep(root, out)
    assert r.exit_code == 0, r.output
    report = json.loads(Path(f"{out}.warnings.json").read_text())["scenes"][SCENE]
    lines = [w for w in report if "dropped" in w and named in w]
    assert len(lines) == 1, report
    assert f"WARNING {SCENE}: {lines[0]}" in r.output
