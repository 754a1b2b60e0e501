"""The cache contract (STYLE.md 6): one test class, run on a directory, a file:// URL and an
in-memory fsspec store. Real zarr stores; nothing mocked."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pytest
import zarr

from tttkd.pipeline.cache import (
    Cache,
    CacheError,
    SceneRecord,
    encode_scene_id,
)
from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record

ARRAYS = (
    "xyz",
    "rgb",
    "label",
    "voxel_of_point",
    "full_label",
    "features",
    "K",
    "c2w",
    "image_size",
    "corr_point",
    "corr_image",
    "corr_uv",
    "corr_offsets",
)


@pytest.fixture(params=["local", "file", "memory"])
def url(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "feats.zarr")
    elif request.param == "file":
        yield f"file://{tmp_path}/feats.zarr"
    else:
        u = f"memory://tttkd-test-{uuid.uuid4().hex}/feats.zarr"
        yield u
        import fsspec

        fsspec.filesystem("memory").rm(u.removeprefix("memory://"), recursive=True)


def assert_same(a: SceneRecord, b: SceneRecord) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.scene_id == b.scene_id and a.split == b.split
    assert a.image_names == b.image_names
    assert a.attrs == b.attrs


def _mark_incomplete(url: str, scene_id: str, drop: str | None = None) -> None:
    """What a writer killed mid-scene leaves: complete=False and missing arrays."""
    opts = {"auto_mkdir": True} if url.startswith("file://") else None
    g = zarr.open_group(url, path=f"scenes/{encode_scene_id(scene_id)}", storage_options=opts)
    g.update_attributes({"complete": False})
    if drop:
        del g[drop]


class TestCacheContract:
    def test_round_trip_exact(self, url):
        cache = Cache.create(url, synthetic_meta())
        recs = [
            synthetic_record("scene0000_00", seed=1),
            synthetic_record("Area_5/office_1", split="val", seed=2, n_images=1),
            synthetic_record("17DRP5sb8fy/region3", split=None, seed=3, n_images=0),
        ]
        for r in recs:
            cache.write_scene(r)
        reopened = Cache.open(url)
        assert reopened.meta == synthetic_meta()
        assert reopened.scene_ids() == sorted(r.scene_id for r in recs)
        for r in recs:
            assert reopened.is_complete(r.scene_id)
            assert_same(r, reopened.read_scene(r.scene_id))

    def test_scene_ids_by_split(self, url):
        cache = Cache.create(url, synthetic_meta())
        for i, split in enumerate(["train", "val", "train"]):
            cache.write_scene(synthetic_record(f"s{i}", split=split, seed=i))
        assert cache.scene_ids("train") == ["s0", "s2"]
        assert cache.scene_ids("val") == ["s1"]
        assert cache.scene_ids("test") == []

    def test_image_subset_reads_those_features_and_reindexes_corr(self, url):
        rec = synthetic_record("s", n_images=5, seed=7)
        cache = Cache.create(url, synthetic_meta())
        cache.write_scene(rec)
        pick = [3, 0, 4]
        sub = cache.read_scene("s", images=pick)
        np.testing.assert_array_equal(sub.features, rec.features[pick])
        np.testing.assert_array_equal(sub.K, rec.K[pick])
        np.testing.assert_array_equal(sub.c2w, rec.c2w[pick])
        assert sub.image_names == [rec.image_names[i] for i in pick]
        off = rec.corr_offsets
        for j, i in enumerate(pick):
            a, b = sub.corr_offsets[j], sub.corr_offsets[j + 1]
            np.testing.assert_array_equal(sub.corr_point[a:b], rec.corr_point[off[i] : off[i + 1]])
            np.testing.assert_array_equal(sub.corr_uv[a:b], rec.corr_uv[off[i] : off[i + 1]])
            assert (sub.corr_image[a:b] == j).all()
        assert sub.corr_image.dtype == np.int16 and sub.corr_offsets.dtype == np.int64
        np.testing.assert_array_equal(sub.xyz, rec.xyz)
        empty = cache.read_scene("s", images=[])
        assert empty.features.shape == (0, *rec.features.shape[1:])
        assert empty.num_corr == 0 and list(empty.corr_offsets) == [0]
        with pytest.raises(CacheError, match="image indices"):
            cache.read_scene("s", images=[5])

    def test_features_false_and_read_points(self, url):
        rec = synthetic_record("s", seed=3)
        cache = Cache.create(url, synthetic_meta())
        cache.write_scene(rec)
        no_feat = cache.read_scene("s", features=False)
        assert no_feat.features is None
        np.testing.assert_array_equal(no_feat.corr_uv, rec.corr_uv)
        pts = cache.read_points("s")
        assert pts.features is None and pts.num_images == 0 and pts.num_corr == 0
        np.testing.assert_array_equal(pts.voxel_of_point, rec.voxel_of_point)
        np.testing.assert_array_equal(pts.full_label, rec.full_label)
        np.testing.assert_array_equal(pts.label, rec.label)

    def test_incomplete_scene_refused_listed_and_redone(self, url):
        cache = Cache.create(url, synthetic_meta())
        done, broken = synthetic_record("a", seed=1), synthetic_record("b", seed=2)
        cache.write_scene(done)
        cache.write_scene(broken)
        _mark_incomplete(url, "b", drop="images/features")
        assert cache.scene_ids() == ["a"]
        assert cache.scene_ids(include_incomplete=True) == ["a", "b"]
        assert not cache.is_complete("b")
        with pytest.raises(CacheError, match="incomplete"):
            cache.read_scene("b")
        with pytest.raises(CacheError, match="incomplete"):
            cache.read_points("b")
        assert cache.verify()["b"] and not cache.verify()["a"]
        cache.write_scene(broken)  # a rerun redoes it from scratch
        assert_same(broken, cache.read_scene("b"))
        assert cache.verify() == {"a": [], "b": []}

    def test_complete_scene_not_rewritten_unless_replace(self, url):
        cache = Cache.create(url, synthetic_meta())
        cache.write_scene(synthetic_record("a", seed=1))
        with pytest.raises(CacheError, match="already complete"):
            cache.write_scene(synthetic_record("a", seed=2))
        new = synthetic_record("a", seed=2, n_images=2)
        cache.write_scene(new, replace=True)
        assert_same(new, cache.read_scene("a"))

    def test_missing_scene_is_clear_error(self, url):
        cache = Cache.create(url, synthetic_meta())
        with pytest.raises(CacheError, match="no such scene"):
            cache.read_scene("nope")
        assert not cache.is_complete("nope")
        assert cache.verify(["nope"]) == {
            "nope": ["the scene group is missing or its metadata is unreadable"]
        }

    def test_create_resumes_equal_meta_and_refuses_conflicts(self, url):
        Cache.create(url, synthetic_meta()).write_scene(synthetic_record("a"))
        again = Cache.create(url, synthetic_meta(options={"workers": 8}))  # options may differ
        assert again.scene_ids() == ["a"]
        other = synthetic_meta(
            voxel_size=0.05, teacher={**synthetic_meta().teacher, "name": "vit_other"}
        )
        with pytest.raises(CacheError) as err:
            Cache.create(url, other)
        msg = str(err.value)
        assert "voxel_size" in msg and "teacher" in msg and "vit_other" in msg
        assert "--overwrite" in msg
        assert "image_policy" not in msg
        wiped = Cache.create(url, other, overwrite=True)
        assert wiped.scene_ids(include_incomplete=True) == []
        assert Cache.open(url).meta.voxel_size == 0.05

    def test_open_refuses_non_caches_and_other_schemas(self, url):
        with pytest.raises(CacheError, match="no tttkd cache"):
            Cache.open(url)
        opts = {"auto_mkdir": True} if url.startswith("file://") else None
        zarr.open_group(url, mode="w", storage_options=opts).attrs["x"] = 1
        with pytest.raises(CacheError, match="not a tttkd cache"):
            Cache.open(url)
        with pytest.raises(CacheError, match="not empty and is not a tttkd cache"):
            Cache.create(url, synthetic_meta(), overwrite=True)  # never wipes foreign data
        Cache.create(url.replace("feats", "other"), synthetic_meta())
        g = zarr.open_group(url.replace("feats", "other"), mode="r+", storage_options=opts)
        g.update_attributes({"schema": 99})
        with pytest.raises(CacheError, match="schema 99"):
            Cache.open(url.replace("feats", "other"))
        with pytest.raises(CacheError, match="--overwrite"):
            Cache.create(url.replace("feats", "other"), synthetic_meta())

    def test_read_only_refuses_writes_and_pickles(self, url):
        Cache.create(url, synthetic_meta())
        ro = Cache.open(url, read_only=True)
        with pytest.raises(CacheError, match="read-only"):
            ro.write_scene(synthetic_record("a"))
        rw = pickle.loads(pickle.dumps(Cache.open(url)))  # what Dask does to ship it
        rw.write_scene(synthetic_record("a"))
        assert Cache.open(url, read_only=True).scene_ids() == ["a"]

    def test_summary_counts_and_bytes(self, url):
        cache = Cache.create(url, synthetic_meta())
        recs = [synthetic_record(f"s{i}", split="train" if i else "val", seed=i) for i in range(3)]
        for r in recs:
            cache.write_scene(r)
        s = cache.summary()
        assert s["scenes_per_split"] == {"train": 2, "val": 1}
        assert s["totals"]["points"] == sum(r.num_points for r in recs)
        assert s["totals"]["images"] == sum(r.num_images for r in recs)
        assert s["totals"]["correspondences"] == sum(r.num_corr for r in recs)
        assert s["totals"]["corr_per_point"] == pytest.approx(
            sum(r.num_corr for r in recs) / sum(r.num_points for r in recs)
        )
        per = s["bytes_per_scene"]
        assert set(per) == {"s0", "s1", "s2"} and all(b > 1000 for b in per.values())
        assert s["bytes_total"] > sum(per.values())  # plus the root metadata
        assert s["incomplete"] == 0

    def test_no_object_dtypes_anywhere(self, url):
        cache = Cache.create(url, synthetic_meta(feature_codec="pca4"))
        from tttkd.pipeline.cache import fit_pca

        rec = synthetic_record("Area_1/hallway_2", seed=4)
        cache.set_pca(fit_pca(rec.features, 4))
        cache.write_scene(rec)
        opts = {"auto_mkdir": True} if url.startswith("file://") else None
        root = zarr.open_group(url, mode="r", storage_options=opts)
        arrays = [a for _, a in root.members(max_depth=None) if isinstance(a, zarr.Array)]
        assert len(arrays) == 14 + 2  # the 14 arrays of a scene + the PCA basis
        for a in arrays:
            assert a.dtype.kind in "fiuU", (a.path, a.dtype)
            assert "Variable" not in type(a.metadata.data_type).__name__, a.path
        names = root[f"scenes/{encode_scene_id(rec.scene_id)}/images/features"]
        assert names.chunks == (1, *rec.features.shape[1:3], 4)  # one chunk per image
