"""Grid voxelization: one representative point per occupied voxel, plus the inverse map.

Why this shape: the 3D network sees one point per voxel (4 cm by default), but evaluation is
on the full-resolution cloud, so every original point keeps the index of its voxel
(``voxel_of_point``) and predictions are carried back by a gather.

Choices (documented once, here):

* Voxel of a point: ``floor(xyz / voxel_size)`` computed in float64 (no origin shift, so the
  same point always falls in the same voxel whatever else is in the scene).
* Representative: the point nearest the voxel centre, by the float64 squared distance in
  voxel units, ``sum((xyz / voxel_size - grid - 0.5) ** 2)``; ties (e.g. duplicate points)
  go to the lowest original index. Its xyz and rgb are kept unchanged (no averaging), so a
  voxel point is a real measurement.
* Label: by default the representative's own label (consistent with its position and colour).
  ``label_mode="majority"`` instead takes the most frequent label among the voxel's labelled
  points (ties -> smaller train id; a voxel whose points are all ignored stays ignored).
* Voxel order: sorted by the voxel's linear grid key (x-major), i.e. deterministic and
  spatially coherent.

Two grids (cache schema 2): the cache keeps the scene's points sub-sampled on a FINE grid
(``point_voxel_size``, by default the network voxel / :data:`POINT_GRID_DIVISOR`, i.e. 1 cm
for 4 cm voxels; :func:`point_grid_size`), and every consumer voxelizes those points at the
network's ``voxel_size`` AFTER its geometric augmentation (``model.data.to_sample``). Why:
a rotated lattice of one point per network voxel re-binned at the same size loses cells (a
45 degree view scaled by 1.1 kept ~64% of the voxels the dense cloud gives); the fine points
keep >= 97% (measured on a synthetic room of 1 cm surface samples, see
``tests/model/train/test_dense_views.py``). A divisor of 3 gave ~96% at 45 degrees and 4 gave
~99%; an integer divisor nests the fine cells in the network's, so an unrotated scene gives
exactly the voxels of its full-resolution cloud.

Speed: one integer key per point and one sort (``np.unique(grid, axis=0)`` sorts rows
lexicographically through a structured view and is several times slower; see
``benchmarks/bench_prep.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

IGNORE_INDEX = -1
LabelMode = Literal["representative", "majority"]
POINT_GRID_DIVISOR = 4  # stored-point grid = network voxel / this (1 cm for 4 cm voxels)


def point_grid_size(voxel_size: float, point_voxel_size: float | None = None) -> float:
    """The cache's point grid: ``point_voxel_size``, or ``voxel_size / POINT_GRID_DIVISOR``.

    Checked here once: finer than or equal to the network voxel (a coarser point grid would
    leave holes in every view)."""
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    size = voxel_size / POINT_GRID_DIVISOR if point_voxel_size is None else point_voxel_size
    if not 0 < size <= voxel_size * (1 + 1e-9):
        raise ValueError(
            f"point_voxel_size must be > 0 and <= voxel_size ({voxel_size}), got {size}"
        )
    return float(size)


@dataclass(frozen=True)
class Voxelization:
    """Result of :func:`voxelize` (all indices refer to the input point order)."""

    keep: np.ndarray  # int64 [V]: index of each voxel's representative point
    voxel_of_point: np.ndarray  # int32 [P]: voxel index of every input point
    grid_coord: np.ndarray  # int32 [V, 3]: integer voxel coordinates floor(xyz / voxel_size)
    counts: np.ndarray  # int32 [V]: input points per voxel
    label: np.ndarray | None  # int16 [V] per ``label_mode``, or None when no labels were given

    @property
    def num_voxels(self) -> int:
        return len(self.keep)


def _check_xyz(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (P, 3), got {xyz.shape}")
    if len(xyz) and not np.isfinite(xyz).all():
        raise ValueError("xyz contains NaN or inf; drop those points before voxelizing")
    return xyz


def _scaled_columns(xyz: np.ndarray, voxel_size: float) -> list[np.ndarray]:
    # one column at a time: (P, 3) row-wise arithmetic is several times slower in numpy
    return [xyz[:, a].astype(np.float64) / float(voxel_size) for a in range(3)]


def _grid_columns(xyz: np.ndarray, voxel_size: float) -> list[np.ndarray]:
    return [np.floor(q).astype(np.int64) for q in _scaled_columns(xyz, voxel_size)]


def grid_coordinates(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """int64 [P, 3] voxel coordinates, ``floor(xyz / voxel_size)`` in float64."""
    xyz = _check_xyz(xyz, voxel_size)
    return np.stack(_grid_columns(xyz, voxel_size), axis=1)


def _linear_keys(cols: list[np.ndarray]) -> np.ndarray:
    """One int64 key per point, ordered like the rows' lexicographic (x, y, z) order."""
    lo = [int(c.min()) for c in cols]
    dims = [int(c.max()) - l + 1 for c, l in zip(cols, lo)]
    if float(dims[0]) * float(dims[1]) * float(dims[2]) >= 2.0**62:
        raise ValueError(
            f"point cloud spans {dims} voxels per axis, too many for one int64 key; "
            "use a larger voxel size or crop the scene"
        )
    return ((cols[0] - lo[0]) * dims[1] + (cols[1] - lo[1])) * dims[2] + (cols[2] - lo[2])


