"""A ScanNet scan's own geometry: the ``_vh_clean_2.ply`` vertices and the ``<scene>.txt``.

Points are in the scan's own frame; ``align=True`` applies ``axisAlignment`` from
``<scene>.txt`` to the points AND the camera poses (``c2w' = A @ c2w``), so projections stay
valid.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tttkd.core import DatasetError, Frame
from tttkd.pipeline.datasets.ply import read_elements, require_properties
from tttkd.pipeline.datasets.scannet_tree import need_file


def read_points(scan_dir: Path, scene_id: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """xyz (float64, the raw scan frame) and rgb of the ``_vh_clean_2.ply`` vertices."""
    ply = need_file(
        scan_dir / f"{scene_id}_vh_clean_2.ply",
        scene_id,
        "download the scene's _vh_clean_2.ply (download-scannet.py --type _vh_clean_2.ply)",
    )
    vertex = read_elements(ply, ["vertex"], scene=scene_id)["vertex"]
    require_properties(vertex, ("x", "y", "z", "red", "green", "blue"), ply, scene=scene_id)
    xyz = np.stack([vertex[k] for k in "xyz"], 1).astype(np.float64)
    rgb = np.stack([vertex[k] for k in ("red", "green", "blue")], 1).astype(np.uint8)
    return xyz, rgb, ply


def read_meta(path: Path, scene_id: str) -> dict[str, str]:
    """``<scene>.txt``: ``key = value`` lines (sceneType may contain spaces)."""
    meta = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


def axis_alignment(meta: dict[str, str], path: Path, scene_id: str) -> np.ndarray:
    """The scan's 4x4 ``axisAlignment``; absent (test scans) or malformed is an error."""
    if "axisAlignment" not in meta:
        raise DatasetError(
            "align=True but the scene has no axisAlignment (test scans have none)",
            file=path,
            scene=scene_id,
            fix="load test scans with align=False",
        )
    try:
        A = np.array([float(v) for v in meta["axisAlignment"].split()], dtype=np.float64)
        return A.reshape(4, 4)
    except ValueError as e:
        raise DatasetError(
            f"axisAlignment is not 16 numbers ({e})",
            file=path,
            scene=scene_id,
            fix="restore the scene's .txt from the dataset",
        ) from e


def aligned(
    xyz: np.ndarray, frames: list[Frame], meta: dict[str, str], meta_path: Path, scene_id: str
) -> tuple[np.ndarray, list[Frame]]:
    """Points and frames moved by the scan's ``axisAlignment`` (one transform for both)."""
    A = axis_alignment(meta, need_file(meta_path, scene_id, "download the scene's .txt"), scene_id)
    return xyz @ A[:3, :3].T + A[:3, 3], [replace(f, c2w=A @ f.c2w) for f in frames]
