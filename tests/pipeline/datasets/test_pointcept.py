"""Pointcept processed layout: written by the synthetic writer, read back exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import DatasetError
from tttkd.pipeline.datasets import pointcept as pc
from tttkd.synthetic.domain import TARGET
from tttkd.synthetic.pointcept_writer import write_pointcept_dataset


def test_scannet_layout_round_trip(tmp_path: Path) -> None:
    truth = write_pointcept_dataset(tmp_path, 2, split="val", spacing=0.1, seed=1)
    folder = tmp_path / "val" / "scene0000_00"
    assert sorted(p.name for p in folder.iterdir()) == [
        "color.npy", "coord.npy", "instance.npy", "normal.npy", "segment20.npy"]  # fmt: skip
    assert np.load(folder / "segment20.npy").dtype == np.int64  # as Pointcept writes it
    assert pc.list_scenes(tmp_path) == pc.list_scenes(tmp_path, "val") == list(truth.scenes)
    for sid, t in truth.scenes.items():
        scene = pc.load_scene(tmp_path, sid)  # segment20.npy implies scannet20
        assert (scene.dataset, scene.split, scene.label_set) == ("pointcept", "val", "scannet20")
        np.testing.assert_array_equal(scene.xyz, t.xyz)
        np.testing.assert_array_equal(scene.rgb, t.rgb)
        np.testing.assert_array_equal(scene.label, t.label)
        assert scene.frames == [] and scene.label.dtype == np.int16
        names = {t.room.boxes[b].class_name for b in t.box[scene.label == 4]}
        assert names == {"chair"}  # scannet20 id 4
    normal = np.load(folder / "normal.npy")
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0)


@pytest.mark.parametrize(
    "label_set, dataset", [("s3dis13", "s3dis"), ("matterport21", "matterport3d")]
)
def test_segment_npy_needs_the_label_set(tmp_path: Path, label_set: str, dataset: str) -> None:
    truth = write_pointcept_dataset(
        tmp_path, 1, split="Area_5", label_set=label_set, spacing=0.15, domain=TARGET
    )
    sid = next(iter(truth.scenes))
    seg = np.load(tmp_path / sid / "segment.npy")
    assert seg.dtype == np.int16 and seg.ndim == (2 if label_set == "s3dis13" else 1)
    with pytest.raises(DatasetError, match="which classes"):
        pc.load_scene(tmp_path, sid)
    a = pc.load_scene(tmp_path, sid, label_set=label_set)
    b = pc.load_scene(tmp_path, sid, dataset=dataset)
    np.testing.assert_array_equal(a.label, truth.scenes[sid].label)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.split == "Area_5" and a.label_set == label_set
    if label_set == "s3dis13":
        assert (a.label == -1).any()  # beds are not an S3DIS class


def _one_scene(tmp_path: Path, split: str = "train") -> tuple[Path, str]:
    truth = write_pointcept_dataset(tmp_path, 1, split=split, spacing=0.2)
    sid = next(iter(truth.scenes))
    return tmp_path / sid, sid


def test_label_conventions(tmp_path: Path) -> None:
    folder, sid = _one_scene(tmp_path)
    seg = np.load(folder / "segment20.npy")
    np.save(folder / "segment20.npy", np.where(seg < 0, 255, seg).astype(np.int32)[:, None])
    with pytest.raises(DatasetError, match="ignore_index=255"):
        pc.load_scene(tmp_path, sid)
    np.testing.assert_array_equal(pc.load_scene(tmp_path, sid, ignore_index=255).label, seg)
    np.save(folder / "segment20.npy", np.full(len(seg), 25))
    with pytest.raises(DatasetError, match="not scannet20 train ids"):
        pc.load_scene(tmp_path, sid)
    rgb = np.load(folder / "color.npy")
    np.save(folder / "color.npy", rgb / 255.0)  # colours stored as 0..1 floats
    (folder / "segment20.npy").unlink()
    with pytest.raises(DatasetError, match="which classes"):
        pc.load_scene(tmp_path, sid)  # without segment20.npy nothing says scannet20
    with pytest.raises(DatasetError, match="allow_unlabeled"):
        pc.load_scene(tmp_path, sid, dataset="scannet")
    scene = pc.load_scene(tmp_path, sid, dataset="scannet", allow_unlabeled=True)
    assert (scene.label == -1).all()
    np.testing.assert_array_equal(scene.rgb, rgb)


def test_unlabeled_test_split_is_allowed(tmp_path: Path) -> None:
    folder, sid = _one_scene(tmp_path, "test")
    (folder / "segment20.npy").unlink()
    scene = pc.load_scene(tmp_path, sid, dataset="scannet")
    assert scene.split == "test" and (scene.label == -1).all()


@pytest.mark.parametrize(
    "case, match",
    [
        ("pickled", "not a plain numpy array"),
        ("coord_shape", r"coord must be \(N, 3\)"),
        ("color_len", "color must be"),
        ("no_color", "color.npy not found"),
        ("nan", "non-finite"),
        ("split_folder", "scene or split folder"),
        ("unknown_split", "split folder 'nope' not found"),
        ("bad_id", "bad scene id"),
        ("missing_scene", "scene not found"),
        ("bad_dataset", "unknown dataset hint"),
    ],
)
def test_bad_input(tmp_path: Path, case: str, match: str) -> None:
    folder, sid = _one_scene(tmp_path)
    xyz = np.load(folder / "coord.npy")
    call = lambda: pc.load_scene(tmp_path, sid)  # noqa: E731
    if case == "pickled":
        np.save(folder / "coord.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "coord_shape":
        np.save(folder / "coord.npy", xyz[:, :2])
    elif case == "color_len":
        np.save(folder / "color.npy", np.zeros((3, 3), np.uint8))
    elif case == "no_color":
        (folder / "color.npy").unlink()
    elif case == "nan":
        xyz[0, 0] = np.nan
        np.save(folder / "coord.npy", xyz)
    elif case == "split_folder":
        call = lambda: pc.list_scenes(tmp_path / "train")  # noqa: E731
    elif case == "unknown_split":
        call = lambda: pc.list_scenes(tmp_path, "nope")  # noqa: E731
    elif case == "bad_id":
        call = lambda: pc.load_scene(tmp_path, "scene0000_00")  # noqa: E731
    elif case == "missing_scene":
        call = lambda: pc.load_scene(tmp_path, "train/scene9999_00")  # noqa: E731
    elif case == "bad_dataset":
        call = lambda: pc.load_scene(tmp_path, sid, dataset="kitti")  # noqa: E731
    with pytest.raises(DatasetError, match=match) as err:
        call()
    assert err.value.fix


def test_reading_leaves_the_folder_unmodified(tmp_path: Path) -> None:
    write_pointcept_dataset(tmp_path, 2, spacing=0.2)

    def snap() -> dict[str, str]:
        return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
                for p in tmp_path.rglob("*") if p.is_file()}  # fmt: skip

    before = snap()
    for sid in pc.list_scenes(tmp_path):
        pc.load_scene(tmp_path, sid)
    assert snap() == before
