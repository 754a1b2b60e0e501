"""Correspondences against ground truth ray-cast from a scene of axis-aligned boxes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tttkd.core import project, scale_intrinsics
from tttkd.pipeline.correspond import (
    CorrespondConfig,
    View,
    correspond,
    frame_correspondences,
    pixel_to_grid,
)

# room: floor, two walls, a table and a tall cabinet in front of the back wall
BOXES = np.array(
    [
        [[0.0, 0.0, -0.1], [5.0, 5.0, 0.0]],
        [[0.0, 5.0, 0.0], [5.0, 5.1, 3.0]],
        [[-0.1, 0.0, 0.0], [0.0, 5.0, 3.0]],
        [[1.5, 2.0, 0.0], [2.5, 3.0, 1.0]],
        [[3.0, 1.5, 0.0], [3.5, 2.0, 2.0]],
    ]
)
W, H = 96, 72
K = np.array([[80.0, 0, 47.5], [0, 80.0, 35.5], [0, 0, 1]])


def look_at(eye, target) -> np.ndarray:
    f = np.asarray(target, float) - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([r, d, f], axis=1)
    c2w[:3, 3] = eye
    return c2w


def first_hit(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Smallest t > 0 with origin + t * dir on any box (slab method), inf if none."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (BOXES[None, :, 0, :] - origin) / dirs[:, None, :]
        t2 = (BOXES[None, :, 1, :] - origin) / dirs[:, None, :]
    tn = np.nanmax(np.minimum(t1, t2), axis=2)
    tf = np.nanmin(np.maximum(t1, t2), axis=2)
    hit = (tn <= tf) & (tf > 0)
    t = np.where(hit, np.where(tn > 0, tn, tf), np.inf)
    return t.min(axis=1)


def render_depth(c2w: np.ndarray, Kr: np.ndarray, w: int, h: int) -> np.ndarray:
    """z-depth image: a ray through each pixel centre with direction R @ (xn, yn, 1)."""
    jj, ii = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    xn = (ii.ravel() - Kr[0, 2]) / Kr[0, 0]
    yn = (jj.ravel() - Kr[1, 2]) / Kr[1, 1]
    dirs = np.stack([xn, yn, np.ones_like(xn)], axis=1) @ c2w[:3, :3].T
    t = first_hit(c2w[:3, 3], dirs)
    return np.where(np.isfinite(t), t, 0.0).reshape(h, w).astype(np.float32)


def sample_points(n_per_face: int, seed: int) -> np.ndarray:
    """Points on the faces that face into the room (no box bottoms, no outer wall faces)."""
    rng = np.random.default_rng(seed)
    faces = [(0, 2, 1), (1, 1, 0), (2, 0, 1)]  # (box, axis, side): floor top, wall inner faces
    faces += [(b, a, s) for b in (3, 4) for a in range(3) for s in (0, 1) if (a, s) != (2, 0)]
    pts = []
    for b, axis, side in faces:
        lo, hi = BOXES[b]
        p = lo + rng.random((n_per_face, 3)) * (hi - lo)
        p[:, axis] = BOXES[b, side, axis]
        pts.append(p)
    return np.concatenate(pts).astype(np.float32)


def occluder_gap(xyz: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """How far (in camera z) the first surface on each point's own ray lies in front of it.

    0 for a visible point. A gap below the depth tolerance cannot be told from sensor noise
    by any depth test, so such points count as visible by definition; far above it they are
    occluded. Computed from the point's own ray, independent of any image or projection.
    """
    t = first_hit(eye, xyz.astype(np.float64) - eye)
    z = project(xyz, np.eye(3), C2W)[1]
    return (1.0 - np.minimum(t, 1.0)) * z


def near_edge(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Point's pixel within 1 px of a silhouette (a depth jump beyond twice the tolerance).

    There the pixel centre may see the occluder while the point itself is visible, or the
    reverse: a sub-pixel ambiguity of any image-based test.
    """
    cfg = CorrespondConfig()
    pad = np.pad(depth, 1, mode="edge")
    h, w = depth.shape
    nb = [pad[1 + dj : 1 + dj + h, 1 + di : 1 + di + w] for dj in (-1, 0, 1) for di in (-1, 0, 1)]
    lo, hi = np.min(nb, axis=0), np.max(nb, axis=0)
    edge = (hi - lo) > 2 * (cfg.depth_abs_tol + cfg.depth_rel_tol * lo)
    iu = np.floor(uv[:, 0] + 0.5).astype(int)
    iv = np.floor(uv[:, 1] + 0.5).astype(int)
    return edge[iv, iu]


