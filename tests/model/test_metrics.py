"""mIoU and cross-dataset scoring on hand-computed cases."""

from __future__ import annotations

import numpy as np

from tttkd.core import get_label_set, source_to_target, target_eval_mask
from tttkd.model.metrics import confusion_matrix, evaluate, scores_from_confusion


def test_known_iou_values() -> None:
    gt = np.array([0, 0, 1, 1, 2, -1])
    pr = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pr, gt, 3)
    s = scores_from_confusion(cm, ("a", "b", "c"))
    # class 0: TP1 FP1 FN1 -> 1/3; class 1: TP2 FP1 FN0 -> 2/3; class 2: TP0 FP0 FN1 -> 0
    np.testing.assert_allclose(s.iou, [1 / 3, 2 / 3, 0.0])
    assert np.isclose(s.miou, 1 / 3) and np.isclose(s.accuracy, 3 / 5)


def test_absent_class_is_not_averaged() -> None:
    s, _ = evaluate(np.array([0, 0, 1]), np.array([0, 0, 1]), ("a", "b", "c"))
    assert np.isnan(s.iou[2]) and s.miou == 1.0


def test_cross_dataset_unshared_prediction_counts_as_wrong() -> None:
    src, tgt = "s3dis13", "scannet20"
    s3, sc = get_label_set(src), get_label_set(tgt)
    gt = np.array([sc.index("chair"), sc.index("chair"), sc.index("bed"), sc.index("wall")])
    pr = np.array([s3.index("chair"), s3.index("ceiling"), s3.index("chair"), s3.index("wall")])
    s, cm = evaluate(
        pr,
        gt,
        sc.class_names,
        pred_map=source_to_target(src, tgt),
        scored=target_eval_mask(src, tgt),
    )
    # bed is not shared: its point is ignored; ceiling prediction -> wrong for chair.
    assert cm.sum() == 3
    assert np.isclose(s.iou[sc.index("chair")], 0.5)
    assert np.isclose(s.iou[sc.index("wall")], 1.0)
    assert np.isclose(s.miou, 0.75)
    assert set(s.to_dict()["iou"]) == set(np.array(sc.class_names)[target_eval_mask(src, tgt)])
