"""Voxelization: partition, representative, labels, against brute force and np.unique."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tttkd.pipeline.voxelize import voxelize, voxelize_unique_baseline


def brute_force(xyz: np.ndarray, vs: float, label: np.ndarray):
    """Per voxel (dict keyed by grid tuple): point indices, nearest-centre point, majority."""
    q = xyz.astype(np.float64) / vs
    grid = np.floor(q).astype(np.int64)
    groups: dict[tuple, list[int]] = {}
    for i, g in enumerate(map(tuple, grid)):
        groups.setdefault(g, []).append(i)
    out = {}
    for g, idx in groups.items():
        d2 = ((q[idx] - np.array(g) - 0.5) ** 2).sum(1)  # voxel units, as documented
        rep = idx[int(np.flatnonzero(d2 == d2.min())[0])]  # idx ascending: lowest index wins
        counts = Counter(int(label[i]) for i in idx if label[i] != -1)
        if counts:
            best = max(counts.values())
            maj = min(c for c, n in counts.items() if n == best)
        else:
            maj = -1
        out[g] = (idx, rep, maj)
    return out


def check_against_brute_force(xyz: np.ndarray, vs: float, label: np.ndarray) -> None:
    ref = brute_force(xyz, vs, label)
    v = voxelize(xyz, vs, label=label)
    vm = voxelize(xyz, vs, label=label, label_mode="majority")
    assert v.num_voxels == len(ref)
    keys = [tuple(g) for g in v.grid_coord.tolist()]
    assert keys == sorted(ref)  # voxels in lexicographic grid order
    for k, (key, rep) in enumerate(zip(keys, v.keep)):
        idx, want_rep, maj = ref[key]
        assert rep == want_rep
        assert v.counts[k] == len(idx)
        assert (v.voxel_of_point[idx] == k).all()
        assert v.label[k] == label[rep]
        assert vm.label[k] == maj
    np.testing.assert_array_equal(vm.keep, v.keep)


def test_random_cloud_matches_brute_force():
    rng = np.random.default_rng(0)
    xyz = (rng.random((3000, 3)) * [0.6, 0.4, 0.3] - 0.2).astype(np.float32)
    label = rng.integers(-1, 4, len(xyz)).astype(np.int16)
    check_against_brute_force(xyz, 0.05, label)


@settings(max_examples=40, deadline=None)
@given(
    xyz=arrays(
        np.float32,
        st.tuples(st.integers(1, 60), st.just(3)),
        elements=st.floats(-2, 2, width=32),
    ),
    vs=st.sampled_from([0.02, 0.04, 0.5, 1.0]),
    seed=st.integers(0, 3),
)
def test_property_matches_brute_force(xyz, vs, seed):
    # hypothesis produces duplicates and points on voxel borders: ties must be deterministic
    label = np.random.default_rng(seed).integers(-1, 3, len(xyz)).astype(np.int16)
    check_against_brute_force(xyz, vs, label)


def test_same_partition_as_np_unique_baseline():
    rng = np.random.default_rng(1)
    xyz = (rng.normal(size=(20000, 3)) * 2).astype(np.float32)
    v = voxelize(xyz, 0.04)
    first, inverse = voxelize_unique_baseline(xyz, 0.04)
    assert v.num_voxels == len(first)
    # same grouping: a one-to-one relabelling maps one inverse onto the other
    relabel = np.empty(v.num_voxels, dtype=np.int64)
    relabel[v.voxel_of_point] = inverse
    np.testing.assert_array_equal(relabel[v.voxel_of_point], inverse)
    assert len(np.unique(relabel)) == v.num_voxels


def test_duplicates_tie_to_lowest_index_and_dtypes():
    xyz = np.array(
        [[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.02, 0.02, 0.02], [0.5, 0.5, 0.5]], np.float32
    )
    lab = np.array([1, 2, 3, -1], np.int16)
    v = voxelize(xyz, 0.04, label=lab)
    assert v.keep.tolist() == [1, 3]  # nearest to centre (0.02, 0.02, 0.02), lowest index
    assert v.voxel_of_point.tolist() == [0, 0, 0, 1]
    assert v.label.tolist() == [2, -1]
    assert v.voxel_of_point.dtype == np.int32 and v.label.dtype == np.int16
    assert v.grid_coord.dtype == np.int32 and v.grid_coord.tolist() == [[0, 0, 0], [12, 12, 12]]
    m = voxelize(xyz, 0.04, label=lab, label_mode="majority")
    assert m.label.tolist() == [1, -1]  # 1, 2, 3 once each: the smallest id wins


def test_grid_does_not_depend_on_other_points():
    # no origin shift: a point's voxel is floor(xyz / size), whatever else is in the scene
    rng = np.random.default_rng(2)
    a = rng.random((500, 3)).astype(np.float32)
    far = np.array([[-37.3, 12.1, -5.5]], np.float32)
    va = voxelize(a, 0.1)
    vb = voxelize(np.concatenate([a, far]), 0.1)
    ga = va.grid_coord[va.voxel_of_point]
    gb = vb.grid_coord[vb.voxel_of_point[:500]]
    np.testing.assert_array_equal(ga, gb)


def test_empty_and_bad_input():
    v = voxelize(np.zeros((0, 3), np.float32), 0.04, label=np.zeros(0, np.int16))
    assert v.num_voxels == 0 and v.voxel_of_point.shape == (0,) and v.label.shape == (0,)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0, 0, np.nan]], np.float32), 0.04)
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(np.zeros((2, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match="label_mode"):
        voxelize(np.zeros((2, 3), np.float32), 0.1, label=np.zeros(2, np.int16), label_mode="mode")
    with pytest.raises(ValueError, match="too many"):
        voxelize(np.array([[0, 0, 0], [1e9, 1e9, 1e9]], np.float32), 1e-3)
