"""Frames that contradict their files are dropped by name, and every dropped frame is printed
in the run summary and listed in ``<out>.warnings.json``.

Before: a depth PNG of another size than the one its intrinsics were made for was used with
wrong correspondences, an 8-bit depth PNG gave "zero correspondences" without naming the file,
and dropped frames were only in the scene attrs.
"""

from __future__ import annotations

import json
import shutil
import warnings
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


SENS_STEP = 100  # the writer's frames per key frame = the reader's default .sens stride


@pytest.fixture(scope="module")
def sens_pristine(tmp_path_factory) -> Path:
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    root = tmp_path_factory.mktemp("scannet_sens")
    write_scannet_dataset(
        root,
        1,
        frames=("sens",),
        splits=["train"],
        image_size=(64, 48),
        views=3,
        frame_step=SENS_STEP,
        domain=Domain(spacing=0.08),
    )
    return root


def _sens_with_bad_poses(sens_pristine: Path, tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A copy whose second frame has a NaN in its pose (damage) and third an all -inf pose
    (ScanNet's lost track, skipped quietly), and the frame names of the pristine .sens."""
    from tttkd.pipeline.datasets.scannet_sens import read_sens_index

    names = [f.name for f in scannet.load_scene(sens_pristine, SCENE, frames="sens").frames]
    assert len(names) == 3
    root = tmp_path / "scannet"
    shutil.copytree(sens_pristine, root)
    sens = root / "scans" / SCENE / f"{SCENE}.sens"
    idx = read_sens_index(sens)
    header = 16 * 4 + 4 * 8  # a frame's header: 4x4 float32 pose, 4 uint64; then its colour
    with open(sens, "r+b") as f:
        f.seek(int(idx.color_offset[int(names[1])]) - header)
        f.write(np.float32(np.nan).tobytes())
        f.seek(int(idx.color_offset[int(names[2])]) - header)
        f.write(np.full(16, -np.inf, np.float32).tobytes())
    return root, sens, names


def test_a_sens_frame_with_a_nan_pose_is_dropped_by_name(sens_pristine, tmp_path):
    root, sens, names = _sens_with_bad_poses(sens_pristine, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = scannet.load_scene(root, SCENE, frames="sens")
    assert [f.name for f in scene.frames] == names[:1]
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "NaN" in message and str(sens) in message and names[1] in message, message
    assert names[2] not in message  # a lost track is ScanNet's data, not damage
    assert caught[0].filename == __file__  # the line that called load_scene


def test_a_dropped_sens_frame_is_in_the_summary_and_the_report(
    sens_pristine, tmp_path, tiny_prep_options
):
    from click.testing import CliRunner

    from tttkd.cli.prep import cli

    root, sens, names = _sens_with_bad_poses(sens_pristine, tmp_path)
    out = tmp_path / "feats.zarr"
    options = list(tiny_prep_options)
    options[options.index("--frames") + 1] = "sens"
    args = ["scannet", "--root", root, "--cache", out, *options]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    report = json.loads(Path(f"{out}.warnings.json").read_text())["scenes"][SCENE]
    lines = [w for w in report if "dropped" in w and str(sens) in w]
    assert len(lines) == 1 and names[1] in lines[0], report
    assert f"WARNING {SCENE}: {lines[0]}" in r.output


def test_a_nan_pose_warning_names_the_line_that_called_load_scene(root):
    frames = scannet.load_scene(root, SCENE, frames="25k").frames
    colour = Path(frames[-1].color.path)
    pose = colour.parent.parent / "pose" / f"{colour.stem}.txt"
    pose.write_text("nan nan nan nan\n" * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scannet.load_scene(root, SCENE, frames="25k")
    hits = [w for w in caught if str(pose) in str(w.message)]
    assert len(hits) == 1 and hits[0].filename == __file__, [
        (w.filename, w.message) for w in caught
    ]
