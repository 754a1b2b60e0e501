"""Label sets and the cross-dataset class table (Table 2 of the supplementary).

The table lives in ``data_cards/label_table.tsv`` (installed as ``tttkd.data_cards``); this
module is the only code that reads it. A label set is the ordered list of a dataset's train
classes: ``s3dis13``, ``scannet20``, ``matterport21``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

IGNORE_INDEX = -1
LABEL_SETS = ("s3dis13", "scannet20", "matterport21")
DATASET_LABEL_SET = {"s3dis": "s3dis13", "scannet": "scannet20", "matterport3d": "matterport21"}


@dataclass(frozen=True)
class LabelSet:
    """One dataset's train classes in train-id order."""

    name: str
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    nyu40_ids: tuple[int | None, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index(self, class_name: str) -> int:
        return self.class_names.index(class_name)

    def palette(self) -> np.ndarray:
        """uint8 (num_classes + 1, 3); the last row is the colour of ignored points."""
        return np.array([*self.colors, (0, 0, 0)], dtype=np.uint8)

    def nyu40_to_train(self) -> np.ndarray:
        """Lookup int16 [41]: NYU40 id (0..40) -> train id, -1 where the class is absent."""
        lut = np.full(41, IGNORE_INDEX, dtype=np.int16)
        for train_id, nyu in enumerate(self.nyu40_ids):
            if nyu is not None:
                lut[nyu] = train_id
        return lut


@dataclass(frozen=True)
class _Row:
    name: str
    ids: dict[str, int | None]
    nyu40: int | None
    color: tuple[int, int, int]


@cache
def _table() -> tuple[_Row, ...]:
    text = resources.files("tttkd.data_cards").joinpath("label_table.tsv").read_text("utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t"), strict=True))

        def opt(v: str) -> int | None:
            return None if v == "-" else int(v)

        r, g, b = (int(c) for c in cells["color"].split(","))
        rows.append(
            _Row(
                name=cells["class"],
                ids={s: opt(cells[s]) for s in LABEL_SETS},
                nyu40=opt(cells["nyu40"]),
                color=(r, g, b),
            )
        )
    return tuple(rows)


def all_class_names() -> tuple[str, ...]:
    """Every class of Table 2, in the table's (alphabetical) order."""
    return tuple(r.name for r in _table())


@cache
def get_label_set(name: str) -> LabelSet:
    """The label set ``name`` (or a dataset name such as ``"scannet"``)."""
    name = DATASET_LABEL_SET.get(name, name)
    if name not in LABEL_SETS:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}")
    members = sorted((r.ids[name], r) for r in _table() if r.ids[name] is not None)
    ids = [i for i, _ in members]
    if ids != list(range(len(ids))):
        raise RuntimeError(f"label_table.tsv: train ids of {name} are not 0..n-1: {ids}")
    return LabelSet(
        name=name,
        class_names=tuple(r.name for _, r in members),
        colors=tuple(r.color for _, r in members),
        nyu40_ids=tuple(r.nyu40 for _, r in members),
    )


def shared_classes(a: str, b: str) -> tuple[str, ...]:
    """Classes present in both label sets, in ``b``'s train-id order."""
    la, lb = get_label_set(a), get_label_set(b)
    return tuple(n for n in lb.class_names if n in la.class_names)


def source_to_target(source: str, target: str) -> np.ndarray:
    """int64 [num_source_classes]: source train id -> target train id, -1 if target lacks it.

    Used for cross-dataset evaluation: a prediction of a class the target lacks maps to -1 and
    therefore counts as wrong on every evaluated point.
    """
    ls, lt = get_label_set(source), get_label_set(target)
    return np.array(
        [lt.index(n) if n in lt.class_names else -1 for n in ls.class_names], dtype=np.int64
    )


def target_eval_mask(source: str, target: str) -> np.ndarray:
    """bool [num_target_classes]: which target classes are scored (those shared with source)."""
    ls, lt = get_label_set(source), get_label_set(target)
    return np.array([n in ls.class_names for n in lt.class_names], dtype=bool)
