"""S3DIS reader on synthetic rooms in the exact formats: points, labels, splits, versions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import DatasetError, get_label_set
from tttkd.pipeline.datasets import s3dis
from tttkd.pipeline.datasets.s3dis import FILE_CLASSES, class_train_id
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.s3dis_writer import (
    ALIGNED_DIR,
    RAW_DIR,
    S3DISGroundTruth,
    write_s3dis_dataset,
)

CLUTTER = get_label_set("s3dis13").index("clutter")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> S3DISGroundTruth:
    root = tmp_path_factory.mktemp("s3dis")
    return write_s3dis_dataset(root, 6, views=0, areas=(1, 5, 6), domain=Domain(spacing=0.08))


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_class_tokens_follow_train_ids() -> None:
    assert [class_train_id(t) for t in FILE_CLASSES] == list(range(13))
    assert class_train_id("stairs") == CLUTTER
    assert class_train_id("bookcase") == get_label_set("s3dis13").index("bookshelf")
    assert class_train_id("bed") is None


def test_list_scenes_and_splits(data: S3DISGroundTruth) -> None:
    root = data.root
    everything = s3dis.list_scenes(root)
    assert everything == sorted(data.rooms, key=lambda s: (s[:6], s))
    assert s3dis.list_scenes(root, "train") == [s for s in everything if not s.startswith("Area_5")]
    assert s3dis.list_scenes(root, "val") == s3dis.list_scenes(root, "test")
    assert s3dis.list_scenes(root, "val") == ["Area_5/copyRoom_1", "Area_5/office_1"]
    assert s3dis.list_scenes(root, "val", test_area=1) == ["Area_1/copyRoom_1", "Area_1/office_1"]
    # the version folder itself works as root, and both versions list the same rooms
    assert s3dis.list_scenes(root / RAW_DIR) == everything
    # copyRoom_1 of Area 6 is listed by folder although its room file is misnamed
    room = root / ALIGNED_DIR / "Area_6" / "copyRoom_1"
    assert (room / "copy_Room_1.txt").is_file() and not (room / "copyRoom_1.txt").exists()
    assert "Area_6/copyRoom_1" in everything
    with pytest.raises(ValueError, match="split"):
        s3dis.list_scenes(root, "training")


@pytest.mark.parametrize("version", ["aligned", "raw"])
def test_round_trip_points_labels_colours(data: S3DISGroundTruth, version: str) -> None:
    for scene_id, truth in data.rooms.items():
        scene = s3dis.load_scene(data.root, scene_id, version=version)
        want = truth.xyz_aligned if version == "aligned" else truth.xyz_raw
        tol = 5.1e-4 if version == "aligned" else 1e-5  # %.3f vs %.6f, plus float32
        assert scene.xyz.dtype == np.float32 and scene.xyz.shape == want.shape
        assert np.abs(scene.xyz - want).max() <= tol
        np.testing.assert_array_equal(scene.label, truth.label)
        np.testing.assert_array_equal(scene.rgb, truth.rgb)
        assert scene.dataset == "s3dis" and scene.label_set == "s3dis13"
        assert scene.split == ("val" if scene_id.startswith("Area_5") else "train")
        assert all(Path(f).parent.name == "Annotations" for f in scene.source_files)


def test_stairs_become_clutter_and_corrupted_lines_survive(data: S3DISGroundTruth) -> None:
    scene_id = "Area_1/office_1"
    for vdir in (ALIGNED_DIR, RAW_DIR):
        ann = data.root / vdir / "Area_1" / "office_1" / "Annotations"
        stairs = s3dis.read_xyzrgb(ann / "stairs_1.txt")
        assert len(stairs.xyz) > 0
        ceiling = (ann / "ceiling_1.txt").read_bytes().split(b"\n")
        assert (b"\x00" if vdir == ALIGNED_DIR else b"\x10") in ceiling[7]
        scene = s3dis.load_scene(data.root / vdir, scene_id, frames=None)
        truth = data.rooms[scene_id]
        # every written point comes back (the corrupted line included), stairs as clutter
        assert len(scene.xyz) == len(truth.xyz_raw)
        hit = np.all(np.abs(scene.xyz[:, None, :] - stairs.xyz[None, :5, :]) < 1e-4, axis=2)
        assert (scene.label[hit.any(axis=1)] == CLUTTER).all()
    assert len(data.corrupted) == 2


def test_version_detection(data: S3DISGroundTruth, tmp_path: Path) -> None:
    assert s3dis.resolve_version_root(data.root)[1] == "aligned"
    assert s3dis.resolve_version_root(data.root / RAW_DIR)[1] == "raw"
    renamed = tmp_path / "my_s3dis_copy"
    renamed.symlink_to(data.root / RAW_DIR)
    assert s3dis.resolve_version_root(renamed)[1] == "raw"  # from the number format
    with pytest.raises(DatasetError, match="holds the raw version"):
        s3dis.load_scene(data.root / RAW_DIR, "Area_1/office_1", version="aligned")
    only_raw = tmp_path / "only_raw"
    (only_raw / RAW_DIR).mkdir(parents=True)
    with pytest.raises(DatasetError, match="Aligned_Version is not in this folder"):
        s3dis.resolve_version_root(only_raw, "aligned")


def test_reading_does_not_modify_the_folder(data: S3DISGroundTruth) -> None:
    before = _snapshot(data.root)
    for version in ("aligned", "raw"):
        for scene_id in s3dis.list_scenes(data.root, version=version):
            s3dis.load_scene(data.root, scene_id, version=version)
    assert _snapshot(data.root) == before


def _room(root: Path, files: dict[str, bytes]) -> Path:
    room = root / ALIGNED_DIR / "Area_1" / "office_1"
    for name, content in files.items():
        (room / name).parent.mkdir(parents=True, exist_ok=True)
        (room / name).write_bytes(content)
    room.mkdir(parents=True, exist_ok=True)
    return room


def test_bad_rooms_raise_clear_errors(tmp_path: Path) -> None:
    line = b"1.000 2.000 3.000 4 5 6\n"
    _room(tmp_path / "a", {"office_1.txt": line})
    with pytest.raises(DatasetError, match="no Annotations folder") as e:
        s3dis.load_scene(tmp_path / "a", "Area_1/office_1")
    assert e.value.scene == "Area_1/office_1" and e.value.file.endswith("Annotations")
    _room(tmp_path / "b", {"Annotations/ceiling_1.txt": b""})
    with pytest.raises(DatasetError, match="no points"):
        s3dis.load_scene(tmp_path / "b", "Area_1/office_1")
    _room(tmp_path / "c", {"Annotations/ceiling_1.txt": line, "Annotations/lamp_1.txt": line})
    with pytest.raises(DatasetError, match="unknown S3DIS class 'lamp'") as e:
        s3dis.load_scene(tmp_path / "c", "Area_1/office_1")
    assert e.value.file.endswith("lamp_1.txt") and "unknown_class='ignore'" in e.value.fix
    with pytest.warns(UserWarning, match="labelled -1"):
        scene = s3dis.load_scene(tmp_path / "c", "Area_1/office_1", unknown_class="ignore")
    np.testing.assert_array_equal(scene.label, [0, -1])
    with pytest.raises(DatasetError, match="no such room"):
        s3dis.load_scene(tmp_path / "c", "Area_1/office_9")
    with pytest.raises(DatasetError, match="look like 'Area_5/office_1'"):
        s3dis.load_scene(tmp_path / "c", "office_1")
    with pytest.raises(DatasetError, match="does not exist"):
        s3dis.list_scenes(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no Area_N folders"):
        s3dis.list_scenes(tmp_path)


def test_unreadable_lines_are_skipped_with_a_warning(tmp_path: Path) -> None:
    _room(tmp_path, {"Annotations/floor_1.txt": b"1.0 2.0 3.0 4 5 6\n1.0 2.0\x00\n7 8 9 1 2 3\n"})
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        scene = s3dis.load_scene(tmp_path, "Area_1/office_1")
    np.testing.assert_array_equal(scene.xyz, [[1, 2, 3], [7, 8, 9]])
    np.testing.assert_array_equal(scene.label, [1, 1])


def test_real_semantic_labels(shared_data: Path) -> None:
    import json

    path = shared_data / "s3dis" / "semantic_labels.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    labels = json.loads(path.read_text())
    assert len(labels) == 9816 and labels[0] == "<UNK>_0_<UNK>_0_0"
    lut = s3dis.semantic_label_train_ids(labels)
    assert lut[0] == -1 and (lut[1:] >= 0).all() and lut.max() == 12
    assert {e.split("_")[0] for e in labels[1:]} <= set(FILE_CLASSES)
    rooms: dict[str, set[str]] = {}
    for entry in labels[1:]:
        _, _, room_type, room_num, area = entry.split("_")
        rooms.setdefault(area, set()).add(f"{room_type}_{room_num}")
    assert {a: len(r) for a, r in rooms.items()} == {
        "1": 44, "2": 40, "3": 23, "4": 49, "5": 68, "6": 48
    }  # fmt: skip
    # a 2x2 semantic PNG: entry 1 (beam_10_hallway_6_1), missing 0x0D0D0D, beyond the table
    img = np.array([[[0, 0, 1], [13, 13, 13]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(s3dis.decode_semantic_png(img, lut), [[3, -1], [-1, -1]])


def test_data_card_matches_the_label_table() -> None:
    from importlib import resources

    from tttkd.core import shared_classes

    card = resources.files("tttkd.data_cards").joinpath("s3dis.md").read_text("utf-8")
    rows = [ln.split("|")[1:-1] for ln in card.splitlines() if ln.startswith("| ")]
    classes = [[c.strip() for c in r] for r in rows if len(r) == 4 and r[0].strip().isdigit()]
    ls = get_label_set("s3dis13")
    assert [int(r[0]) for r in classes] == list(range(13))
    assert tuple(r[1] for r in classes) == ls.class_names
    assert [tuple(int(v) for v in r[3].split(",")) for r in classes] == list(ls.colors)
    for r in classes:
        for token in r[2].split(", "):
            assert class_train_id(token) == int(r[0])
    assert len(shared_classes("s3dis13", "scannet20")) == 8
    assert len(shared_classes("s3dis13", "matterport21")) == 9
