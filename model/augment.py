"""Training augmentations of supplementary G.1, carried to the point-pixel correspondences.

Why the correspondences survive: a pair says "point ``p`` is seen by image ``i`` at ``uv``";
``uv`` describes where the ORIGINAL measurement lies in the (untouched) image, so a geometric
transform of the 3D points leaves every pair as it is. Only operations that drop points
(crop, point cap) touch the pairs: they drop the pairs of dropped points and re-index the
rest (:meth:`PointSet.subset`). Mix3D concatenates two scenes with their images kept apart
(:func:`mix3d`).

Every random draw goes through the ``numpy.random.Generator`` passed in, so an item is a
pure function of ``(seed, epoch, index)`` whatever the DataLoader workers do. Magnitudes are
our choice (``AugmentConfig``); the paper lists only the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from tttkd.model.config import AugmentConfig

__all__ = [
    "PointSet",
    "augment",
    "bounds",
    "centre",
    "color_jitter",
    "elastic_distortion",
    "jitter",
    "mirror",
    "mix3d",
    "point_cap",
    "random_crop",
    "rgb_shift",
    "rotate_z",
    "scale",
    "translate",
]


@dataclass
class PointSet:
    """One (possibly mixed) scene on its way from the cache to a :class:`Sample`."""

    xyz: np.ndarray  # float64 [N, 3]
    rgb: np.ndarray  # float32 [N, 3], 0..255
    label: np.ndarray  # int64 [N], -1 = ignore
    corr_point: np.ndarray  # int64 [M], rows of xyz
    corr_image: np.ndarray  # int64 [M], index into maps
    corr_uv: np.ndarray  # float32 [M, 2], feature-grid (x, y)
    maps: list[np.ndarray] = field(default_factory=list)  # one [h, w, D] per image
    scene_id: str = ""

    @classmethod
    def points_only(
        cls, xyz: np.ndarray, rgb: np.ndarray, label: np.ndarray, scene_id: str = ""
    ) -> PointSet:
        """Points without image pairs (evaluation, TTT views, augmented views of adapt)."""
        return cls(
            xyz=np.asarray(xyz, dtype=np.float64),
            rgb=rgb.astype(np.float32),
            label=label.astype(np.int64),
            corr_point=np.zeros(0, np.int64),
            corr_image=np.zeros(0, np.int64),
            corr_uv=np.zeros((0, 2), np.float32),
            scene_id=scene_id,
        )

    @property
    def num_points(self) -> int:
        return len(self.xyz)

    def subset(self, keep: np.ndarray) -> PointSet:
        """Points where ``keep`` (bool mask or row indices); pairs of dropped points go and
        the others are re-indexed to the new rows. Images are kept (pairs may become 0)."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            rows = np.flatnonzero(keep)
        else:
            rows = np.unique(keep.astype(np.int64))
        new_row = np.full(self.num_points, -1, dtype=np.int64)
        new_row[rows] = np.arange(len(rows))
        mapped = new_row[self.corr_point]
        alive = mapped >= 0
        return replace(
            self,
            xyz=self.xyz[rows],
            rgb=self.rgb[rows],
            label=self.label[rows],
            corr_point=mapped[alive],
            corr_image=self.corr_image[alive],
            corr_uv=self.corr_uv[alive],
        )


# ---- geometry (pairs unchanged) ----------------------------------------------------------
def bounds(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz.min(0), xyz.max(0))`` of a non-empty ``[N, C]`` array, one column at a time.

    Exact (a minimum has no rounding), and on [N, 3] float64 points about 15x faster than
    numpy's axis-0 reduction, which several augmentations of every item called twice."""
    cols = range(xyz.shape[1])
    lo = np.array([xyz[:, k].min() for k in cols], dtype=xyz.dtype)
    hi = np.array([xyz[:, k].max() for k in cols], dtype=xyz.dtype)
    return lo, hi


def centre(ps: PointSet) -> PointSet:
    """X/Y centre of the bounding box to the origin, floor (min Z) to 0: rotations and Mix3D
    act about the scene's middle."""
    if ps.num_points == 0:
        return ps
    lo, hi = bounds(ps.xyz)
    shift = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    return replace(ps, xyz=ps.xyz - shift)


