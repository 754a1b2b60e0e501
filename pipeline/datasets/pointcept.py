"""Pointcept's processed layout, for users who already ran Pointcept's preprocessing.

Layout (Pointcept ``pointcept/datasets/preprocessing/*``): ``<root>/<split>/<scene>/`` holding
one ``.npy`` per field. ``coord.npy`` float32 (N, 3) and ``color.npy`` uint8 (N, 3) (0..255)
are always there; labels are in ``segment20.npy`` (ScanNet, int64, the 20 benchmark classes)
or ``segment.npy`` (S3DIS, Matterport3D: int16; 13 and 21 classes), already train ids with
-1 = ignore; ``normal.npy``, ``instance.npy``, ``segment200.npy`` are ignored. ``<split>`` is
``train``/``val``/``test`` (ScanNet, Matterport3D) or ``Area_N`` (S3DIS), so scene ids are
``<split>/<scene>``, e.g. ``val/scene0011_00`` or ``Area_5/office_1``.

The files carry no class list, so the label set must be named: ``label_set=`` (``scannet20``,
``s3dis13``, ``matterport21``) or ``dataset=`` (``scannet``, ``s3dis``, ``matterport3d``); a
``segment20.npy`` alone implies ``scannet20``. Labels are checked against it. There are no
images: ``Scene.frames`` is empty, and prep must say that distillation needs images.
Arrays are loaded with ``allow_pickle=False``; an object array is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tttkd.core import (
    DATASET_LABEL_SET,
    IGNORE_INDEX,
    LABEL_SETS,
    DatasetError,
    Scene,
    as_path,
    get_label_set,
)
from tttkd.pipeline.datasets.protocol import check_frames, check_max_views

DATASET = "pointcept"
SEGMENT_FILES = ("segment20.npy", "segment.npy")  # tried in this order
_FIX = "point at the output folder of Pointcept's preprocessing (<root>/<split>/<scene>/*.npy)"


def list_scenes(root: str | Path, split: str | None = None, **_load_options: Any) -> list[str]:
    """``<split>/<scene>`` for every scene folder holding ``coord.npy`` (options of
    ``load_scene`` are accepted and ignored: protocol.Reader)."""
    root = _root(root)
    if split is None:
        splits = sorted(d.name for d in root.iterdir() if d.is_dir() and _scene_dirs(d))
    else:
        if not (root / split).is_dir():
            known = sorted(d.name for d in root.iterdir() if d.is_dir() and _scene_dirs(d))
            raise DatasetError(
                f"split folder {split!r} not found (splits here: {', '.join(known) or 'none'})",
                file=root / split,
                fix="pick one of the split folders listed",
            )
        splits = [split]
    ids = [f"{s}/{d.name}" for s in splits for d in _scene_dirs(root / s)]
    if not ids:
        raise DatasetError("no scenes (no <split>/<scene>/coord.npy)", file=root, fix=_FIX)
    return ids


def load_scene(
    root: str | Path,
    scene_id: str,
    *,
    frames: Literal["auto"] | None = "auto",
    max_views: int | None = None,
    label_set: str | None = None,
    dataset: str | None = None,
    ignore_index: int = IGNORE_INDEX,
    allow_unlabeled: bool | None = None,
    segment_file: str | None = None,
) -> Scene:
    """One processed scene. ``ignore_index`` is the value the files use for "no label" (some
    exports use 255); it becomes -1. Without a label file the scene is refused unless
    ``allow_unlabeled`` (default: only in a split folder named ``test``), then all labels are -1.
    The layout has no images, so ``frames`` and ``max_views`` (protocol.Reader) change nothing.
    """
    check_frames(frames, ("auto",), "Pointcept")
    check_max_views(max_views)
    root = _root(root)
    split = _split_of(scene_id)
    folder = root / scene_id
    xyz = _coords(folder, scene_id)
    n = len(xyz)
    rgb = _colors(folder / "color.npy", n, scene_id)
    seg_path = _segment_path(folder, segment_file)
    name = _label_set_name(label_set, dataset, seg_path, scene_id, folder)
    if seg_path is None:
        allowed = split == "test" if allow_unlabeled is None else allow_unlabeled
        label = _no_labels(folder, scene_id, n, allowed=allowed)
    else:
        label = _labels(seg_path, n, name, ignore_index, scene_id)
    sources = [str(folder / "coord.npy"), str(folder / "color.npy")]
    if seg_path is not None:
        sources.append(str(seg_path))
    return Scene(
        id=scene_id,
        dataset=DATASET,
        split=split,
        xyz=np.ascontiguousarray(xyz),
        rgb=rgb,
        label=label,
        frames=[],
        label_set=name,
        source_files=tuple(sources),
    )


def _split_of(scene_id: str) -> str:
    parts = scene_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise DatasetError(
            f"bad scene id {scene_id!r}",
            scene=scene_id,
            fix="Pointcept scene ids are '<split>/<scene>', e.g. 'val/scene0011_00' (list_scenes)",
        )
    return parts[0]


def _coords(folder: Path, scene_id: str) -> np.ndarray:
    """``coord.npy`` as float32 (N, 3), refused when missing, misshapen or not finite."""
    if not (folder / "coord.npy").is_file():
        raise DatasetError("scene not found (no coord.npy)", file=folder, scene=scene_id, fix=_FIX)
    xyz = _load(folder / "coord.npy", scene_id)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.dtype.kind not in "fiu":
        raise DatasetError(
            f"coord must be (N, 3) numbers, got {xyz.dtype} {xyz.shape}",
            file=folder / "coord.npy",
            scene=scene_id,
            fix=_FIX,
        )
    xyz = xyz.astype(np.float32)
    if not np.isfinite(xyz).all():
        raise DatasetError(
            "non-finite coordinates", file=folder / "coord.npy", scene=scene_id, fix=_FIX
        )
    return xyz


def _no_labels(folder: Path, scene_id: str, n: int, *, allowed: bool) -> np.ndarray:
    """All ignore for a scene without a label file, where that is allowed (a test split)."""
    if not allowed:
        raise DatasetError(
            f"no label file ({' or '.join(SEGMENT_FILES)})",
            file=folder,
            scene=scene_id,
            fix="pass allow_unlabeled=True to read it without labels (all ignored)",
        )
    return np.full(n, IGNORE_INDEX, dtype=np.int16)


def _root(root: str | Path) -> Path:
    root = as_path(root)
    if not root.is_dir():
        raise DatasetError("Pointcept data folder not found", file=root, fix=_FIX)
    if (root / "coord.npy").is_file() or _scene_dirs(root):
        raise DatasetError(
            "this is a scene or split folder, not the dataset folder",
            file=root,
            fix="pass the folder that holds the split folders (e.g. data/scannet, which holds "
            "train/ val/ test/)",
        )
    return root


def _scene_dirs(d: Path) -> list[Path]:
    return sorted(s for s in d.iterdir() if s.is_dir() and (s / "coord.npy").is_file())


def _load(path: Path, scene_id: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(
            f"not a plain numpy array file ({e})",
            file=path,
            scene=scene_id,
            fix="re-run Pointcept's preprocessing for this scene; object (pickled) arrays are "
            "not read",
        ) from e


def _colors(path: Path, n: int, scene_id: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError("color.npy not found", file=path, scene=scene_id, fix=_FIX)
    c = _load(path, scene_id)
    if c.shape != (n, 3) or c.dtype.kind not in "fiu":
        raise DatasetError(
            f"color must be ({n}, 3) numbers, got {c.dtype} {c.shape}",
            file=path,
            scene=scene_id,
            fix=_FIX,
        )
    if c.dtype == np.uint8:
        return np.ascontiguousarray(c)
    c = c.astype(np.float64)
    if c.dtype.kind == "f" and n and np.nanmax(c) <= 1.0:
        c = c * 255.0  # colours stored as 0..1
    if not np.isfinite(c).all() or (n and (c.min() < 0 or c.max() > 255.5)):
        raise DatasetError("colours outside 0..255", file=path, scene=scene_id, fix=_FIX)
    return np.clip(np.round(c), 0, 255).astype(np.uint8)


def _segment_path(folder: Path, segment_file: str | None) -> Path | None:
    if segment_file is not None:
        p = folder / segment_file
        if not p.is_file():
            raise DatasetError("label file not found", file=p, fix="check segment_file=")
        return p
    return next((folder / f for f in SEGMENT_FILES if (folder / f).is_file()), None)


def _label_set_name(
    label_set: str | None,
    dataset: str | None,
    seg_path: Path | None,
    scene_id: str,
    folder: Path | None = None,
) -> str:
    if label_set is None and dataset is not None:
        label_set = DATASET_LABEL_SET.get(dataset)
        if label_set is None:
            raise DatasetError(
                f"unknown dataset hint {dataset!r}",
                scene=scene_id,
                fix=f"use one of {', '.join(DATASET_LABEL_SET)}",
            )
    if label_set is None and seg_path is not None and seg_path.name == "segment20.npy":
        label_set = "scannet20"
    if label_set is None:
        found = "" if seg_path is not None else f" (no {' or '.join(SEGMENT_FILES)} here)"
        raise DatasetError(
            f"the files do not say which classes the labels are{found}",
            file=seg_path or folder,
            scene=scene_id,
            fix=f"pass label_set= (one of {', '.join(LABEL_SETS)}) or dataset= "
            f"(one of {', '.join(DATASET_LABEL_SET)})",
        )
    if label_set not in LABEL_SETS:
        raise DatasetError(
            f"unknown label set {label_set!r}",
            scene=scene_id,
            fix=f"use one of {', '.join(LABEL_SETS)}",
        )
    return label_set


def _labels(path: Path, n: int, label_set: str, ignore_index: int, scene_id: str) -> np.ndarray:
    seg = _load(path, scene_id)
    if seg.ndim == 2 and seg.shape[1] == 1:
        seg = seg[:, 0]
    if seg.shape != (n,) or seg.dtype.kind not in "iuf":
        raise DatasetError(
            f"labels must be ({n},) integers, got {seg.dtype} {seg.shape}",
            file=path,
            scene=scene_id,
            fix=_FIX,
        )
    if seg.dtype.kind == "f":
        if not np.isfinite(seg).all() or (seg != np.round(seg)).any():
            raise DatasetError("labels are not integers", file=path, scene=scene_id, fix=_FIX)
    seg = seg.astype(np.int64)
    seg[seg == ignore_index] = IGNORE_INDEX
    num = get_label_set(label_set).num_classes
    bad = np.unique(seg[(seg < IGNORE_INDEX) | (seg >= num)])
    if bad.size:
        raise DatasetError(
            f"labels {', '.join(map(str, bad[:6].tolist()))} are not {label_set} train ids "
            f"(0..{num - 1}, -1 = ignore)",
            file=path,
            scene=scene_id,
            fix="pass the right label_set=, or ignore_index=255 if the files use 255 for "
            "'no label'",
        )
    if (seg == IGNORE_INDEX).all() and n:
        warnings.warn(f"{scene_id}: every label is 'ignore'", stacklevel=3)
    return seg.astype(np.int16)