def _empty(label: np.ndarray | None) -> Voxelization:
    return Voxelization(
        keep=np.zeros(0, dtype=np.int64),
        voxel_of_point=np.zeros(0, dtype=np.int32),
        grid_coord=np.zeros((0, 3), dtype=np.int32),
        counts=np.zeros(0, dtype=np.int32),
        label=None if label is None else np.zeros(0, dtype=np.int16),
    )


@dataclass(frozen=True)
class _Partition:
    """Points grouped by voxel: one sort of the keys, no per-voxel Python loop."""

    order: np.ndarray  # int64 [P]: points sorted by voxel key
    starts: np.ndarray  # int64 [V]: where each voxel's run starts in ``order``
    voxel_sorted: np.ndarray  # int32 [P]: voxel id of each sorted point
    voxel_of_point: np.ndarray  # int32 [P]: voxel id of each input point
    counts: np.ndarray  # int32 [V]


def _partition(key: np.ndarray) -> _Partition:
    p = len(key)
    order = np.argsort(key)  # any sort: ties inside a voxel are resolved explicitly later
    sorted_key = key[order]
    is_start = np.empty(p, dtype=bool)
    is_start[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    voxel_sorted = np.cumsum(is_start, dtype=np.int32) - 1
    voxel_of_point = np.empty(p, dtype=np.int32)
    voxel_of_point[order] = voxel_sorted
    counts = np.diff(np.append(starts, p)).astype(np.int32)
    return _Partition(order, starts, voxel_sorted, voxel_of_point, counts)


def _nearest_to_centre(
    scaled: list[np.ndarray], cols: list[np.ndarray], part: _Partition
) -> np.ndarray:
    """Per voxel, the point with the smallest squared distance to the voxel centre (voxel
    units), the lowest index among equals: independent of the sort's tie order."""
    p = len(part.order)
    d2 = np.zeros(p, dtype=np.float64)
    for q, g in zip(scaled, cols):
        d = q - g - 0.5
        d2 += d * d
    d2 = d2[part.order]
    d2_min = np.minimum.reduceat(d2, part.starts)
    cand = np.where(d2 == d2_min[part.voxel_sorted], part.order, p)
    return np.minimum.reduceat(cand, part.starts).astype(np.int64)


def voxelize(
    xyz: np.ndarray,
    voxel_size: float,
    *,
    label: np.ndarray | None = None,
    label_mode: LabelMode = "representative",
) -> Voxelization:
    """Keep the point nearest each voxel centre and map every point to its voxel."""
    xyz = _check_xyz(xyz, voxel_size)
    p = len(xyz)
    if label is not None and len(label) != p:
        raise ValueError(f"label has {len(label)} entries for {p} points")
    if label_mode not in ("representative", "majority"):
        raise ValueError(f"label_mode must be 'representative' or 'majority', not {label_mode!r}")
    if p == 0:
        return _empty(label)
    scaled = _scaled_columns(xyz, voxel_size)
    cols = [np.floor(q).astype(np.int64) for q in scaled]
    part = _partition(_linear_keys(cols))
    keep = _nearest_to_centre(scaled, cols, part)
    vox_label = None
    if label is not None:
        label = np.asarray(label)
        if label_mode == "representative":
            vox_label = label[keep].astype(np.int16)
        else:
            vox_label = _majority_label(label, part.voxel_of_point, len(keep))
    return Voxelization(
        keep=keep,
        voxel_of_point=part.voxel_of_point,
        grid_coord=np.stack([c[keep] for c in cols], axis=1).astype(np.int32),
        counts=part.counts,
        label=vox_label,
    )


def _majority_label(label: np.ndarray, voxel_of_point: np.ndarray, num_voxels: int) -> np.ndarray:
    lab = label.astype(np.int64)
    valid = lab != IGNORE_INDEX
    if (lab[valid] < 0).any():
        raise ValueError(f"labels must be >= 0 or {IGNORE_INDEX} (ignore)")
    out = np.full(num_voxels, IGNORE_INDEX, dtype=np.int16)
    if not valid.any():
        return out
    n_cls = int(lab[valid].max()) + 1
    vox = voxel_of_point[valid].astype(np.int64)
    # count (voxel, class) pairs with one sort of a combined key; memory O(P), not O(V * C)
    pair = vox * n_cls + lab[valid]
    uniq, cnt = np.unique(pair, return_counts=True)
    pv, pc = uniq // n_cls, uniq % n_cls
    # per voxel: highest count, ties to the smaller class (pairs are sorted by class already)
    order = np.lexsort((pc, -cnt, pv))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pv[order][1:] != pv[order][:-1]
    win = order[first]
    out[pv[win]] = pc[win].astype(np.int16)
    return out


def voxelize_unique_baseline(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward reference: ``np.unique(grid, axis=0)``; first point per voxel.

    Kept for the benchmark and as a test oracle for the voxel partition.
    """
    grid = np.floor(np.asarray(xyz, dtype=np.float64) / float(voxel_size)).astype(np.int64)
    _, first, inverse = np.unique(grid, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)
