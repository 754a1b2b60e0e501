"""Lossy feature codecs: fewer bytes, a measured cosine, and transparent decoding."""

from __future__ import annotations

import numpy as np
import pytest

from tttkd.pipeline.cache.store import (
    Cache,
    CacheError,
    codec_fidelity,
    feature_cosine,
    fit_pca,
    parse_codec,
)
from tttkd.pipeline.cache.testing import smooth_features, synthetic_meta, synthetic_record

DIM = 64


def _record(sid: str, seed: int):
    rec = synthetic_record(sid, seed=seed, n_images=6, grid_hw=(24, 32), dim=DIM)
    rec.features = smooth_features(6, 24, 32, DIM, seed=seed) * 4  # ViT-like magnitudes
    return rec


def _feature_bytes(cache: Cache, sid: str) -> int:
    from tttkd.pipeline.cache.layout import run_sync, scene_path

    return run_sync(cache._store.getsize_prefix(f"{scene_path(sid)}/images/features"))


@pytest.mark.parametrize(
    ("text", "pca_k", "keepbits"),
    [("fp16", None, None), ("bitround5", None, 5), ("pca32", 32, None), ("pca8+bitround7", 8, 7)],
)
def test_parse_codec(text, pca_k, keepbits):
    c = parse_codec(text)
    assert (c.pca_k, c.keepbits, c.name) == (pca_k, keepbits, text)


@pytest.mark.parametrize("text", ["", "fp32", "bitround0", "bitround11", "pca0", "bitround3+pca4"])
def test_parse_codec_rejects(text):
    with pytest.raises(ValueError, match="codec"):
        parse_codec(text)


def test_feature_cosine():
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 8)).astype(np.float16)
    assert feature_cosine(x, x) == pytest.approx(1.0, abs=1e-6)
    assert feature_cosine(x, -x) == pytest.approx(-1.0, abs=1e-6)
    assert feature_cosine(x, 3 * x) == pytest.approx(1.0, abs=1e-6)


def test_fit_pca_recovers_a_low_rank_subspace():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(32, 5)))[0].T  # 5 orthonormal rows in 32 dims
    x = rng.normal(size=(4000, 5)) * [5, 4, 3, 2, 1] @ basis + 7.0
    pca = fit_pca(x, 5)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(5), atol=1e-5)
    np.testing.assert_allclose(pca.reconstruct(pca.project(x)), x, atol=1e-3)
    assert sum(pca.explained_variance_ratio) == pytest.approx(1.0, abs=1e-6)
    assert list(pca.explained_variance_ratio) == sorted(pca.explained_variance_ratio)[::-1]
    assert fit_pca(x, 5) == pca  # deterministic, signs fixed
    with pytest.raises(ValueError, match="k=40"):
        fit_pca(x, 40)


def test_bitround_shrinks_bytes_with_reported_cosine(tmp_path):
    raw = Cache.create(str(tmp_path / "fp16.zarr"), synthetic_meta())
    lossy = Cache.create(str(tmp_path / "br.zarr"), synthetic_meta(feature_codec="bitround4"))
    rec = _record("s", 1)
    raw.write_scene(rec)
    lossy.write_scene(rec)
    assert _feature_bytes(lossy, "s") < 0.8 * _feature_bytes(raw, "s")
    cos = lossy.scene_info("s")["feature_cosine"]
    assert cos == pytest.approx(codec_fidelity(rec.features, "bitround4"), abs=1e-6)
    assert 0.9995 < cos < 1.0
    back = lossy.read_scene("s").features
    assert back.dtype == np.float16 and back.shape == rec.features.shape
    assert feature_cosine(rec.features, back) == pytest.approx(cos, abs=1e-6)
    assert lossy.verify() == {"s": []}
    assert raw.scene_info("s")["feature_cosine"] is None  # lossless: nothing to report


