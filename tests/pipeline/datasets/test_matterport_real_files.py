"""The real Matterport3D label and split files (../shared/data/matterport3d) through our parsers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import get_label_set
from tttkd.pipeline.datasets import matterport3d as mp
from tttkd.pipeline.datasets.matterport_formats import (
    read_category_mapping,
    read_mpcat40,
    read_split_file,
    read_tsv,
)
from tttkd.synthetic.matterport_writer import write_matterport_dataset


@pytest.fixture
def mp_data(shared_data: Path) -> Path:
    d = shared_data / "matterport3d"
    if not (d / "category_mapping.tsv").is_file():
        pytest.skip(f"{d} has no category_mapping.tsv")
    return d


def test_category_mapping_parses_with_the_empty_nyu40id(mp_data: Path) -> None:
    raw = (mp_data / "category_mapping.tsv").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n")  # the real file is CRLF throughout
    mapping = read_category_mapping(mp_data / "category_mapping.tsv")
    assert len(mapping) == 1659 and sorted(mapping) == list(range(1, 1660))
    assert mapping[1240] == 0  # 'storage': empty nyu40id
    assert all(0 <= v <= 40 for v in mapping.values())
    ids = mp.face_train_ids(
        np.array([-1, 0, 1, 3, 4, 1240, 1659, 1]), mp_data / "category_mapping.tsv"
    )
    # wall, ceiling (nyu40 22 -> 20), floor, storage -> none, washbasin top (sink, nyu40 34 -> 17)
    assert ids.tolist() == [-1, -1, 0, 20, 1, -1, 17, 0]


def test_every_one_of_the_21_classes_has_matterport_categories(mp_data: Path) -> None:
    mapping = read_category_mapping(mp_data / "category_mapping.tsv")
    ls = get_label_set("matterport21")
    lut = ls.nyu40_to_train()
    counts = np.bincount([lut[v] for v in mapping.values() if lut[v] >= 0], minlength=21)
    assert (counts > 0).all(), dict(zip(ls.class_names, counts.tolist()))
    # FORMATS.md 3.5: the allowed NYU40 ids, with 39 -> "other" (19) and 22 -> ceiling (20).
    assert sorted(n for n in ls.nyu40_ids) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16,
                                               22, 24, 28, 33, 34, 36, 39]  # fmt: skip
    assert lut[39] == 19 and lut[22] == 20 and lut[40] == -1 and lut[0] == -1


def test_mpcat40_table(mp_data: Path) -> None:
    cats = read_mpcat40(mp_data / "mpcat40.tsv")
    assert [c.index for c in cats] == list(range(42))
    assert (cats[0].name, cats[41].name, cats[1].name) == ("void", "unlabeled", "wall")
    assert all(c.hex.startswith("#") and len(c.hex) == 7 for c in cats)
    header, rows = read_tsv(mp_data / "category_mapping.tsv", what="mapping", fix="")
    col = header.index("mpcat40index")
    assert {int(r[col]) for r in rows} <= set(range(42))


def test_split_lists(mp_data: Path) -> None:
    splits = {s: read_split_file(mp_data / f"scenes_{s}.txt") for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 61, "val": 11, "test": 18}
    every = [h for v in splits.values() for h in v]
    assert len(set(every)) == 90 and all(len(h) == 11 for h in every)
    assert (mp_data / "scenes_val.txt").read_bytes().endswith(b"\n")


def test_list_scenes_with_the_real_split_files(mp_data: Path, tmp_path: Path) -> None:
    val = read_split_file(mp_data / "scenes_val.txt")
    test = read_split_file(mp_data / "scenes_test.txt")
    truth = write_matterport_dataset(
        tmp_path, 2, regions_per_house=1, views=0, spacing=0.3,
        house_ids=[val[0], test[-1]], splits=["val", "test"],
    )  # fmt: skip
    scans = truth.scans_root
    shutil.rmtree(scans / "tasks")
    with pytest.warns(UserWarning, match="10 of 11 houses are not on disk"):
        assert mp.list_scenes(scans, "val", splits_dir=mp_data) == [f"{val[0]}/region0"]
    # Pointcept's and OpenScene's copies lack the final newline: same houses.
    bare = tmp_path / "bare"
    bare.mkdir()
    for s in ("train", "val", "test"):
        text = (mp_data / f"scenes_{s}.txt").read_text()
        (bare / f"scenes_{s}.txt").write_text(text.rstrip("\n"))
    with pytest.warns(UserWarning, match="17 of 18"):
        assert mp.list_scenes(scans, "test", splits_dir=bare) == [f"{test[-1]}/region0"]
