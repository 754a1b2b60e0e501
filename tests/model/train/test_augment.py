"""Augmentations keep every point-pixel pair pointing at the same measurement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tttkd.model import augment as A
from tttkd.model.config import AugmentConfig


def point_set(n: int = 2000, n_img: int = 3, seed: int = 0) -> A.PointSet:
    """Random room-sized cloud; ``label`` holds each point's original index (its identity)."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform([0, 0, 0], [6, 4, 3], (n, 3))
    pairs = [(p, i) for i in range(n_img) for p in rng.choice(n, n // 3, replace=False)]
    corr_point = np.array([p for p, _ in pairs], np.int64)
    corr_image = np.array([i for _, i in pairs], np.int64)
    return A.PointSet(
        xyz=xyz,
        rgb=rng.uniform(0, 255, (n, 3)).astype(np.float32),
        label=np.arange(n, dtype=np.int64),
        corr_point=corr_point,
        corr_image=corr_image,
        corr_uv=rng.uniform(0, 20, (len(pairs), 2)).astype(np.float32),
        maps=[np.full((4, 5, 8), i, np.float16) for i in range(n_img)],
        scene_id="s",
    )


def pair_table(ps: A.PointSet) -> dict[tuple[int, int], tuple[float, float]]:
    """(original point id, image) -> uv, over every pair."""
    ids = ps.label[ps.corr_point]
    return {
        (int(p), int(i)): tuple(uv) for p, i, uv in zip(ids, ps.corr_image, ps.corr_uv.tolist())
    }


def test_geometric_transforms_move_points_not_pairs():
    ps = point_set()
    rng = np.random.default_rng(1)
    moved = A.elastic_distortion(
        A.scale(A.mirror(A.rotate_z(A.centre(ps), 0.7), True, False), 1.1), rng, 0.2, 0.4
    )
    assert not np.allclose(moved.xyz, ps.xyz)
    for name in ("corr_point", "corr_image", "corr_uv", "label", "rgb"):
        np.testing.assert_array_equal(getattr(moved, name), getattr(ps, name))
    # rotation + mirror + scale: pairwise distances scale by exactly the factor
    r = A.scale(A.mirror(A.rotate_z(ps, 0.7), True, True), 1.1)
    d0 = np.linalg.norm(ps.xyz[1:50] - ps.xyz[0], axis=1)
    np.testing.assert_allclose(np.linalg.norm(r.xyz[1:50] - r.xyz[0], axis=1), 1.1 * d0, rtol=1e-9)
    np.testing.assert_allclose(r.xyz[:, 2], ps.xyz[:, 2] * 1.1)  # about the up axis only


def test_elastic_distortion_is_smooth_and_bounded():
    ps = point_set(4000)
    out = A.elastic_distortion(ps, np.random.default_rng(0), 0.2, 0.4)
    disp = out.xyz - ps.xyz
    assert 0.01 < np.abs(disp).mean() < 0.2
    # neighbours (< 5 cm apart) move alike: the field is smooth at the granularity scale
    near = np.linalg.norm(ps.xyz[:, None] - ps.xyz[None, :200], axis=2)
    i, j = np.nonzero((near < 0.05) & (near > 0))
    assert len(i) > 0
    assert np.abs(disp[i] - disp[j]).mean() < 0.25 * np.abs(disp).mean()


def test_trilinear_reproduces_a_linear_field():
    """Trilinear interpolation is exact for a linear field (the elastic field's sampler)."""
    rng = np.random.default_rng(0)
    shape, coef = (5, 6, 7), rng.normal(size=(3, 2))
    cells = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    grid = cells @ coef + [0.5, -1.0]
    idx = rng.uniform(0, np.array(shape) - 1 - 1e-9, (500, 3))
    np.testing.assert_allclose(A._trilinear(grid, idx), idx @ coef + [0.5, -1.0], atol=1e-12)


def test_subset_drops_and_reindexes_pairs():
    ps = point_set(300)
    keep = np.zeros(300, bool)
    keep[::3] = True
    sub = ps.subset(keep)
    assert sub.num_points == 100
    np.testing.assert_array_equal(sub.label, np.arange(0, 300, 3))
    before, after = pair_table(ps), pair_table(sub)
    assert after == {k: v for k, v in before.items() if k[0] % 3 == 0}
    assert sub.corr_point.max() < sub.num_points
    assert len(sub.maps) == len(ps.maps)  # images stay even when some lose every pair


def test_crop_and_cap_reindex_pairs():
    ps = point_set()
    rng = np.random.default_rng(5)
    crop = A.random_crop(ps, rng, 0.5)
    assert 0 < crop.num_points < ps.num_points
    lo, hi = crop.xyz[:, :2].min(0), crop.xyz[:, :2].max(0)
    outside = np.any((ps.xyz[:, :2] < lo) | (ps.xyz[:, :2] > hi), axis=1)
    assert set(crop.label.tolist()).isdisjoint(np.flatnonzero(outside).tolist())
    before = pair_table(ps)
    assert pair_table(crop) == {k: v for k, v in before.items() if k[0] in set(crop.label.tolist())}
    cap = A.point_cap(ps, rng, 500)
    assert cap.num_points == 500
    assert pair_table(cap) == {k: v for k, v in before.items() if k[0] in set(cap.label.tolist())}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_pipeline_keeps_every_surviving_pair(seed):
    ps = point_set(seed=seed)
    cfg = AugmentConfig(crop_p=1.0, max_points=1500)
    out = A.augment(ps, np.random.default_rng(seed), cfg)
    assert out.num_points <= 1500
    before, after = pair_table(ps), pair_table(out)
    assert after and all(before[k] == v for k, v in after.items())
    kept = set(out.label.tolist())
    assert set(after) == {k for k in before if k[0] in kept}  # no pair of a kept point lost
    # colours changed but stay valid
    assert out.rgb.min() >= 0 and out.rgb.max() <= 255
    # the same generator state gives the same result; another one does not
    again = A.augment(ps, np.random.default_rng(seed), cfg)
    np.testing.assert_array_equal(again.xyz, out.xyz)
    other = A.augment(ps, np.random.default_rng(seed + 10), cfg)
    assert other.num_points != out.num_points or not np.allclose(other.xyz, out.xyz)


def test_disabled_augmentation_is_identity():
    ps = point_set()
    out = A.augment(
        ps, np.random.default_rng(0), dataclasses.replace(AugmentConfig(), enabled=False)
    )
    assert out is ps


def test_mix3d_keeps_both_scenes_pairs_apart():
    a, b = point_set(300, n_img=2, seed=1), point_set(200, n_img=3, seed=2)
    b = dataclasses.replace(b, maps=[np.full((4, 5, 8), 10 + i, np.float16) for i in range(3)])
    m = A.mix3d(a, b)
    assert m.num_points == 500 and len(m.maps) == 5
    ma, mb = m.corr_point < 300, m.corr_point >= 300
    assert ma.sum() == len(a.corr_point) and mb.sum() == len(b.corr_point)
    np.testing.assert_array_equal(m.corr_point[mb] - 300, b.corr_point)
    np.testing.assert_array_equal(m.corr_image[mb] - 2, b.corr_image)
    # each pair's image is its own scene's image: the map value says which
    vals = np.array([m.maps[i][0, 0, 0] for i in m.corr_image], dtype=float)
    np.testing.assert_array_equal(vals[mb], 10 + b.corr_image)
    np.testing.assert_array_equal(vals[ma], a.corr_image)
    np.testing.assert_array_equal(m.xyz[300:], b.xyz)


@pytest.mark.parametrize("angle", [0.0, 0.7, -2.5, np.pi])
def test_rotate_z_equals_the_rotation_matrix_product(angle):
    """The per-column rotation (fast on busy cores) gives the matrix product's points."""
    ps = point_set(3000)
    c, s = np.cos(angle), np.sin(angle)
    expected = ps.xyz @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T
    np.testing.assert_allclose(A.rotate_z(ps, angle).xyz, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bounds_are_numpys_axis_0_min_and_max_exactly(dtype):
    rng = np.random.default_rng(0)
    xyz = (rng.normal(size=(5000, 3)) * 7).astype(dtype)
    xyz[17, 2] = np.nan  # a NaN column stays NaN, as with min(0)
    for a in (xyz, xyz[:, :2], xyz[::3], xyz[:1]):
        lo, hi = A.bounds(a)
        for got, want in ((lo, a.min(0)), (hi, a.max(0))):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
