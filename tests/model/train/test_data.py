"""The training Dataset over a real cache: image subsets, re-voxelization, seeding, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tttkd.core import DatasetError
from tttkd.model.config import AugmentConfig
from tttkd.model.data import CacheSceneDataset, collate_items
from tttkd.pipeline.cache import Cache
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.voxelize import voxelize


def dataset(url: str, **kw) -> CacheSceneDataset:
    args = dict(voxel_size=0.2, train=True, augment_cfg=AugmentConfig(), max_images=2, seed=3)
    return CacheSceneDataset(url, "train", **{**args, **kw})


def test_item_reads_an_image_subset_and_maps_pairs_to_voxels(train_cache, monkeypatch):
    ds = dataset(train_cache, augment_cfg=AugmentConfig(mix3d_p=0.0))
    calls = []
    real = Cache.read_scene

    def spy(self, scene_id, **kw):
        calls.append(kw)
        return real(self, scene_id, **kw)

    monkeypatch.setattr(Cache, "read_scene", spy)
    item = ds[0]
    assert len(calls) == 1 and len(calls[0]["images"]) == 2  # 2 of the scene's 3 images
    s = item.sample
    assert len(s.teacher_maps) == 2 and s.teacher_maps[0].dtype == torch.float16
    n_vox, n_pts = s.coords.shape[0], item.point_labels.shape[0]
    assert n_vox < n_pts and s.point_to_voxel.shape == (n_pts,)
    assert int(s.point_to_voxel.max()) == n_vox - 1 and len(torch.unique(s.point_to_voxel)) == n_vox
    assert int(s.corr_point.max()) < n_vox and int(s.corr_image.max()) <= 1
    assert len(torch.unique(s.coords, dim=0)) == n_vox  # one row per voxel
    # every voxel's label is the label of one of its own points
    for v in range(0, n_vox, 97):
        assert int(s.labels[v]) in set(item.point_labels[s.point_to_voxel == v].tolist())


def test_pairs_survive_the_real_pipeline_unchanged(train_cache):
    """Without augmentation every stored pair arrives, on the voxel of its point."""
    ds = dataset(train_cache, augment_cfg=AugmentConfig(enabled=False), max_images=0)
    rec = Cache.open(train_cache, read_only=True).read_scene(ds.scene_ids[1])
    item = ds[1]
    s = item.sample
    assert len(s.teacher_maps) == rec.num_images
    np.testing.assert_array_equal(s.corr_uv.numpy(), rec.corr_uv)
    np.testing.assert_array_equal(
        s.point_to_voxel[torch.from_numpy(rec.corr_point.astype(np.int64))], s.corr_point
    )
    np.testing.assert_array_equal(item.point_labels.numpy(), rec.label)
    np.testing.assert_array_equal(s.teacher_maps[2].numpy(), rec.features[2])


def test_items_are_seeded_by_seed_epoch_index(train_cache):
    ds = dataset(train_cache)
    a, b = ds[0], ds[0]
    assert torch.equal(a.sample.coords, b.sample.coords) and torch.equal(
        a.sample.feats, b.sample.feats
    )
    ds.set_epoch(1)
    c = ds[0]
    assert c.sample.coords.shape != a.sample.coords.shape or not torch.equal(
        c.sample.coords, a.sample.coords
    )
    ds2 = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    assert ds2._cache is None
    assert torch.equal(ds2[0].sample.feats, c.sample.feats)


def test_mix3d_item_has_both_scenes_images(train_cache):
    ds = dataset(train_cache, augment_cfg=AugmentConfig(mix3d_p=1.0), max_images=2)
    item = ds[2]
    assert "+" in item.sample.scene_id and len(item.sample.teacher_maps) == 4
    a, b = item.sample.scene_id.split("+")
    assert a == ds.scene_ids[2] and b in ds.scene_ids and b != a


def test_workers_give_the_same_batches(train_cache):
    from torch.utils.data import DataLoader

    ds = dataset(train_cache)
    one = list(DataLoader(ds, batch_size=2, collate_fn=collate_items, num_workers=0))
    two = list(DataLoader(ds, batch_size=2, collate_fn=collate_items, num_workers=2))
    assert len(one) == len(two) == 2
    for x, y in zip(one, two):
        assert torch.equal(x.batch.coords, y.batch.coords)
        assert torch.equal(x.batch.corr_point, y.batch.corr_point)
        assert torch.equal(x.point_labels, y.point_labels)


def test_validation_items_and_full_resolution(train_cache):
    ds = CacheSceneDataset(train_cache, "val", voxel_size=0.1, train=False, full_resolution=True)
    rec = Cache.open(train_cache, read_only=True).read_points(ds.scene_ids[0])
    item = ds[0]
    assert item.sample.corr_point is None and not item.sample.teacher_maps
    # the stored points lie on a grid finer than the voxel (schema 2), so several share a
    # voxel; unrotated, the nested grids give exactly the full-resolution cloud's voxels
    meta = Cache.open(train_cache, read_only=True).meta
    scene = registry.load_scene("scannet", meta.options["root"], rec.scene_id, frames="25k")
    assert item.sample.coords.shape[0] == voxelize(scene.xyz, 0.1).num_voxels < rec.num_points
    assert item.sample.point_to_voxel.shape[0] == rec.num_points
    np.testing.assert_array_equal(item.full_labels.numpy(), rec.full_label)
    tb = collate_items([item, item])
    assert int(tb.full_point[len(rec.full_label)]) == rec.num_points + int(rec.voxel_of_point[0])


def test_unknown_split_is_a_clear_error(train_cache):
    with pytest.raises(
        DatasetError, match=r"no complete scene in split 'test'.*\['train', 'val'\]"
    ):
        CacheSceneDataset(train_cache, "test", voxel_size=0.2, train=False)