def rotate_z(ps: PointSet, angle: float) -> PointSet:
    """Rotation by ``angle`` radians about the up axis (+Z).

    Written per column, not as ``xyz @ R.T``: on 2 busy cores OpenBLAS's threaded [N, 3] x
    [3, 3] product took 80-190 ms per 150k-point view (2 ms this way); results agree to 1 ulp.
    """
    c, s = np.cos(angle), np.sin(angle)
    x, y = ps.xyz[:, 0], ps.xyz[:, 1]
    out = np.empty_like(ps.xyz)
    out[:, 0] = c * x - s * y
    out[:, 1] = s * x + c * y
    out[:, 2] = ps.xyz[:, 2]
    return replace(ps, xyz=out)


def mirror(ps: PointSet, flip_x: bool, flip_y: bool) -> PointSet:
    sign = np.array([-1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0])
    return replace(ps, xyz=ps.xyz * sign)


def scale(ps: PointSet, factor: float) -> PointSet:
    return replace(ps, xyz=ps.xyz * factor)


def translate(ps: PointSet, offset: np.ndarray) -> PointSet:
    return replace(ps, xyz=ps.xyz + np.asarray(offset, dtype=np.float64))


def jitter(ps: PointSet, rng: np.random.Generator, sigma: float, clip: float) -> PointSet:
    noise = np.clip(rng.normal(0.0, sigma, ps.xyz.shape), -clip, clip)
    return replace(ps, xyz=ps.xyz + noise)


