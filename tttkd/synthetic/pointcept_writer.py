"""Write synthetic rooms in Pointcept's processed layout (``<root>/<split>/<scene>/*.npy``).

Names and dtypes follow Pointcept's preprocessing: ``coord`` float32, ``color`` uint8,
``normal`` float32, and for ScanNet ``segment20`` int64 and ``instance`` int64, otherwise
``segment`` int16 (shape (N, 1) for S3DIS, as its script writes it); labels are train ids of
the label set, -1 where a class is not in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tttkd.core import get_label_set
from tttkd.synthetic.defaults import NUM_SCENES
from tttkd.synthetic.domain import SOURCE, Domain
from tttkd.synthetic.room import Room, make_room, sample_points


@dataclass
class PointceptScene:
    scene_id: str
    room: Room
    xyz: np.ndarray  # (N, 3) float32, as written
    rgb: np.ndarray  # (N, 3) uint8, as written
    label: np.ndarray  # (N,) int16 train ids, -1 ignore
    box: np.ndarray  # (N,) int32 index into room.boxes


@dataclass
class PointceptTruth:
    root: Path
    label_set: str
    scenes: dict[str, PointceptScene] = field(default_factory=dict)


def write_pointcept_dataset(
    root: str | Path,
    num_scenes: int = NUM_SCENES,
    *,
    seed: int = 0,
    domain: Domain = SOURCE,
    split: str = "train",
    label_set: str = "scannet20",
    segment_name: str | None = None,
    spacing: float | None = None,
) -> PointceptTruth:
    """``num_scenes`` rooms under ``root/<split>/scene%04d_00/``. ``segment_name`` defaults to
    ``segment20`` for scannet20 and ``segment`` otherwise (Pointcept's choice). The layout has
    no images, so there is no ``views`` or ``image_size``."""
    root = Path(root)
    ls = get_label_set(label_set)
    seg_name = segment_name or ("segment20" if label_set == "scannet20" else "segment")
    truth = PointceptTruth(root=root, label_set=label_set)
    rng = np.random.default_rng(seed)
    for i in range(num_scenes):
        room = make_room(int(rng.integers(1 << 31)), name=f"scene{i:04d}_00")
        xyz, rgb, box = sample_points(room, domain.spacing if spacing is None else spacing, seed=i)
        rgb = domain.point_colors(rgb, seed=seed + i)
        lut = np.array(
            [ls.index(b.class_name) if b.class_name in ls.class_names else -1 for b in room.boxes],
            dtype=np.int16,
        )
        label = lut[box]
        folder = root / split / room.name
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "coord.npy", xyz.astype(np.float32))
        np.save(folder / "color.npy", rgb.astype(np.uint8))
        np.save(folder / "normal.npy", _normals(room, xyz, box))
        if seg_name == "segment20":
            np.save(folder / "segment20.npy", label.astype(np.int64))
            inst = np.array([b.instance for b in room.boxes], dtype=np.int64)[box]
            np.save(folder / "instance.npy", inst)
        else:  # Pointcept's S3DIS script stacks per-object (n, 1) arrays: labels are (N, 1)
            seg = label[:, None] if label_set == "s3dis13" else label
            np.save(folder / f"{seg_name}.npy", seg.astype(np.int16))
        sid = f"{split}/{room.name}"
        truth.scenes[sid] = PointceptScene(sid, room, xyz, rgb, label, box)
    return truth


def _normals(room: Room, xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Outward normal of the box face each point lies on (the nearest of its six planes)."""
    lo = np.array([b.lo for b in room.boxes])[box]
    hi = np.array([b.hi for b in room.boxes])[box]
    p = xyz.astype(np.float64)
    dist = np.concatenate([np.abs(p - lo), np.abs(p - hi)], axis=1)
    k = dist.argmin(axis=1)
    out = np.zeros_like(p)
    out[np.arange(len(p)), k % 3] = np.where(k < 3, -1.0, 1.0)
    return out.astype(np.float32)
