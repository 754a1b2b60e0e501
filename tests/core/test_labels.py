"""Label sets equal Table 2 of the supplementary; shared-class sets come from it."""

from __future__ import annotations

import numpy as np
import pytest

from tttkd.core.labels import (
    all_class_names,
    get_label_set,
    shared_classes,
    source_to_target,
    target_eval_mask,
)

# Table 2 of the supplementary, transcribed column by column (S3DIS, ScanNet, Matterport3D).
TABLE2 = {
    "bathtub": (0, 1, 1), "beam": (1, 0, 0), "bed": (0, 1, 1), "board": (1, 0, 0),
    "bookshelf": (1, 1, 1), "cabinet": (0, 1, 1), "ceiling": (1, 0, 1), "chair": (1, 1, 1),
    "clutter": (1, 0, 0), "column": (1, 0, 0), "counter": (0, 1, 1), "curtain": (0, 1, 1),
    "desk": (0, 1, 1), "door": (1, 1, 1), "floor": (1, 1, 1), "otherfurniture": (0, 1, 1),
    "picture": (0, 1, 1), "refrigerator": (0, 1, 1), "shower curtain": (0, 1, 1),
    "sink": (0, 1, 1), "sofa": (1, 1, 1), "table": (1, 1, 1), "toilet": (0, 1, 1),
    "wall": (1, 1, 1), "window": (1, 1, 1),
}  # fmt: skip


def test_table2_membership() -> None:
    assert set(all_class_names()) == set(TABLE2)
    for col, name in enumerate(("s3dis13", "scannet20", "matterport21")):
        members = {c for c, flags in TABLE2.items() if flags[col]}
        assert set(get_label_set(name).class_names) == members, name


def test_train_id_orders() -> None:
    assert get_label_set("s3dis13").class_names[:4] == ("ceiling", "floor", "wall", "beam")
    assert get_label_set("s3dis13").class_names[-1] == "clutter"
    sc = get_label_set("scannet20").class_names
    assert sc[0] == "wall" and sc[19] == "otherfurniture" and sc[16] == "toilet"
    mp = get_label_set("matterport21").class_names
    assert mp[:19] == sc[:19] and mp[19] == "otherfurniture" and mp[20] == "ceiling"


def test_shared_class_counts() -> None:
    assert len(shared_classes("s3dis13", "scannet20")) == 8
    assert len(shared_classes("s3dis13", "matterport21")) == 9
    assert len(shared_classes("scannet20", "matterport21")) == 20


def test_nyu40_lookup() -> None:
    lut = get_label_set("scannet20").nyu40_to_train()
    assert lut[1] == 0 and lut[39] == 19 and lut[22] == -1 and lut[0] == -1
    assert (lut >= 0).sum() == 20
    assert get_label_set("matterport21").nyu40_to_train()[22] == 20


def test_cross_dataset_maps() -> None:
    m = source_to_target("s3dis13", "scannet20")
    s3, sc = get_label_set("s3dis13"), get_label_set("scannet20")
    assert m[s3.index("ceiling")] == -1  # ScanNet has no ceiling: such a prediction is wrong
    assert m[s3.index("chair")] == sc.index("chair")
    mask = target_eval_mask("s3dis13", "scannet20")
    assert mask.sum() == 8 and not mask[sc.index("bed")]
    np.testing.assert_array_equal(source_to_target("scannet20", "scannet20"), np.arange(20))


def test_unknown_label_set() -> None:
    with pytest.raises(KeyError, match="known"):
        get_label_set("nyu40")


def test_real_benchmark_class_file_matches(shared_data) -> None:
    """ScanNet's own classes_SemVoxLabel-nyu40id.txt lists our 20 classes in our train-id order."""
    text = (shared_data / "scannet/classes_SemVoxLabel-nyu40id.txt").read_text()
    rows = [ln.split(maxsplit=1) for ln in text.splitlines() if ln.strip()]
    assert [int(r[0]) for r in rows] == list(get_label_set("scannet20").nyu40_ids)
    names = [r[1].strip().replace("refridgerator", "refrigerator") for r in rows]
    assert names == list(get_label_set("scannet20").class_names)