def test_pca_stores_k_dims_and_reconstructs_transparently(tmp_path):
    cache = Cache.create(str(tmp_path / "pca.zarr"), synthetic_meta(feature_codec="pca16"))
    raw = Cache.create(str(tmp_path / "fp16.zarr"), synthetic_meta())
    train = _record("train", 1)
    with pytest.raises(CacheError, match="set_pca"):
        cache.write_scene(train)
    cache.set_pca(fit_pca(train.features, 16))
    test = _record("test", 2)  # same latent structure, unseen scene
    cache.write_scene(test)
    raw.write_scene(test)
    assert _feature_bytes(cache, "test") < 0.4 * _feature_bytes(raw, "test")
    reopened = Cache.open(str(tmp_path / "pca.zarr"), read_only=True)
    back = reopened.read_scene("test")
    assert back.features.shape == test.features.shape and back.features.dtype == np.float16
    cos = feature_cosine(test.features, back.features)
    assert cos > 0.995
    assert reopened.scene_info("test")["feature_cosine"] == pytest.approx(cos, abs=1e-4)
    sub = reopened.read_scene("test", images=[4, 1])
    np.testing.assert_array_equal(sub.features, back.features[[4, 1]])
    assert reopened.verify() == {"test": []}
    assert reopened.summary()["feature_cosine"] == pytest.approx(cos, abs=1e-4)


def test_set_pca_guards(tmp_path):
    cache = Cache.create(str(tmp_path / "pca.zarr"), synthetic_meta(feature_codec="pca8"))
    x = _record("a", 1).features
    with pytest.raises(CacheError, match="k=4"):
        cache.set_pca(fit_pca(x, 4))
    basis = fit_pca(x, 8)
    cache.set_pca(basis)
    cache.set_pca(basis)  # the same basis again (a resumed driver) is fine
    cache.write_scene(_record("a", 1))
    with pytest.raises(CacheError, match="another PCA basis"):
        cache.set_pca(fit_pca(x[:2], 8))
    fp16 = Cache.create(str(tmp_path / "fp16.zarr"), synthetic_meta())
    with pytest.raises(CacheError, match="pca<k>"):
        fp16.set_pca(basis)


def test_pca_plus_bitround(tmp_path):
    meta = synthetic_meta(feature_codec="pca16+bitround6")
    cache = Cache.create(str(tmp_path / "c.zarr"), meta)
    cache.set_pca(fit_pca(_record("a", 1).features, 16))
    rec = _record("b", 2)
    cache.write_scene(rec)
    cos = feature_cosine(rec.features, cache.read_scene("b").features)
    assert cos > 0.995
    assert cos == pytest.approx(codec_fidelity(rec.features, meta.feature_codec, cache.pca), 1e-6)


def test_bench_cache_runs_and_orders_codecs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_cache.py"
    spec = importlib.util.spec_from_file_location("bench_cache", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = {
        r["codec"]: r
        for r in bench.main(
            ["--images", "4", "--grid", "16", "20", "--dim", "128", "--no-point-grids"]
        )
    }
    assert "x fp16" in capsys.readouterr().out
    assert rows["fp16"]["cosine"] == 1.0
    assert rows["bitround4"]["feature_bytes"] < rows["bitround8"]["feature_bytes"]
    assert rows["pca64"]["feature_bytes"] < 0.7 * rows["fp16"]["feature_bytes"]
    assert all(r["cosine"] > 0.999 for c, r in rows.items() if c.startswith("bitround"))
    assert rows["pca128"]["cosine"] > 0.999 and rows["pca64"]["cosine"] > 0.9


def test_bench_cache_point_grids_cost_more_points_and_bytes():
    """Part 2 of bench_cache on a tiny room: a finer point grid stores more points and pairs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_cache.py"
    spec = importlib.util.spec_from_file_location("bench_cache", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    one, four = bench.point_grid_rows(voxel=0.2, spacing=0.05, views=2, divisors=(1, 4))
    assert one["full_points"] == four["full_points"]
    assert four["points"] > 4 * one["points"] and four["pairs"] > 4 * one["pairs"]
    assert four["point_bytes"] > one["point_bytes"] and four["scene_bytes"] > one["scene_bytes"]
