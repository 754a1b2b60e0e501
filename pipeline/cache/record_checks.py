"""Checks of a ``SceneRecord`` against the cache's contract (dtypes, shapes, index ranges,
CSR offsets, values).

``normalized`` casts a record to the stored dtypes before a write (refusing lossy casts);
``record_problems`` lists everything inconsistent, and is used both before writing (refuse bad
data) and by ``Cache.verify`` (find damage on disk).
"""

from __future__ import annotations

import numpy as np

from tttkd.pipeline.cache.records import CacheError, SceneRecord

# uv is in feature-grid coordinates with cell centres at integers, so a point inside the image
# lies in [-0.5, w - 0.5]; verify accepts [-UV_MARGIN, w - 1 + UV_MARGIN] (also covers the
# corner convention [0, w]) and flags anything outside as a correspondence bug.
UV_MARGIN = 1.0

# name -> (dtype, trailing shape); the leading dimension is checked by record_problems
ARRAY_DTYPES: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "xyz": (np.dtype(np.float32), (3,)),
    "rgb": (np.dtype(np.uint8), (3,)),
    "label": (np.dtype(np.int16), ()),
    "voxel_of_point": (np.dtype(np.int32), ()),
    "full_label": (np.dtype(np.int16), ()),
    "K": (np.dtype(np.float32), (3, 3)),
    "c2w": (np.dtype(np.float32), (4, 4)),
    "image_size": (np.dtype(np.int32), (2,)),
    "corr_point": (np.dtype(np.int32), ()),
    "corr_image": (np.dtype(np.int16), ()),
    "corr_uv": (np.dtype(np.float32), (2,)),
    "corr_offsets": (np.dtype(np.int64), ()),
}


def normalized(rec: SceneRecord) -> SceneRecord:
    """A copy with the canonical dtypes; raises CacheError when a cast would lose values."""
    problems, out = [], {}
    for name, (dtype, _) in ARRAY_DTYPES.items():
        a = np.asarray(getattr(rec, name))
        if a.dtype == dtype:
            out[name] = a
        elif dtype.kind in "iu" and a.dtype.kind in "iub":
            info = np.iinfo(dtype)
            if a.size and (a.min() < info.min or a.max() > info.max):
                problems.append(f"{name}: values outside {dtype} range")
            out[name] = a.astype(dtype)
        elif dtype.kind == "f" and a.dtype.kind in "fiu":
            out[name] = a.astype(dtype)
        else:
            problems.append(f"{name}: dtype {a.dtype} cannot be stored as {dtype}")
    feats = rec.features
    if feats is not None:
        feats = np.asarray(feats)
        if feats.dtype not in (np.float16, np.float32, np.float64):
            problems.append(f"features: dtype {feats.dtype} is not floating point")
    if problems:
        raise CacheError(
            "; ".join(problems), scene=rec.scene_id, fix="produce arrays of the documented dtypes"
        )
    return SceneRecord(
        scene_id=rec.scene_id,
        split=rec.split,
        features=feats,
        image_names=[str(n) for n in rec.image_names],
        attrs=rec.attrs,
        **out,
    )


def record_problems(
    rec: SceneRecord,
    *,
    num_classes: int | None = None,
    ignore_index: int = -1,
    grid_hw: tuple[int, int] | None = None,
) -> list[str]:
    """Everything inconsistent in ``rec`` (dtypes, shapes, index ranges, CSR offsets, values).

    ``grid_hw`` is the feature grid used to check ``corr_uv`` when ``rec.features`` is None;
    feature finiteness is checked only when features are present.
    """
    p = _identity_problems(rec) + _shape_problems(rec)
    if p:
        return p  # the value checks below assume the shapes
    p += _image_name_problems(rec)
    p += _point_problems(rec, num_classes, ignore_index)
    p += _camera_problems(rec)
    p += _corr_problems(rec)
    feature_problems, grid_hw = _feature_problems(rec, grid_hw)
    return p + feature_problems + _uv_problems(rec.corr_uv, grid_hw)


def _identity_problems(rec: SceneRecord) -> list[str]:
    p = []
    if not isinstance(rec.scene_id, str) or not rec.scene_id:
        p.append(f"scene_id must be a non-empty string, got {rec.scene_id!r}")
    if rec.split is not None and not isinstance(rec.split, str):
        p.append(f"split must be a string or None, got {rec.split!r}")
    return p


