"""Scene-id escaping, CacheMeta comparison, and round trips over edge-case shapes."""

from __future__ import annotations

import string
import uuid

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tttkd.pipeline.cache import Cache, CacheMeta, decode_scene_id, encode_scene_id
from tttkd.pipeline.cache.records import to_jsonable
from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record

SAFE = set(string.ascii_letters + string.digits + "-_.~")


@given(st.text(min_size=1, max_size=40))
def test_scene_id_encoding_round_trips_and_is_a_safe_name(sid):
    name = encode_scene_id(sid)
    assert decode_scene_id(name) == sid
    assert set(name) <= SAFE
    assert "/" not in name and not name.startswith(("_", ".")) and name not in (".", "..")


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_distinct_ids_get_distinct_names(a, b):
    if a != b:
        assert encode_scene_id(a) != encode_scene_id(b)


def test_readable_names_for_real_ids():
    assert encode_scene_id("scene0000_00") == "scene0000_00"
    assert encode_scene_id("Area_5/office_1") == "Area_5~2Foffice_1"
    assert encode_scene_id("17DRP5sb8fy/region3") == "17DRP5sb8fy~2Fregion3"


def test_meta_json_normalisation_and_conflicts():
    a = synthetic_meta(teacher={"name": "t", "mean": (0.485, 0.456, 0.406)})
    b = CacheMeta.from_dict(a.to_dict())
    assert a == b and a.conflicts_with(b) == []
    assert isinstance(b.class_names, tuple)
    c = synthetic_meta(
        teacher={"name": "t", "mean": [0.5, 0.5, 0.5]},
        image_policy={"max_images": 25, "selection": "all"},
        feature_codec="bitround6",
        options={"anything": 1},
    )
    diffs = a.conflicts_with(c)
    assert len(diffs) == 3
    assert any(d.startswith("teacher differs (mean: [0.485") for d in diffs)
    assert any("max_images: 50 -> 25" in d for d in diffs)
    assert any(d.startswith("feature_codec") for d in diffs)


def test_to_jsonable():
    out = to_jsonable({"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(2), "t": (1, "s")})
    assert out == {"n": 3, "x": 0.5, "a": [0, 1], "t": [1, "s"]}
    assert type(out["n"]) is int


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_points=st.integers(0, 30),
    n_images=st.integers(0, 4),
    corr=st.integers(0, 6),
    grid=st.tuples(st.integers(1, 4), st.integers(1, 5)),
    seed=st.integers(0, 1000),
)
def test_round_trip_edge_shapes(n_points, n_images, corr, grid, seed):
    url = f"memory://tttkd-hyp-{uuid.uuid4().hex}/c.zarr"
    cache = Cache.create(url, synthetic_meta())
    rec = synthetic_record(
        "x/y",
        n_points=n_points,
        n_full=2 * n_points,
        n_images=n_images,
        grid_hw=grid,
        dim=3,
        corr_per_image=corr,
        seed=seed,
    )
    cache.write_scene(rec)
    back = cache.read_scene("x/y")
    for f in ("xyz", "label", "voxel_of_point", "features", "corr_uv", "corr_offsets", "K"):
        a, b = getattr(rec, f), getattr(back, f)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), f
    assert back.image_names == rec.image_names
    assert cache.verify() == {"x/y": []}
    if n_images:
        sub = cache.read_scene("x/y", images=[n_images - 1])
        assert sub.num_corr == rec.corr_offsets[-1] - rec.corr_offsets[-2]


def test_cache_error_survives_pickle():
    import pickle

    from tttkd.core import DatasetError
    from tttkd.pipeline.cache import CacheError

    e = pickle.loads(pickle.dumps(CacheError("boom", file="x.zarr", scene="s", fix="do y")))
    assert type(e) is CacheError and isinstance(e, DatasetError)
    assert (e.problem, e.file, e.scene, e.fix) == ("boom", "x.zarr", "s", "do y")
    assert str(e) == "scene s: file x.zarr: boom\n  fix: do y"
