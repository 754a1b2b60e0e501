"""Issue #13 item 9: unsafe scene ids are refused; skipped incomplete scenes are counted.

Before: a scene id with ``..`` or an absolute path from a split file was joined to ``--root``
(reading outside it), and train/adapt skipped incomplete scenes without a word.
"""

from __future__ import annotations

import pytest
import zarr

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.runner import select_scenes
from tttkd.core import DatasetError
from tttkd.model.data import CacheSceneDataset
from tttkd.pipeline.cache import Cache, IncompleteScenesWarning, encode_scene_id
from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record
from tttkd.pipeline.datasets import registry


@pytest.mark.parametrize("dataset", ["scannet", "s3dis", "matterport3d", "pointcept"])
@pytest.mark.parametrize("scene_id", ["../../etc/scene0000_00", "/etc/passwd", "Area_1/../.."])
def test_a_scene_id_leaving_the_root_is_refused(dataset, scene_id, tmp_path):
    with pytest.raises(DatasetError, match="unsafe scene id") as e:
        registry.load_scene(dataset, str(tmp_path), scene_id)
    assert repr(scene_id) in str(e.value)


def test_train_and_adapt_count_the_incomplete_scenes_they_skip(tmp_path):
    url = str(tmp_path / "feats.zarr")
    cache = Cache.create(url, synthetic_meta())
    for sid in ("a", "b", "c"):
        cache.write_scene(synthetic_record(sid))
    path = f"scenes/{encode_scene_id('b')}"
    zarr.open_group(url, path=path, mode="r+").attrs["complete"] = False
    with pytest.warns(IncompleteScenesWarning, match="1 incomplete scene .* skipped: b"):
        ds = CacheSceneDataset(url, "train", voxel_size=0.04, train=False)
    assert ds.scene_ids == ["a", "c"]
    with pytest.warns(IncompleteScenesWarning, match="1 incomplete scene"):
        assert select_scenes(Cache.open(url, read_only=True), AdaptConfig()) == ["a", "c"]


@pytest.mark.parametrize("dashboard", [False, True])
def test_the_dask_dashboard_is_off_unless_asked_for(monkeypatch, dashboard):
    """The scheduler's web server stays up for /health, but serves the dashboard (/status)
    only with --dashboard; it listens on 127.0.0.1 either way."""
    import urllib.error
    import urllib.request

    from distributed import Client

    from tttkd.pipeline import cluster

    monkeypatch.setattr(cluster, "worker_specs", lambda *a, **k: {})  # no worker processes
    local = cluster.local_cluster(1, dashboard=dashboard)
    try:
        with Client(local) as client:
            port = client.scheduler_info()["services"]["dashboard"]
            codes = {}
            for path in ("/health", "/status"):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                        codes[path] = r.status
                except urllib.error.HTTPError as e:
                    codes[path] = e.code
        assert local.scheduler_address.startswith("tcp://127.0.0.1:")
    finally:
        local.close()
    assert codes == {"/health": 200, "/status": 200 if dashboard else 404}
