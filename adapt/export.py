"""Optional per-scene prediction files: full-resolution labels (.npy) and a coloured PLY.

``predictions/<method>/<scene>.npy``: int16 label per original point, in the CHECKPOINT's
label set (what the network predicts; -1 only for points without a voxel).
``predictions/<method>/<scene>.ply``: the cached points (one per voxel; the cache keeps no
full-resolution coordinates) coloured by predicted class with the label set's palette.
Scene ids may contain "/" (S3DIS): file names use the cache's reversible escaping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tttkd.adapt.scenes import SceneData
from tttkd.pipeline.cache import encode_scene_id

__all__ = ["prediction_path", "save_prediction", "write_ply"]


def prediction_path(out: Path, method: str, scene_id: str, suffix: str = ".npy") -> Path:
    return Path(out) / "predictions" / method / (encode_scene_id(scene_id) + suffix)


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray, label: np.ndarray) -> None:
    """Binary little-endian PLY with x, y, z, red, green, blue, label."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(
        len(xyz),
        dtype=[
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("label", "i2"),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vertex["label"] = label
    PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(path))


def save_prediction(
    out: Path,
    method: str,
    scene: SceneData,
    pred_full: np.ndarray,
    *,
    ply: bool,
    palette: np.ndarray,
) -> Path:
    """Write ``pred_full`` (and, with ``ply``, the coloured voxel points); returns the .npy."""
    path = prediction_path(out, method, scene.scene_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, pred_full.astype(np.int16))
    if ply:
        rec = scene.record
        # the label of a voxel = the label of any of its points; voxel_of_point gives one
        per_voxel = np.full(rec.num_points, -1, dtype=np.int64)
        vop = rec.voxel_of_point.astype(np.int64)
        ok = vop >= 0
        per_voxel[vop[ok]] = pred_full[ok]
        colours = palette[np.where(per_voxel >= 0, per_voxel, len(palette) - 1)]
        write_ply(prediction_path(out, method, scene.scene_id, ".ply"), rec.xyz, colours, per_voxel)
    return path
