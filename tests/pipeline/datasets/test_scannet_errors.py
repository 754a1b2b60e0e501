"""ScanNet v2 bad input: one clear DatasetError naming the file and the scene; no writes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttkd.core import DatasetError, scale_intrinsics
from tttkd.pipeline.datasets import scannet
from tttkd.pipeline.datasets.scannet_frames import REAL_COLOR_SIZE, calibration_size, read_matrix
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.scannet_writer import write_scannet_dataset

SID = "scene0000_00"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scannet_src")
    write_scannet_dataset(
        root,
        2,
        seed=5,
        domain=Domain(spacing=0.12),
        splits=["train", "test"],
        views=2,
        frame_step=2,
        image_size=(64, 48),
    )
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(pristine, tmp_path / "scannet"))


def _scan(root: Path, name: str) -> Path:
    return root / "scans" / SID / name.format(sid=SID)


def _raises(fn, *needles: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        fn()
    msg = str(info.value)
    for n in needles:
        assert n in msg, f"{n!r} not in error message:\n{msg}"
    assert "fix:" in msg
    return info.value


def _load(root: Path, **kw):
    return scannet.load_scene(root, SID, **kw)


def test_missing_mesh(root) -> None:
    _scan(root, "{sid}_vh_clean_2.ply").unlink()
    _raises(lambda: _load(root), SID, "_vh_clean_2.ply", "missing")


def test_truncated_mesh(root) -> None:
    ply = _scan(root, "{sid}_vh_clean_2.ply")
    data = ply.read_bytes()
    ply.write_bytes(data[: data.index(b"end_header") + 2000])
    _raises(lambda: _load(root), SID, "_vh_clean_2.ply", "truncated")


def test_not_a_ply(root) -> None:
    _scan(root, "{sid}_vh_clean_2.ply").write_text("<html>404 Not Found</html>\n")
    _raises(lambda: _load(root), SID, "_vh_clean_2.ply", "not a PLY")


def test_ply_without_colour_properties(root) -> None:
    ply = _scan(root, "{sid}_vh_clean_2.ply")
    ply.write_bytes(ply.read_bytes().replace(b"property uchar red\n", b"property uchar rouge\n"))
    _raises(lambda: _load(root), SID, "_vh_clean_2.ply", "red")


def test_tsv_without_needed_columns(root) -> None:
    tsv = root / "scannetv2-labels.combined.tsv"
    tsv.write_bytes(tsv.read_bytes().replace(b"\traw_category\t", b"\trawcat\t", 1))
    _raises(lambda: _load(root), SID, "scannetv2-labels.combined.tsv", "raw_category")


def test_missing_tsv_names_where_it_looked(root) -> None:
    (root / "scannetv2-labels.combined.tsv").unlink()
    _raises(lambda: _load(root), SID, "scannetv2-labels.combined.tsv", str(root / "tasks"))


def test_unknown_scene_id(root) -> None:
    _raises(lambda: scannet.load_scene(root, "scene9999_00"), "scene9999_00", "unknown scene")
    _raises(lambda: scannet.load_scene(root, "office_1"), "office_1", "scene0000_00")


def test_segs_length_differs_from_vertex_count(root) -> None:
    segs = _scan(root, "{sid}_vh_clean_2.0.010000.segs.json")
    d = json.loads(segs.read_text())
    d["segIndices"] = d["segIndices"][:-5]
    segs.write_text(json.dumps(d))
    _raises(lambda: _load(root), SID, "segs.json", "vertices")


def test_missing_or_corrupt_aggregation(root) -> None:
    agg = _scan(root, "{sid}.aggregation.json")
    agg.write_text('{"sceneId": "scannet.scene0000_00", "segGroups": [')
    _raises(lambda: _load(root), SID, "aggregation.json", "JSON")
    agg.unlink()
    _raises(lambda: _load(root), SID, "aggregation.json", "missing")


def test_unknown_raw_category_is_ignored_not_guessed(root) -> None:
    before = _load(root, frames=None)
    agg = _scan(root, "{sid}.aggregation.json")
    d = json.loads(agg.read_text())
    d["segGroups"][0]["label"] = "no such category"  # the floor
    agg.write_text(json.dumps(d))
    after = _load(root, frames=None)
    floor = before.label == 1
    assert floor.any() and (after.label[floor] == -1).all()
    np.testing.assert_array_equal(after.label[~floor], before.label[~floor])


def test_image_size_contradicting_intrinsics(root) -> None:
    img = root / "scannet_frames_25k" / SID / "color" / "000000.jpg"
    Image.new("RGB", (48, 48)).save(img)
    _raises(lambda: _load(root, frames="25k"), SID, "000000.jpg", "48x48")
    # a later frame of another size fails when it is read, naming its file
    shutil.copy(img.with_name("000004.jpg"), img)  # a good first frame again
    Image.new("RGB", (48, 48)).save(img.with_name("000004.jpg"))
    frames = _load(root, frames="25k").frames
    assert [f.name for f in frames] == ["000000", "000004"]
    _raises(frames[-1].load_color, "000004.jpg", SID)


def test_truncated_and_foreign_sens(root) -> None:
    sens = _scan(root, "{sid}.sens")
    data = sens.read_bytes()
    sens.write_bytes(data[: len(data) // 2])
    _raises(lambda: _load(root, frames="sens"), SID, ".sens", "truncated")
    sens.write_bytes(b"\x03\x00\x00\x00" + data[4:])
    _raises(lambda: _load(root, frames="sens"), SID, ".sens", "version")


def test_bad_pose_file(root) -> None:
    pose = root / "scannet_frames_25k" / SID / "pose" / "000004.txt"
    pose.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    _raises(lambda: _load(root, frames="25k"), SID, "000004.txt", "16 numbers")


def test_missing_frame_source(root) -> None:
    shutil.rmtree(root / "scannet_frames_25k")
    _raises(lambda: _load(root, frames="25k"), SID, "scannet_frames_25k", "frames_root")
    (root / "scans" / SID / f"{SID}.sens").unlink()
    _raises(lambda: _load(root, frames="sens"), SID, ".sens")


def test_align_on_a_test_scan(root) -> None:
    _raises(
        lambda: scannet.load_scene(root, "scene0707_00", align=True, frames=None),
        "scene0707_00",
        "axisAlignment",
    )


def test_missing_split_file_names_where_it_looked(root) -> None:
    (root / "scannetv2_val.txt").unlink()
    _raises(
        lambda: scannet.list_scenes(root, "val"),
        "scannetv2_val.txt",
        str(root / "Tasks" / "Benchmark"),
    )
    with pytest.raises(DatasetError, match="unknown split"):
        scannet.list_scenes(root, "training")


def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_reading_never_modifies_the_dataset(root) -> None:
    before = _tree_digest(root)
    dirs_before = sorted(str(p) for p in root.rglob("*") if p.is_dir())
    for sid in scannet.list_scenes(root):
        for frames in ("auto", "exported", "sens"):
            align = sid == SID
            s = scannet.load_scene(root, sid, frames=frames, frame_stride=2, align=align)
            for f in s.frames:
                f.load_color(), f.load_depth()
    s = scannet.load_scene(root, SID, frames="25k")
    [(f.load_color(), f.load_depth()) for f in s.frames]
    assert _tree_digest(root) == before
    assert sorted(str(p) for p in root.rglob("*") if p.is_dir()) == dirs_before


def test_calibration_size_without_the_scene_txt(root) -> None:
    (root / "scans" / SID / f"{SID}.txt").unlink()
    _raises(lambda: _load(root, frames="25k"), SID, "intrinsics_color.txt", "color_calib_size")
    frames = _load(root, frames="25k", color_calib_size=(64, 48)).frames
    np.testing.assert_allclose(frames[0].K, scale_intrinsics(_K_64x48(root), 64, 48, 32, 24))
    # real ScanNet numbers: cx ~ 648 identifies the 1296x968 sensor behind a 640x480 image
    K = np.array([[1170.19, 0, 647.75], [0, 1170.19, 483.75], [0, 0, 1]])
    for stored in ((640, 480), (1296, 968)):
        calib = calibration_size(K, stored, None, REAL_COLOR_SIZE, file="k", scene="s")
        assert calib == (1296, 968)


def _K_64x48(root: Path) -> np.ndarray:
    return read_matrix(root / "scans" / SID / "intrinsic" / "intrinsic_color.txt", SID)[:3, :3]