def _shape_problems(rec: SceneRecord) -> list[str]:
    """Each array's dtype and shape (leading dimension: N points, P full, I images, M pairs)."""
    n, npts, ni, m = len(rec.xyz), len(rec.voxel_of_point), len(rec.K), len(rec.corr_point)
    lead = {
        "xyz": n,
        "rgb": n,
        "label": n,
        "voxel_of_point": npts,
        "full_label": npts,
        "K": ni,
        "c2w": ni,
        "image_size": ni,
        "corr_point": m,
        "corr_image": m,
        "corr_uv": m,
        "corr_offsets": ni + 1,
    }
    p = []
    for name, (dtype, tail) in ARRAY_DTYPES.items():
        a = getattr(rec, name)
        want = (lead[name], *tail)
        if a.dtype != dtype:
            p.append(f"{name}: dtype {a.dtype}, expected {dtype}")
        if tuple(a.shape) != want:
            p.append(f"{name}: shape {tuple(a.shape)}, expected {want}")
    return p


def _image_name_problems(rec: SceneRecord) -> list[str]:
    p, ni = [], len(rec.K)
    if len(rec.image_names) != ni:
        p.append(f"image_names: {len(rec.image_names)} names for {ni} images")
    if any((not isinstance(s, str)) or "\x00" in s for s in rec.image_names):
        p.append("image_names: every name must be a str without NUL characters")
    return p


def _point_problems(rec: SceneRecord, num_classes: int | None, ignore_index: int) -> list[str]:
    p: list[str] = []
    if not np.isfinite(rec.xyz).all():
        p.append("xyz: non-finite coordinates")
    for name in ("label", "full_label"):
        lab = getattr(rec, name)
        out_of_range = (lab < 0) | (lab >= num_classes) if num_classes else lab < 0
        bad = out_of_range & (lab != ignore_index)
        if bad.any():
            p.append(
                f"{name}: {int(bad.sum())} labels outside 0..{(num_classes or 1) - 1} and not "
                f"the ignore index {ignore_index}"
            )
    _range(p, "voxel_of_point", rec.voxel_of_point, len(rec.xyz))
    return p


def _camera_problems(rec: SceneRecord) -> list[str]:
    p = []
    if not (np.isfinite(rec.K).all() and np.isfinite(rec.c2w).all()):
        p.append("K/c2w: non-finite camera values")
    elif len(rec.K) and not np.allclose(rec.c2w[:, 3], [0, 0, 0, 1], atol=1e-5):
        p.append("c2w: last row is not [0, 0, 0, 1]")
    if (rec.image_size <= 0).any():
        p.append("image_size: sizes must be positive")
    return p


def _corr_problems(rec: SceneRecord) -> list[str]:
    """The CSR offsets, the pairs' grouping by image, and their index ranges."""
    p: list[str] = []
    ni, m, off = len(rec.K), len(rec.corr_point), rec.corr_offsets
    if off[0] != 0 or off[-1] != m or (np.diff(off) < 0).any():
        p.append(f"corr_offsets: must rise monotonically from 0 to {m} (got {off[0]}..{off[-1]})")
    elif not np.array_equal(rec.corr_image, np.repeat(np.arange(ni), np.diff(off))):
        p.append("corr_image: does not match corr_offsets (pairs must be grouped by image)")
    _range(p, "corr_point", rec.corr_point, len(rec.xyz))
    _range(p, "corr_image", rec.corr_image, ni)
    return p


def _feature_problems(
    rec: SceneRecord, grid_hw: tuple[int, int] | None
) -> tuple[list[str], tuple[int, int] | None]:
    """The features' problems, and the grid ``corr_uv`` is checked against (the features'
    own when they are present and well shaped, else ``grid_hw``)."""
    p, feats, ni = [], rec.features, len(rec.K)
    if feats is not None:
        if feats.ndim != 4 or feats.shape[0] != ni:
            p.append(f"features: shape {feats.shape}, expected [{ni}, h, w, D]")
        else:
            grid_hw = feats.shape[1:3]
            if not all(np.isfinite(feats[i]).all() for i in range(ni)):
                p.append("features: non-finite values")
    return p, grid_hw


def _uv_problems(uv: np.ndarray, grid_hw: tuple[int, int] | None) -> list[str]:
    if not np.isfinite(uv).all():
        return ["corr_uv: non-finite coordinates"]
    if grid_hw is None or not len(uv):
        return []
    h, w = grid_hw
    lo, hi = -UV_MARGIN, np.array([w - 1 + UV_MARGIN, h - 1 + UV_MARGIN])
    out = ((uv < lo) | (uv > hi)).any(axis=1)
    if out.any():
        return [
            f"corr_uv: {int(out.sum())} coordinates outside the {h}x{w} feature grid "
            "(uv must be feature-grid coordinates, not pixels)"
        ]
    return []


def _range(p: list[str], name: str, a: np.ndarray, n: int) -> None:
    if a.size and (a.min() < 0 or a.max() >= n):
        p.append(f"{name}: indices must lie in 0..{n - 1}, got {a.min()}..{a.max()}")
