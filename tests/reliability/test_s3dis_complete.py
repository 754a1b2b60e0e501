"""A room's object files must add up to its room file (issue #13: no silent point loss).

Before: a room is the union of its ``Annotations/*.txt``, so a deleted object file or one cut
short gave a smaller room without a word. The room file ``<room>.txt`` holds every point, so
its line count is a cheap cross-check; a mismatch is a warning naming both (the real data has
one legitimate mismatch, a duplicate object file in ``Area_5/office_36``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

from tttkd.core import DatasetError
from tttkd.pipeline.datasets import s3dis
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.s3dis_writer import ALIGNED_DIR, write_s3dis_dataset

SCENE = "Area_1/office_1"  # holds the NUL glitch and stairs_1.txt


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s3dis_complete")
    write_s3dis_dataset(root, 4, views=0, areas=(1, 6), domain=Domain(spacing=0.1))
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def _load(root: Path, scene: str = SCENE):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = s3dis.load_scene(root, scene, version="aligned", frames=None)
    return scene, [str(w.message) for w in caught]


def _room(root: Path, scene: str = SCENE) -> Path:
    return root / ALIGNED_DIR / scene


def test_a_whole_room_reads_without_a_completeness_warning(root):
    for scene_id in (SCENE, "Area_6/copyRoom_1"):  # the second has the misnamed copy_Room_1.txt
        _, warned = _load(root, scene_id)
        assert not [w for w in warned if "room file" in w], warned


def test_a_deleted_object_file_is_named_by_the_room_check(root):
    full, _ = _load(root)
    victim = sorted((_room(root) / "Annotations").glob("wall_*.txt"))[0]
    lost = victim.read_bytes().count(b"\n")
    victim.unlink()
    scene, warned = _load(root)
    assert len(scene.xyz) == len(full.xyz) - lost
    hits = [w for w in warned if "missing or cut short" in w]
    assert len(hits) == 1, warned
    assert str(_room(root) / "Annotations") in hits[0]
    assert str(_room(root) / "office_1.txt") in hits[0]
    assert f"hold {len(full.xyz) - lost} lines" in hits[0] and f"holds {len(full.xyz)}" in hits[0]


@pytest.mark.parametrize("cut", ["line_end", "mid_line"])
def test_an_object_file_cut_short_is_noticed(root, cut):
    victim = _room(root) / "Annotations" / "ceiling_1.txt"
    data = victim.read_bytes()
    half = data.rfind(b"\n", 0, len(data) // 2) + 1  # just after a line end
    victim.write_bytes(data[:half] if cut == "line_end" else data[: half + 9])
    _, warned = _load(root)
    assert any("missing or cut short" in w for w in warned), warned


def test_an_extra_object_file_is_a_warning_not_an_error(root):
    ann = _room(root) / "Annotations"
    shutil.copy(ann / "floor_1.txt", ann / "floor_1 (1).txt")  # as Area_5/office_36's wall_3
    _, warned = _load(root)
    assert any("duplicated or extra" in w and str(ann) in w for w in warned), warned


def test_a_missing_room_file_says_the_check_was_not_made(root):
    (_room(root) / "office_1.txt").unlink()
    scene, warned = _load(root)
    assert len(scene.xyz) > 0
    assert any("no room file" in w and "office_1.txt" in w for w in warned), warned


def test_a_fifo_in_place_of_an_object_file_is_an_error_not_a_hang(root):
    victim = _room(root) / "Annotations" / "ceiling_1.txt"
    victim.unlink()
    os.mkfifo(victim)
    with pytest.raises(DatasetError, match="FIFO") as e:
        _load(root)
    assert "ceiling_1.txt" in str(e.value)
