"""Point-pixel correspondences: which voxel points each image sees, and where.

A pair (point p, image i) is valid when p projects (with the image's K and camera-to-world
pose, OpenCV axes; the one recipe of ``scene.project`` and FORMATS.md section 0)

1. in front of the camera: ``z > 1e-6`` (camera z-depth, metres);
2. inside the colour image: ``-0.5 <= u < W - 0.5`` and ``-0.5 <= v < H - 0.5``, i.e. the
   nearest pixel ``(floor(v + 0.5), floor(u + 0.5))`` exists (pixel centres at integers);
3. not occluded:
   * with a depth image: the point's depth pixel is found by projecting with the depth
     image's own intrinsics (``Frame.depth_intrinsics``) and rounding; the sensor depth ``D``
     there must be valid (> 0) and ``|D - z| <= abs_tol + rel_tol * D``. A missing depth
     value means "cannot tell", and the pair is dropped (conservative, as OpenScene).
   * without depth: a z-buffer over the points themselves, on a coarse pixel grid whose cell
     (``zbuffer_cell_px``, default automatic: 1.5 x the pixel footprint of one point spacing
     at the 5th-percentile depth, so a near surface leaves no holes) keeps the nearest depth
     ``Z``; the point must satisfy ``z <= Z + abs_tol + rel_tol * Z``.

Default tolerances: ``abs_tol = 0.05 m``, ``rel_tol = 0.10``. OpenScene uses a purely
relative ``0.25 * D`` on ScanNet at 320x240 and ``0.02 * D`` on Matterport at 640x512
(``fusion_util.py``). Ours sits between: the relative term absorbs depth noise that grows
with distance (ScanNet's structured light), the absolute term covers the 4 cm voxel (a
representative is up to ~3.5 cm from the surface sample its pixel sees) and rounding to
the depth pixel at grazing angles at short range. Occluders in rooms are tens of cm in
front of what they hide, which both settings reject.

Output is CSR grouped by image: ``point`` (int32), ``image`` (int16), ``uv`` (float32,
continuous, in FEATURE-GRID coordinates if a grid is given: cell (row j, col i) has its
centre at (i, j); ``uv_feat = (uv_pix + 0.5) * grid / size - 0.5`` per axis), ``offsets``
(int64 [I + 1]). Within an image, points are in increasing index order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_Z_MIN = 1e-6


@dataclass(frozen=True)
class CorrespondConfig:
    """Visibility tolerances (recorded in the cache options: they change its content)."""

    depth_abs_tol: float = 0.05  # metres
    depth_rel_tol: float = 0.10  # fraction of the reference depth
    zbuffer_cell_px: float | None = None  # None: automatic, see the module docstring
    point_spacing: float = 0.04  # metres between neighbouring points (the voxel size)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class View:
    """What correspondence needs of one frame (arrays already loaded)."""

    K: np.ndarray  # (3, 3) at the colour resolution
    c2w: np.ndarray  # (4, 4) camera-to-world, OpenCV axes
    width: int  # colour image size
    height: int
    depth: np.ndarray | None = None  # float32 metres (H_d, W_d), 0 = missing
    depth_K: np.ndarray | None = None  # (3, 3) at the depth resolution; None = K rescaled


@dataclass(frozen=True)
class Correspondences:
    point: np.ndarray  # int32 [M]
    image: np.ndarray  # int16 [M]
    uv: np.ndarray  # float32 [M, 2] (x, y), pixels or feature-grid cells
    offsets: np.ndarray  # int64 [I + 1]

    @property
    def num_pairs(self) -> int:
        return len(self.point)

    def per_image(self) -> np.ndarray:
        return np.diff(self.offsets)


def pixel_to_grid(uv: np.ndarray, size_wh: tuple[int, int], grid_wh: tuple[int, int]) -> np.ndarray:
    """Continuous pixel coords -> feature-grid coords (both with centres at integers)."""
    scale = np.array([grid_wh[0] / size_wh[0], grid_wh[1] / size_wh[1]], dtype=np.float64)
    return (np.asarray(uv, dtype=np.float64) + 0.5) * scale - 0.5


def _depth_intrinsics(view: View) -> np.ndarray:
    if view.depth_K is not None:
        return np.asarray(view.depth_K, dtype=np.float64)
    from tttkd.core import scale_intrinsics

    hd, wd = view.depth.shape
    return scale_intrinsics(view.K, view.width, view.height, wd, hd)


def _world_to_camera(view: View) -> np.ndarray:
    c2w = np.asarray(view.c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise ValueError("camera pose must be a finite 4x4 matrix")
    return np.linalg.inv(c2w)


def _points_t(xyz: np.ndarray) -> np.ndarray:
    """float32 (3, N) contiguous: every per-view product then streams three rows."""
    return np.ascontiguousarray(np.asarray(xyz, dtype=np.float32).T)


def _pinhole(K: np.ndarray) -> np.ndarray:
    """K without skew: the project's one projection recipe (``scene.project``)."""
    K = np.asarray(K, dtype=np.float64)
    return np.array([[K[0, 0], 0.0, K[0, 2]], [0.0, K[1, 1], K[1, 2]], [0.0, 0.0, 1.0]])


def projected_coordinates(pts_t: np.ndarray, view: View) -> np.ndarray:
    """float32 (3, N) rows ``(u z, v z, z)``: pixel coordinates before the division by z.

    One 3x4 product per view (K folded into the pose); float32 is ample (1e-6 m at 10 m).
    One view at a time on purpose: its few arrays of N floats stay in cache through the
    tests below (one big product for all views measured 3x slower).
    """
    P = _pinhole(view.K) @ _world_to_camera(view)[:3]
    return P[:, :3].astype(np.float32) @ pts_t + P[:, 3:4].astype(np.float32)


