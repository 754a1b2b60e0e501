"""Segmentation metrics shared by training (validation) and adaptation (evaluation).

A confusion matrix over the TARGET label set is accumulated; ground truth outside the scored
classes is ignored, and a prediction the target lacks (mapped to -1 by
:func:`tttkd.core.labels.source_to_target`) counts as wrong on every scored point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -1


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """int64 (num_classes, num_classes + 1): rows = ground truth, columns = prediction.

    The extra last column counts predictions outside ``0..num_classes-1`` (e.g. -1 for a
    source class the target lacks): they are misses for the row's class and nobody's hit.
    """
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in length")
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    p = pred[keep]
    p = np.where((p >= 0) & (p < num_classes), p, num_classes)
    flat = target[keep] * (num_classes + 1) + p
    counts = np.bincount(flat, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class IoU (NaN where a class never occurs and is never predicted), mIoU, accuracy."""

    iou: np.ndarray
    miou: float
    accuracy: float
    class_names: tuple[str, ...]
    scored: np.ndarray  # bool per class: included in the mean

    def to_dict(self) -> dict:
        return {
            "miou": self.miou,
            "accuracy": self.accuracy,
            "iou": {
                n: (None if np.isnan(v) else float(v))
                for n, v, s in zip(self.class_names, self.iou, self.scored)
                if s
            },
        }


def scores_from_confusion(
    cm: np.ndarray, class_names: tuple[str, ...] | list[str], scored: np.ndarray | None = None
) -> SegmentationScores:
    """IoU per class = TP / (TP + FP + FN); mIoU over scored classes that occur or are predicted."""
    n = cm.shape[0]
    if scored is None:
        scored = np.ones(n, dtype=bool)
    tp = np.diag(cm[:, :n]).astype(np.float64)
    fn = cm.sum(1) - tp
    fp_all = cm[:, :n].sum(0) - tp
    # False positives only count where the ground truth is a scored class (others are ignored
    # by construction: their rows were dropped when the matrix was built).
    denom = tp + fp_all + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    valid = scored & ~np.isnan(iou)
    miou = float(np.mean(iou[valid])) if valid.any() else float("nan")
    total = cm[scored].sum()
    acc = float(tp[scored].sum() / total) if total > 0 else float("nan")
    return SegmentationScores(iou, miou, acc, tuple(class_names), np.asarray(scored, bool))


def evaluate(
    pred: np.ndarray,
    target: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    pred_map: np.ndarray | None = None,
    scored: np.ndarray | None = None,
) -> tuple[SegmentationScores, np.ndarray]:
    """Score predictions (optionally mapped source -> target ids) against target labels.

    ``scored`` marks the target classes shared with the training label set; ground truth of
    other classes is set to ignore before counting.
    """
    pred = np.asarray(pred).astype(np.int64)
    target = np.asarray(target).astype(np.int64).copy()
    if pred_map is not None:
        pred = np.where(pred >= 0, np.asarray(pred_map)[np.clip(pred, 0, None)], -1)
    n = len(class_names)
    if scored is not None:
        keep = np.zeros_like(target, dtype=bool)
        ok = (target >= 0) & (target < n)
        keep[ok] = np.asarray(scored)[target[ok]]
        target[~keep] = IGNORE_INDEX
    cm = confusion_matrix(pred, target, n)
    return scores_from_confusion(cm, class_names, scored), cm
