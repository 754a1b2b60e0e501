"""Scoring at full resolution on the target dataset's labels (METHOD.md, "Evaluation").

Predictions are made per cached point (one per voxel) and carried to every original point
through ``voxel_of_point``. When the checkpoint was trained on another label set than the
cache's, predictions are mapped to target ids by class name, only the classes the two share
are scored, and a predicted class the target lacks counts as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tttkd.core import LABEL_SETS, get_label_set, source_to_target, target_eval_mask
from tttkd.model.metrics import evaluate, scores_from_confusion

__all__ = ["Evaluator", "LabelMapping", "full_resolution", "label_mapping"]


@dataclass(frozen=True)
class LabelMapping:
    """How checkpoint class ids are scored against the cache's labels."""

    source: str
    target: str
    class_names: tuple[str, ...]  # target classes (confusion-matrix rows)
    pred_map: np.ndarray | None  # source id -> target id (-1: target lacks it); None: identity
    scored: np.ndarray  # bool per target class

    @property
    def cross_dataset(self) -> bool:
        return self.pred_map is not None

    @property
    def scored_names(self) -> list[str]:
        return [n for n, s in zip(self.class_names, self.scored) if s]

    def to_dict(self) -> dict:
        return {
            "checkpoint_label_set": self.source,
            "cache_label_set": self.target,
            "cross_dataset": self.cross_dataset,
            "scored_classes": self.scored_names,
        }


def label_mapping(
    source: str,
    source_names: tuple[str, ...] | list[str],
    target: str,
    target_names: tuple[str, ...] | list[str],
) -> LabelMapping:
    """Identity when the label sets agree; otherwise the shared classes of Table 2.

    Unknown label-set names with different class lists are matched by class name.
    """
    source_names, target_names = tuple(source_names), tuple(target_names)
    if source == target and source_names == target_names:
        return LabelMapping(source, target, target_names, None, np.ones(len(target_names), bool))
    if source in LABEL_SETS and target in LABEL_SETS:
        pred_map = source_to_target(source, target)
        scored = target_eval_mask(source, target)
        names = get_label_set(target).class_names
    else:
        pred_map = np.array(
            [target_names.index(n) if n in target_names else -1 for n in source_names], np.int64
        )
        scored = np.array([n in source_names for n in target_names], bool)
        names = target_names
    if not scored.any():
        raise ValueError(
            f"the checkpoint's classes ({source}) and the cache's ({target}) share no class; "
            "nothing can be scored"
        )
    return LabelMapping(source, target, names, pred_map, scored)


def full_resolution(pred_cached: np.ndarray, voxel_of_point: np.ndarray) -> np.ndarray:
    """Per original point: the prediction of its voxel (-1 where a point has no voxel)."""
    vop = np.asarray(voxel_of_point).astype(np.int64)
    out = np.full(vop.shape, -1, dtype=np.int64)
    ok = vop >= 0
    out[ok] = np.asarray(pred_cached, dtype=np.int64)[vop[ok]]
    return out


class Evaluator:
    """Accumulates one method's confusion over scenes; scores each scene on its own too."""

    def __init__(self, mapping: LabelMapping):
        self.mapping = mapping
        n = len(mapping.class_names)
        self.confusion = np.zeros((n, n + 1), dtype=np.int64)

    def add(self, pred_full: np.ndarray, target_full: np.ndarray) -> dict:
        """Score one scene (full resolution, checkpoint ids) and add it to the total."""
        m = self.mapping
        scores, cm = evaluate(
            pred_full,
            target_full,
            m.class_names,
            pred_map=m.pred_map,
            scored=m.scored if m.cross_dataset else None,
        )
        self.confusion += cm
        return scores.to_dict()

    def overall(self) -> dict:
        scores = scores_from_confusion(
            self.confusion, self.mapping.class_names, self.mapping.scored
        )
        return scores.to_dict()