def _view_pairs(
    uz: np.ndarray, vz: np.ndarray, z: np.ndarray, view: View, cfg: CorrespondConfig
) -> tuple[np.ndarray, np.ndarray]:
    # the in-image test without division (z > 0), then one compaction, then divide
    ok = z > _Z_MIN
    ok &= uz >= -0.5 * z
    ok &= uz < (view.width - 0.5) * z
    ok &= vz >= -0.5 * z
    ok &= vz < (view.height - 0.5) * z
    idx = np.flatnonzero(ok)
    z = z[idx]
    u, v = uz[idx] / z, vz[idx] / z
    # the same test after rounding, so every kept point has its nearest pixel in the image
    inside = (u >= -0.5) & (u < view.width - 0.5) & (v >= -0.5) & (v < view.height - 0.5)
    if view.depth is not None:
        keep = inside & _depth_test(view, u, v, z, cfg)
    else:
        keep = inside & _zbuffer_test(u, v, z, view, cfg)
    return idx[keep], np.stack([u[keep], v[keep]], axis=1)


def frame_correspondences(
    xyz: np.ndarray, view: View, cfg: CorrespondConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Visible points of one view: (indices int64 [m] ascending, uv pixels float32 [m, 2])."""
    proj = projected_coordinates(_points_t(xyz), view)
    return _view_pairs(proj[0], proj[1], proj[2], view, cfg or CorrespondConfig())


def _depth_test(
    view: View, u: np.ndarray, v: np.ndarray, z: np.ndarray, cfg: CorrespondConfig
) -> np.ndarray:
    depth = np.asarray(view.depth, dtype=np.float32)
    hd, wd = depth.shape
    K, Kd = _pinhole(view.K), _pinhole(_depth_intrinsics(view))
    # same ray, depth camera: pixel = Kd K^-1 (u, v, 1), then + 0.5 and floor (nearest pixel)
    au, av = Kd[0, 0] / K[0, 0], Kd[1, 1] / K[1, 1]
    fu = au * u + float(Kd[0, 2] - au * K[0, 2] + 0.5)
    fv = av * v + float(Kd[1, 2] - av * K[1, 2] + 0.5)
    inside = (fu >= 0) & (fu < wd) & (fv >= 0) & (fv < hd)
    flat = np.where(inside, fv.astype(np.int64) * wd + fu.astype(np.int64), 0)  # trunc = floor
    d = depth.reshape(-1)[flat]
    tol = np.float32(cfg.depth_abs_tol) + np.float32(cfg.depth_rel_tol) * d
    return inside & (d > 0) & (np.abs(d - z) <= tol)


def zbuffer_cell_size(z: np.ndarray, fx: float, cfg: CorrespondConfig, long_side: int) -> float:
    """Cell size in pixels for the points-only z-buffer (see the module docstring)."""
    if cfg.zbuffer_cell_px is not None:
        return max(1.0, float(cfg.zbuffer_cell_px))
    if len(z) == 0:
        return 1.0
    near = float(np.percentile(z, 5))
    cell = 1.5 * abs(fx) * cfg.point_spacing / max(near, _Z_MIN)
    return float(np.clip(cell, 1.0, max(1.0, long_side / 8)))


def _zbuffer_test(
    u: np.ndarray, v: np.ndarray, z: np.ndarray, view: View, cfg: CorrespondConfig
) -> np.ndarray:
    if len(z) == 0:
        return np.zeros(0, dtype=bool)
    c = zbuffer_cell_size(z, float(view.K[0, 0]), cfg, max(view.width, view.height))
    ncu = int(np.ceil(view.width / c))
    ncv = int(np.ceil(view.height / c))
    cu = np.minimum(((u + 0.5) / c).astype(np.int64), ncu - 1)
    cv = np.minimum(((v + 0.5) / c).astype(np.int64), ncv - 1)
    cell = cv * ncu + cu
    zbuf = np.full(ncu * ncv, np.inf)
    np.minimum.at(zbuf, cell, z)
    near = zbuf[cell]
    return z <= near + cfg.depth_abs_tol + cfg.depth_rel_tol * near


def correspond(
    xyz: np.ndarray,
    views: list[View],
    cfg: CorrespondConfig | None = None,
    grid_wh: tuple[int, int] | None = None,
) -> Correspondences:
    """All views' visible pairs in CSR form; ``uv`` in feature-grid coords if ``grid_wh``."""
    if len(views) > np.iinfo(np.int16).max:
        raise ValueError(f"{len(views)} images exceed the int16 image index of the cache")
    if len(xyz) > np.iinfo(np.int32).max:
        raise ValueError(f"{len(xyz)} points exceed the int32 point index of the cache")
    cfg = cfg or CorrespondConfig()
    points, uvs = [], []
    pts_t = _points_t(xyz)
    for view in views:
        proj = projected_coordinates(pts_t, view)
        idx, uv = _view_pairs(proj[0], proj[1], proj[2], view, cfg)
        if grid_wh is not None:
            uv = pixel_to_grid(uv, (view.width, view.height), grid_wh)
        points.append(idx)
        uvs.append(uv)
    counts = np.array([len(p) for p in points], dtype=np.int64)
    offsets = np.zeros(len(views) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if views:
        point = np.concatenate(points).astype(np.int32)
        uv = np.concatenate(uvs).astype(np.float32).reshape(-1, 2)
    else:
        point, uv = np.zeros(0, dtype=np.int32), np.zeros((0, 2), dtype=np.float32)
    image = np.repeat(np.arange(len(views), dtype=np.int16), counts)
    return Correspondences(point=point, image=image, uv=uv, offsets=offsets)