EYE = np.array([2.2, -1.2, 1.7])
C2W = look_at(EYE, [2.6, 3.5, 0.6])
XYZ = sample_points(800, seed=0)


@pytest.fixture(scope="module")
def gt():
    depth = render_depth(C2W, K, W, H)
    uv, z = project(XYZ, K, C2W)
    inside = (
        (z > 0)
        & (uv[:, 0] >= -0.5)
        & (uv[:, 0] < W - 0.5)
        & (uv[:, 1] >= -0.5)
        & (uv[:, 1] < H - 0.5)
    )
    cfg = CorrespondConfig()
    gap = occluder_gap(XYZ, EYE)
    tol = cfg.depth_abs_tol + cfg.depth_rel_tol * z
    vis = inside & (gap <= 1e-4 * z)
    occ = inside & (gap > 2 * tol)
    edge = np.zeros(len(XYZ), bool)
    edge[inside] = near_edge(depth, uv[inside])
    return dict(depth=depth, uv=uv, inside=inside, vis=vis, occ=occ, edge=edge, gap=gap, tol=tol)


def test_scene_has_occlusion(gt):
    # the fixture must exercise occlusion, or the tests below prove nothing
    assert gt["occ"].sum() > 1000
    assert gt["vis"].sum() > 1000


@pytest.mark.parametrize("depth_res", ["same", "half"])
def test_depth_pairs_are_visible_points_at_their_true_pixel(gt, depth_res):
    if depth_res == "same":
        view = View(K, C2W, W, H, depth=gt["depth"])
    else:  # depth at its own (lower) resolution with its own intrinsics
        Kd = scale_intrinsics(K, W, H, W // 2, H // 2)
        view = View(K, C2W, W, H, depth=render_depth(C2W, Kd, W // 2, H // 2), depth_K=Kd)
    idx, uv = frame_correspondences(XYZ, view)
    assert len(idx) > 0 and (np.diff(idx) > 0).all()
    np.testing.assert_allclose(uv, gt["uv"][idx], atol=1e-3)  # float32 arithmetic
    assert gt["inside"][idx].all()
    # every returned point is visible (hidden by less than the tolerance at most; the pixel
    # centre's depth differs slightly from the point's own ray on slanted surfaces), except
    # sub-pixel cases on a silhouette pixel; no occluded point is returned
    inner = idx[~gt["edge"][idx]]
    assert (gt["gap"][inner] <= 1.5 * gt["tol"][inner]).all()
    assert (gt["gap"][inner] > 1.05 * gt["tol"][inner]).mean() < 0.005
    assert gt["occ"][idx].sum() <= 0.01 * len(idx)
    assert not gt["occ"][inner].any()
    # clearly visible points are found
    clear = gt["vis"] & ~gt["edge"]
    recall = np.isin(np.flatnonzero(clear), idx).mean()
    assert recall > (0.97 if depth_res == "same" else 0.9)


def test_missing_depth_drops_pairs(gt):
    depth = gt["depth"].copy()
    depth[:, : W // 2] = 0.0  # left half of the sensor saw nothing
    idx, uv = frame_correspondences(XYZ, View(K, C2W, W, H, depth=depth))
    assert len(idx) > 0
    assert (np.floor(uv[:, 0] + 0.5) >= W // 2).all()


def test_zbuffer_without_depth(gt):
    cfg = CorrespondConfig(point_spacing=0.05)
    idx, uv = frame_correspondences(XYZ, View(K, C2W, W, H), cfg)
    np.testing.assert_allclose(uv, gt["uv"][idx], atol=1e-3)  # float32 arithmetic
    assert gt["occ"][idx].mean() < 0.02
    assert np.isin(np.flatnonzero(gt["occ"]), idx).mean() < 0.03
    clear = gt["vis"] & ~gt["edge"]
    assert np.isin(np.flatnonzero(clear), idx).mean() > 0.6


def test_csr_and_feature_grid(gt):
    c2w_b = look_at(np.array([4.5, 0.5, 1.5]), [1.0, 4.0, 0.5])
    views = [
        View(K, C2W, W, H, depth=gt["depth"]),
        View(K, c2w_b, W, H, depth=render_depth(c2w_b, K, W, H)),
        View(K, look_at(np.array([2.0, 2.0, 1.0]), [2.0, -3.0, 1.0]), W, H),  # sees nothing
    ]
    grid = (12, 9)
    c = correspond(XYZ, views, grid_wh=grid)
    assert c.point.dtype == np.int32 and c.image.dtype == np.int16
    assert c.uv.dtype == np.float32 and c.offsets.dtype == np.int64
    assert c.offsets[0] == 0 and c.offsets[-1] == c.num_pairs == len(c.image)
    assert c.per_image()[2] == 0 and c.per_image()[:2].min() > 0
    for i, v in enumerate(views):
        s = slice(c.offsets[i], c.offsets[i + 1])
        assert (c.image[s] == i).all()
        idx, uv = frame_correspondences(XYZ, v)
        np.testing.assert_array_equal(c.point[s], idx)
        np.testing.assert_allclose(c.uv[s], pixel_to_grid(uv, (W, H), grid), atol=1e-4)
    # feature cells are 8x8 pixels: pixel centre 3.5 is the centre of cell 0
    np.testing.assert_allclose(
        pixel_to_grid(np.array([[3.5, 3.5], [-0.5, 71.5]]), (96, 72), (12, 9)),
        [[0, 0], [-0.5, 8.5]],
    )
    assert grid[0] - 0.5 >= c.uv[:, 0].max() and c.uv.min() >= -0.5


def test_behind_camera_and_bad_pose():
    xyz = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]], np.float32)
    idx, _ = frame_correspondences(xyz, View(K, np.eye(4), W, H))
    assert idx.tolist() == [1]
    with pytest.raises(ValueError, match="finite"):
        frame_correspondences(xyz, View(K, np.full((4, 4), np.nan), W, H))


@settings(max_examples=25, deadline=None)
@given(
    yaw=st.floats(-np.pi, np.pi),
    dist=st.floats(0.5, 5.0),
    fx=st.floats(30.0, 200.0),
)
def test_unoccluded_plane_all_found(yaw, dist, fx):
    # a plane facing the camera with exact depth: every in-image point is returned
    rng = np.random.default_rng(1)
    Kh = np.array([[fx, 0, 31.5], [0, fx, 23.5], [0, 0, 1]])
    c2w = np.eye(4)
    c = np.cos(yaw)
    s = np.sin(yaw)
    c2w[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    c2w[:3, 3] = rng.normal(size=3)
    cam = np.concatenate([rng.uniform(-3, 3, (500, 2)), np.full((500, 1), dist)], axis=1)
    xyz = (cam @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32)
    depth = np.full((48, 64), dist, np.float32)
    idx, uv = frame_correspondences(xyz, View(Kh, c2w, 64, 48, depth=depth))
    uv_true, z = project(xyz, Kh, c2w)
    inside = (
        (uv_true[:, 0] >= -0.5)
        & (uv_true[:, 0] < 63.5)
        & (uv_true[:, 1] >= -0.5)
        & (uv_true[:, 1] < 47.5)
    )
    np.testing.assert_array_equal(idx, np.flatnonzero(inside))
