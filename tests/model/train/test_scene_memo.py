"""The in-memory scene memo: same items and same trained weights, each scene read once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tttkd.model.config import AugmentConfig, ConfigError, load_config
from tttkd.model.data import CacheSceneDataset
from tttkd.model.runlog import read_log
from tttkd.model.scene_memo import (
    SceneMemo,
    estimated_bytes,
    image_subset,
    record_bytes,
    without_full_points,
)
from tttkd.model.train import train
from tttkd.pipeline.cache import Cache

SAMPLE_FIELDS = ("coords", "feats", "labels", "point_to_voxel", "corr_point", "corr_image")


def assert_same_items(a, b) -> None:
    for f in (*SAMPLE_FIELDS, "corr_uv"):
        x, y = getattr(a.sample, f), getattr(b.sample, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), f
    assert len(a.sample.teacher_maps or []) == len(b.sample.teacher_maps or [])
    for m, n in zip(a.sample.teacher_maps or [], b.sample.teacher_maps or []):
        assert m.dtype == n.dtype and torch.equal(m, n)
    assert torch.equal(a.point_labels, b.point_labels)
    for f in ("full_point", "full_labels"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None and y is None) or torch.equal(x, y), f


def count_reads(monkeypatch) -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = []
    for name in ("read_scene", "read_points"):
        real = getattr(Cache, name)

        def spy(self, scene_id, _real=real, _name=name, **kw):
            calls.append((_name, kw))
            return _real(self, scene_id, **kw)

        monkeypatch.setattr(Cache, name, spy)
    return calls


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_images=2, augment_cfg=AugmentConfig(mix3d_p=1.0)),  # subsets of 3 images
        dict(max_images=0, augment_cfg=AugmentConfig()),
        dict(max_images=1, augment_cfg=AugmentConfig(enabled=False)),
        dict(with_images=False, augment_cfg=AugmentConfig()),
    ],
)
def test_items_with_the_memo_are_the_items_read_from_the_cache(train_cache, monkeypatch, kw):
    args = dict(voxel_size=0.2, train=True, seed=3, **kw)
    plain = CacheSceneDataset(train_cache, "train", **args)
    memo = SceneMemo(1 << 30)
    held = CacheSceneDataset(train_cache, "train", **args, memo=memo)
    calls = count_reads(monkeypatch)
    for epoch in range(3):
        plain.set_epoch(epoch)
        held.set_epoch(epoch)
        for i in range(len(plain)):
            before = len(calls)
            a = plain[i]
            calls[before:] = []  # count the memo's reads only
            assert_same_items(a, held[i])
    assert len(memo) == len(held) == 3 and memo.reads == 3  # each scene read once
    assert [kw.get("images") for _, kw in calls] == [None] * 3  # whole scenes
    assert memo.used_bytes == sum(record_bytes(r) for r in memo._records.values())


def test_validation_items_with_the_memo_are_the_same(train_cache):
    args = dict(voxel_size=0.1, train=False, full_resolution=True)
    plain = CacheSceneDataset(train_cache, "val", **args)
    held = CacheSceneDataset(train_cache, "val", **args, memo=SceneMemo(1 << 30))
    for _ in range(2):
        assert_same_items(plain[0], held[0])
    assert held.memo.reads == 1 and held[0].full_point is not None


def test_a_scene_over_the_budget_is_read_as_before(train_cache, monkeypatch):
    """Too small a budget: nothing is kept, and reads are image subsets, as without a memo."""
    memo = SceneMemo(1000)
    ds = CacheSceneDataset(
        train_cache, "train", voxel_size=0.2, train=True, max_images=2, seed=3, memo=memo
    )
    calls = count_reads(monkeypatch)
    ds[0]
    ds[0]
    assert len(memo) == 0 and memo.used_bytes == 0 and memo.reads == 0
    assert [len(kw["images"]) for _, kw in calls] == [2, 2]


def test_the_budget_keeps_the_scenes_that_fit(train_cache):
    cache = Cache.open(train_cache, read_only=True)
    ids = cache.scene_ids("train")
    counts = [cache.scene_info(s)["counts"] for s in ids]
    for full in (True, False):  # the admission estimate is close to the bytes kept
        recs = [cache.read_scene(s) for s in ids]
        sizes = [record_bytes(r if full else without_full_points(r)) for r in recs]
        estimates = [estimated_bytes(c, features=True, full_points=full) for c in counts]
        np.testing.assert_allclose(estimates, sizes, rtol=0.05)
    memo = SceneMemo(sizes[0] + min(sizes[1:]) // 2)  # room for scene 0 (read first) only
    ds = CacheSceneDataset(train_cache, "train", voxel_size=0.2, train=True, memo=memo)
    for i in range(len(ds)):
        ds[i]
    assert len(memo) == 1 and memo.used_bytes <= memo.budget_bytes


def test_image_subset_is_the_cache_subset_read(train_cache):
    cache = Cache.open(train_cache, read_only=True)
    sid = cache.scene_ids("train")[0]
    whole = cache.read_scene(sid)
    for images in ([2, 0], [1], [0, 1, 2], []):
        want = cache.read_scene(sid, images=images)
        got = image_subset(whole, np.asarray(images, dtype=np.int64))
        for x, y in zip(got, (want.corr_point, want.corr_image, want.corr_uv)):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def test_workers_get_no_memo(train_cache):
    import pickle

    ds = CacheSceneDataset(train_cache, "train", voxel_size=0.2, train=True, memo=SceneMemo(1))
    assert pickle.loads(pickle.dumps(ds)).memo is None


def test_training_with_the_memo_gives_the_same_weights(train_cache, tiny_sets, tmp_path):
    """Bit-identical weights, optimizer state and logged losses with the memo and without
    (2 epochs: augmentation, Mix3D, 2 of 3 images per scene, KD, full-resolution validation)."""
    sets = tiny_sets + [
        "epochs=2",
        "data.max_images=2",
        "data.val_split=val",
        "data.val_full_resolution=true",
    ]
    for name, mb in (("plain", 0), ("memo", 64)):
        cfg = load_config(overrides=[*sets, f"runtime.scene_cache_mb={mb}"])
        train(cfg, train_cache, tmp_path / name, echo=lambda s: None)
    a = load_file(str(tmp_path / "plain" / "last.safetensors"))
    b = load_file(str(tmp_path / "memo" / "last.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "plain" / "train_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "memo" / "train_state.pt", weights_only=True)
    for i, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], sb["optimizer"]["state"][i]["exp_avg"])
    for kind in ("step", "epoch"):
        la = read_log(tmp_path / "plain" / "log.jsonl", kind)
        lb = read_log(tmp_path / "memo" / "log.jsonl", kind)
        for ra, rb in zip(la, lb, strict=True):
            ra.pop("seconds", None), rb.pop("seconds", None)
            ra.pop("time", None), rb.pop("time", None)
            assert ra == rb


def test_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="runtime.scene_cache_mb must be >= 0"):
        load_config(overrides=["runtime.scene_cache_mb=-1"])


def test_pca_cache_items_with_the_memo_are_the_same(tmp_path):
    """PCA decodes per image, so subsets cut from the decoded scene match decoded subsets."""
    from tttkd.pipeline.cache import fit_pca
    from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record

    url = str(tmp_path / "pca.zarr")
    cache = Cache.create(url, synthetic_meta(feature_codec="pca4+bitround6"))
    recs = [synthetic_record(f"s{i}", n_images=6, n_points=400, seed=i) for i in range(3)]
    cache.set_pca(fit_pca(recs[0].features, 4))
    for rec in recs:
        cache.write_scene(rec)
    args = dict(voxel_size=0.3, train=True, seed=1, max_images=3)
    plain = CacheSceneDataset(url, "train", **args)
    held = CacheSceneDataset(url, "train", **args, memo=SceneMemo(1 << 30))
    for epoch in range(3):
        plain.set_epoch(epoch)
        held.set_epoch(epoch)
        for i in range(len(plain)):
            assert_same_items(plain[i], held[i])
    assert held.memo.reads == 3