def _blur(a: np.ndarray, axis: int, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur along one axis (zero outside), as a sum of shifted copies."""
    r = int(np.ceil(3 * sigma))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad)
    n = a.shape[axis]
    return sum(wk * np.take(p, np.arange(k, k + n), axis=axis) for k, wk in enumerate(w))


def _trilinear(grid: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``grid`` [X, Y, Z, C] sampled at fractional cell indices ``idx`` [N, 3] (inside).

    One flat index per point and a fixed offset per corner: the training views hold every
    stored (fine-grid) point, so this runs over 10-20x more points than voxels."""
    nx, ny, nz, c = grid.shape
    cols = [np.ascontiguousarray(grid[..., k]).ravel() for k in range(c)]  # 1-D gathers
    i0 = np.floor(idx).astype(np.int64)
    f = idx - i0
    base = (i0[:, 0] * ny + i0[:, 1]) * nz + i0[:, 2]
    weights = [(1.0 - f[:, a], f[:, a]) for a in range(3)]
    out = np.zeros((c, len(idx)))
    for bx in (0, 1):
        for by in (0, 1):
            wxy = weights[0][bx] * weights[1][by]
            for bz in (0, 1):
                w = wxy * weights[2][bz]
                corner = base + ((bx * ny + by) * nz + bz)
                for k in range(c):
                    out[k] += w * cols[k][corner]
    return out.T


def elastic_distortion(
    ps: PointSet, rng: np.random.Generator, granularity: float, magnitude: float
) -> PointSet:
    """Smooth random displacement field: white noise on a grid of ``granularity`` metres,
    Gaussian-blurred (sigma one cell), trilinearly interpolated, times ``magnitude``."""
    if ps.num_points == 0:
        return ps
    low, high = bounds(ps.xyz)
    lo = low - 2 * granularity
    n = np.ceil((high + 2 * granularity - lo) / granularity).astype(int) + 1
    noise = rng.standard_normal((*n, 3))
    for axis in range(3):
        noise = _blur(noise, axis)
    idx = np.clip((ps.xyz - lo) / granularity, 0, n - 1 - 1e-9)
    return replace(ps, xyz=ps.xyz + _trilinear(noise, idx) * magnitude)


# ---- point selection (pairs re-indexed) --------------------------------------------------
def random_crop(ps: PointSet, rng: np.random.Generator, min_fraction: float) -> PointSet:
    """Keep an axis-aligned X/Y box covering a random fraction in [min_fraction, 1] of each
    side of the scene's extent; a box that would keep < 10% of the points is not applied."""
    if ps.num_points == 0:
        return ps
    lo, hi = bounds(ps.xyz[:, :2])
    size = (hi - lo) * rng.uniform(min_fraction, 1.0, 2)
    start = lo + (hi - lo - size) * rng.uniform(0.0, 1.0, 2)
    inside = np.all((ps.xyz[:, :2] >= start) & (ps.xyz[:, :2] <= start + size), axis=1)
    if inside.sum() < max(1, ps.num_points // 10):
        return ps
    return ps.subset(inside)


def point_cap(ps: PointSet, rng: np.random.Generator, max_points: int) -> PointSet:
    """At most ``max_points``: the ones nearest a random point of the scene (memory bound)."""
    if max_points <= 0 or ps.num_points <= max_points:
        return ps
    c = ps.xyz[rng.integers(ps.num_points)]
    d2 = ((ps.xyz - c) ** 2).sum(1)
    return ps.subset(np.argpartition(d2, max_points - 1)[:max_points])


# ---- colour ------------------------------------------------------------------------------
def color_jitter(ps: PointSet, contrast: float, brightness: float) -> PointSet:
    """Contrast about the scene's mean colour, then an additive brightness (0..255 scale)."""
    mean = ps.rgb.mean(0, keepdims=True) if ps.num_points else 0.0
    rgb = (ps.rgb - mean) * contrast + mean + brightness * 255.0
    return replace(ps, rgb=np.clip(rgb, 0.0, 255.0).astype(np.float32))


def rgb_shift(ps: PointSet, shift: np.ndarray) -> PointSet:
    """Independent shift per channel (fractions of 255)."""
    rgb = ps.rgb + np.asarray(shift, dtype=np.float32) * 255.0
    return replace(ps, rgb=np.clip(rgb, 0.0, 255.0).astype(np.float32))


# ---- the pipeline ------------------------------------------------------------------------
def augment(ps: PointSet, rng: np.random.Generator, cfg: AugmentConfig) -> PointSet:
    """Centre, rotate, mirror, scale, elastic, crop, cap, translate, jitter, colour."""
    if not cfg.enabled:
        return ps
    ps = centre(ps)
    ps = rotate_z(ps, np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)))
    ps = mirror(ps, rng.random() < cfg.mirror_p, rng.random() < cfg.mirror_p)
    ps = scale(ps, rng.uniform(*cfg.scale))
    if rng.random() < cfg.elastic_p:
        for g, m in zip(cfg.elastic_granularity, cfg.elastic_magnitude):
            ps = elastic_distortion(ps, rng, g, m)
    if rng.random() < cfg.crop_p:
        ps = random_crop(ps, rng, cfg.crop_min_fraction)
    ps = point_cap(ps, rng, cfg.max_points)
    ps = translate(ps, rng.uniform(-cfg.translation, cfg.translation, 3))
    if cfg.jitter_sigma > 0:
        ps = jitter(ps, rng, cfg.jitter_sigma, cfg.jitter_clip)
    if rng.random() < cfg.color_p:
        c = rng.uniform(*cfg.contrast)
        b = rng.uniform(-cfg.brightness, cfg.brightness)
        ps = color_jitter(ps, c, b)
        ps = rgb_shift(ps, rng.uniform(-cfg.rgb_shift, cfg.rgb_shift, 3))
    return ps


def mix3d(a: PointSet, b: PointSet) -> PointSet:
    """Mix3D: one scene made of both point sets; ``b``'s rows and images come after ``a``'s,
    so each pair still refers to its own scene's point and image."""
    return PointSet(
        xyz=np.concatenate([a.xyz, b.xyz]),
        rgb=np.concatenate([a.rgb, b.rgb]),
        label=np.concatenate([a.label, b.label]),
        corr_point=np.concatenate([a.corr_point, b.corr_point + a.num_points]),
        corr_image=np.concatenate([a.corr_image, b.corr_image + len(a.maps)]),
        corr_uv=np.concatenate([a.corr_uv, b.corr_uv]),
        maps=[*a.maps, *b.maps],
        scene_id=f"{a.scene_id}+{b.scene_id}",
    )
