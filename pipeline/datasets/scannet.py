"""ScanNet v2 read exactly as distributed (FORMATS.md section 1).

``root`` is the folder ``download-scannet.py`` wrote: ``scans/<scene>/`` (train + val),
``scans_test/<scene>/`` (test, unlabelled), the label map ``scannetv2-labels.combined.tsv``
(at the root, as the download script puts it, or under ``tasks/``) and optionally the 25k
frame subset ``scannet_frames_25k/``. A folder that directly holds ``scene*`` folders works too.

The reader (protocol.Reader: ``list_scenes``, ``load_scene``); each step lives in its module:

* Scan folders and splits: :mod:`.scannet_tree` (``scannetv2_{train,val,test}.txt`` from
  ``splits_dir``, the root, ``<root>/Tasks/Benchmark`` or ``<root>/tasks/Benchmark``).
* Points: ``<scene>_vh_clean_2.ply`` vertices in the scan's own frame; ``align=True`` applies
  ``axisAlignment`` from ``<scene>.txt`` to the points AND the camera poses
  (:mod:`.scannet_scan`).
* Labels: ``<scene>.aggregation.json`` segGroups over ``<scene>_vh_clean_2.0.010000.segs.json``
  segments, through the TSV to scannet20 train ids; -1 = ignore (:mod:`.scannet_labels`).
* Frames: which source (:mod:`.scannet_frame_source`), read by :mod:`.scannet_frames`.

Reading never writes into the dataset folder.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tttkd.core import DatasetError, Scene
from tttkd.pipeline.datasets.protocol import check_frames, check_max_views, evenly_spaced
from tttkd.pipeline.datasets.scannet_frame_source import (
    FRAME_SOURCES,
    SENS_STRIDE,
    FrameSource,
    load_frames,
)
from tttkd.pipeline.datasets.scannet_labels import (
    LABEL_TSV,
    find_label_tsv,
    load_nyu40,
    read_label_map,
    read_labels,
)
from tttkd.pipeline.datasets.scannet_labels import _label_map as _label_map  # its cache_clear
from tttkd.pipeline.datasets.scannet_scan import aligned, axis_alignment, read_meta, read_points
from tttkd.pipeline.datasets.scannet_tree import (
    SCENE_RE,
    SPLITS,
    SplitFileMissing,
    find_scan_dir,
    listdir,
    read_split,
    scan_dirs,
    scene_split,
    split_file,
)

__all__ = [
    "FRAME_SOURCES",
    "LABEL_TSV",
    "SCENE_RE",
    "SENS_STRIDE",
    "SPLITS",
    "FrameSource",
    "SplitFileMissing",
    "axis_alignment",
    "find_label_tsv",
    "find_scan_dir",
    "list_scenes",
    "load_nyu40",
    "load_scene",
    "read_label_map",
    "read_meta",
    "read_split",
    "split_file",
]


def list_scenes(
    root: str | Path,
    split: str | None = None,
    *,
    splits_dir: str | Path | None = None,
    existing_only: bool = False,
    **_load_options: Any,
) -> list[str]:
    """Scene ids of ``split`` as its split file lists them, or every scan folder (``None``).

    ``existing_only`` keeps only the split's scenes whose scan folder is present; options of
    ``load_scene`` are accepted and ignored (protocol.Reader).
    """
    root = Path(root)
    present = sorted(p.name for d in scan_dirs(root) for p in listdir(d) if SCENE_RE.match(p.name))
    if split is None:
        if not present:
            raise DatasetError(
                "no scene folders found (looked in scans/ and scans_test/)",
                file=root,
                fix="point root at the folder download-scannet.py wrote (it holds scans/)",
            )
        return present
    ids = read_split(split_file(root, split, splits_dir))
    have = set(present)
    return [s for s in ids if s in have] if existing_only else ids


def load_scene(
    root: str | Path,
    scene_id: str,
    *,
    frames: FrameSource | None = "auto",
    max_views: int | None = None,
    align: bool = False,
    frames_root: str | Path | None = None,
    frame_stride: int | None = None,
    labels_tsv: str | Path | None = None,
    splits_dir: str | Path | None = None,
    color_calib_size: tuple[int, int] | None = None,
) -> Scene:
    """One ScanNet scan as a :class:`Scene` (labels in scannet20 train ids, -1 = ignore).

    ``frames``: ``"25k"``, ``"exported"``, ``"sens"``, ``"auto"`` (the first of those three
    found, else none) or None (no frames). ``frame_stride`` keeps frames whose ``.sens`` index
    is a multiple of it (default: 100 for ``.sens`` and exports, all frames of the 25k subset);
    ``max_views`` then keeps that many, evenly spaced.
    """
    frames = _checked_frame_options(frames, max_views)
    root = Path(root)
    scan_dir = find_scan_dir(root, scene_id)
    is_test = scan_dir.parent.name == "scans_test"
    xyz, rgb, ply = read_points(scan_dir, scene_id)
    label, label_files = read_labels(root, scan_dir, scene_id, len(xyz), is_test, labels_tsv)
    sources = [ply, *label_files]
    meta_path = scan_dir / f"{scene_id}.txt"
    meta = read_meta(meta_path, scene_id) if meta_path.is_file() else {}
    frame_list = load_frames(
        root,
        scan_dir,
        scene_id,
        frames=frames,
        frames_root=frames_root,
        stride=frame_stride,
        meta=meta,
        color_calib_size=color_calib_size,
    )
    frame_list = evenly_spaced(frame_list, max_views)
    if align:
        xyz, frame_list = aligned(xyz, frame_list, meta, meta_path, scene_id)
        sources.append(meta_path)
    return Scene(
        id=scene_id,
        dataset="scannet",
        split=scene_split(root, scene_id, splits_dir, is_test),
        xyz=xyz.astype(np.float32),
        rgb=rgb,
        label=label.astype(np.int16),
        frames=frame_list,
        label_set="scannet20",
        source_files=tuple(str(p) for p in sources),
    )


def _checked_frame_options(frames: object, max_views: object) -> str | None:
    """``frames`` as a source or None, both options checked; the spelling ``"none"`` of before
    protocol.Reader (tttkd-prep --frames none) still works, with a deprecation warning."""
    if frames == "none":
        warnings.warn(
            "ScanNet frames='none' is deprecated and will be removed; pass frames=None",
            DeprecationWarning,
            stacklevel=3,  # the caller of load_scene
        )
        frames = None
    source = check_frames(frames, FRAME_SOURCES, "ScanNet")
    check_max_views(max_views)
    return source
