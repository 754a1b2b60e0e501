"""S3DIS rooms (Aligned or non-aligned v1.2) with their 2D-3D-S frames, as one Scene each.

The reader (protocol.Reader: ``list_scenes``, ``load_scene``); each step lives in its module:

* **Root, version, ids and splits** (:mod:`.s3dis_layout`). Scene ids are ``Area_<n>/<room>``
  (e.g. ``Area_5/office_1``), listed from the room folders. ``root`` is a version folder
  holding ``Area_1 ... Area_6`` or a folder above ``Stanford3dDataset_v1.2_Aligned_Version``
  and/or ``Stanford3dDataset_v1.2``; ``version=None`` recognises or picks one.
  ``train`` = every area but ``test_area`` (default 5); ``val``/``test`` = that area.
  ``Scene.split`` is ``"train"`` or ``"val"``.
* **Points** (:mod:`.s3dis_room`, classes in :mod:`.s3dis_classes`, bytes in
  :mod:`.s3dis_text`) come from ``<room>/Annotations/<class>_<k>.txt``; an unknown class is an
  error (``unknown_class="ignore"`` labels those points -1 and warns instead). The room file
  ``<room>/<room>.txt`` must hold as many lines as the object files together (else a warning).
* **Frames** (2D-3D-S, :mod:`.stanford2d3ds`) are in the frame of the non-aligned v1.2 clouds;
  with ``version="aligned"`` they are moved into the aligned frame (:mod:`.s3dis_align`), so
  points and poses always share one frame. ``align_direction="auto"`` checks the rotation's
  direction against the depth. ``images_root=None`` looks for ``area_*`` folders in ``root``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tttkd.core import Frame, Scene
from tttkd.pipeline.datasets.protocol import check_frames, check_max_views
from tttkd.pipeline.datasets.s3dis_align import (
    AlignDirection,
    aligned_from_raw,
    aligned_from_raw_of_room,
    depth_agreement,
    read_alignment_angles,
)
from tttkd.pipeline.datasets.s3dis_classes import (
    CLASS_ALIASES,
    FILE_CLASSES,
    LABEL_SET,
    class_train_id,
    decode_semantic_png,
    semantic_label_train_ids,
)
from tttkd.pipeline.datasets.s3dis_layout import (
    VERSION_DIRS,
    Version,
    check_split,
    resolve_version_root,
    room_dir,
    room_ids,
)
from tttkd.pipeline.datasets.s3dis_room import check_complete, read_points, room_file
from tttkd.pipeline.datasets.s3dis_text import read_xyzrgb
from tttkd.pipeline.datasets.stanford2d3ds import find_area_dirs, load_frames

__all__ = [
    "CLASS_ALIASES",
    "FILE_CLASSES",
    "LABEL_SET",
    "VERSION_DIRS",
    "AlignDirection",
    "Version",
    "aligned_from_raw",
    "check_complete",
    "class_train_id",
    "decode_semantic_png",
    "depth_agreement",
    "list_scenes",
    "load_scene",
    "read_alignment_angles",
    "read_xyzrgb",
    "resolve_version_root",
    "room_file",
    "semantic_label_train_ids",
]


def list_scenes(
    root: str | Path,
    split: str | None = None,
    *,
    version: Version | None = None,
    test_area: int = 5,
    **_load_options: Any,
) -> list[str]:
    """Scene ids ``Area_<n>/<room>`` of ``split`` (None = all), from the room folders (options
    of ``load_scene`` are accepted and ignored: protocol.Reader)."""
    check_split(split)
    vroot, _ = resolve_version_root(root, version)
    return room_ids(vroot, split, test_area)


def load_scene(
    root: str | Path,
    scene_id: str,
    *,
    frames: Literal["auto"] | None = "auto",
    max_views: int | None = None,
    version: Version | None = None,
    images_root: str | Path | None = None,
    align_direction: AlignDirection = "auto",
    test_area: int = 5,
    unknown_class: Literal["error", "ignore"] = "error",
) -> Scene:
    """One S3DIS room as a :class:`Scene`, points and frames in the ``version``'s frame.

    ``frames=None`` reads the points only (no 2D-3D-S file is needed); ``max_views`` keeps that
    many of the room's frames, evenly spaced in file order.
    """
    check_frames(frames, ("auto",), "S3DIS")
    check_max_views(max_views)
    if align_direction not in ("auto", "documented", "inverse"):
        raise ValueError(
            f"align_direction must be auto/documented/inverse, not {align_direction!r}"
        )
    vroot, version = resolve_version_root(root, version)
    area, room, folder = room_dir(vroot, scene_id)
    xyz64, rgb, label, sources = read_points(folder, scene_id, unknown_class)
    frame_list: list[Frame] = []
    if frames is not None:
        if images_root is None and find_area_dirs(root):
            images_root = root
        if images_root is not None:
            frame_list = load_frames(images_root, area, room, scene=scene_id, max_views=max_views)
    if frame_list and version == "aligned":
        A = aligned_from_raw_of_room(
            vroot, area, room, xyz64, frame_list, direction=align_direction, scene=scene_id
        )
        frame_list = [dataclasses.replace(f, c2w=A @ f.c2w) for f in frame_list]
    return Scene(
        id=scene_id,
        dataset="s3dis",
        split="val" if area == test_area else "train",
        xyz=xyz64.astype(np.float32),
        rgb=rgb,
        label=label,
        frames=frame_list,
        label_set=LABEL_SET,
        source_files=tuple(sources),
    )
