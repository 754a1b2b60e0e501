"""Every S3DIS / 2D-3D-S warning points at the line that called ``load_scene``.

Before: the room-completeness warnings and the dropped-frame warnings of 2D-3D-S named a line
inside the library (``stacklevel`` one frame short), so a user could not tell which of their
calls read the damaged room.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttkd.pipeline.datasets import s3dis
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.s3dis_writer import ALIGNED_DIR, write_s3dis_dataset

SCENE = "Area_1/office_1"  # alignment angle 90: the direction check runs


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s3dis_warnings")
    write_s3dis_dataset(
        root, 1, views=3, image_size=(48, 48), areas=(1,), domain=Domain(spacing=0.1)
    )
    return root


def _room(root: Path) -> Path:
    return root / ALIGNED_DIR / SCENE


def _frame_files(root: Path, kind: str) -> list[Path]:
    return sorted((root / "area_1" / "data" / kind).glob("*office_1_frame_*"))


def _append(path: Path, line: bytes) -> None:
    path.write_bytes(path.read_bytes() + line)


def _no_room_file(root: Path) -> None:
    (_room(root) / "office_1.txt").unlink()


def _object_file_deleted(root: Path) -> None:
    sorted((_room(root) / "Annotations").glob("wall_*.txt"))[0].unlink()


def _unknown_class(root: Path) -> None:
    ann = _room(root) / "Annotations"
    shutil.copy(ann / "ceiling_1.txt", ann / "skylight_1.txt")  # a class S3DIS does not have


def _unreadable_line(root: Path) -> None:
    _append(_room(root) / "Annotations" / "ceiling_1.txt", b"not six numbers\n")


def _clipped_colour(root: Path) -> None:
    ceiling = _room(root) / "Annotations" / "ceiling_1.txt"
    first = ceiling.read_bytes().split(b"\n", 1)[0].split()
    _append(ceiling, b" ".join(first[:3] + [b"300", b"0", b"0"]) + b"\n")


def _implausible_repair(root: Path) -> None:
    _append(_room(root) / "Annotations" / "ceiling_1.txt", b"-17\x01337 1.0 1.0 10 10 10\n")


def _frame_file_missing(root: Path) -> None:
    _frame_files(root, "depth")[0].unlink()


def _nan_pose(root: Path) -> None:
    pose = _frame_files(root, "pose")[0]
    content = json.loads(pose.read_text())
    content["camera_rt_matrix"][0][0] = float("nan")
    pose.write_text(json.dumps(content))


def _depth_disagrees(root: Path) -> None:
    for depth in _frame_files(root, "depth"):
        Image.fromarray(np.full((48, 48), 60000, np.uint16)).save(depth)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "no_room_file": (_no_room_file, "cannot be noticed"),
    "object_file_deleted": (_object_file_deleted, "missing or cut short"),
    "unknown_class": (_unknown_class, "labelled -1 (unknown class)"),
    "unreadable_line": (_unreadable_line, "skipped 1 unreadable line(s)"),
    "clipped_colour": (_clipped_colour, "colour(s) outside 0..255 clipped"),
    "implausible_repair": (_implausible_repair, "repaired line(s) whose point lies far"),
    "frame_file_missing": (_frame_file_missing, "(those frames are dropped)"),
    "nan_pose": (_nan_pose, "frame(s) with non-finite or non-rigid poses"),
    "depth_disagrees": (_depth_disagrees, "points agree with the frames' depth"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_warning_names_the_line_that_called_load_scene(pristine, tmp_path, damage):
    root = tmp_path / "data"
    shutil.copytree(pristine, root)
    damage_fn, expected = DAMAGE[damage]
    damage_fn(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s3dis.load_scene(root, SCENE, unknown_class="ignore")
    hits = [w for w in caught if expected in str(w.message)]
    assert len(hits) == 1, [str(w.message) for w in caught]
    assert [(w.filename, str(w.message)) for w in caught if w.filename != __file__] == []


def test_list_scenes_warns_about_nothing(pristine):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s3dis.list_scenes(pristine) == [SCENE]
