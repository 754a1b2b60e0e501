"""The serial prep end to end: a cache that matches the rendered truth, reruns that skip what
is complete, bad scenes listed while the others complete, and settings conflicts.

Exact-format synthetic ScanNet (``tttkd.synthetic``), the real reader, a real Zarr cache on
disk and the tiny test teacher (rooms and reference cache: ``tests/pipeline/conftest.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.pipeline.prep_runs import FIRST4, assert_same_contents, contents
from tests.tiny_prep import tiny_prep_config
from tttkd.core import project
from tttkd.pipeline.cache import Cache, CacheError
from tttkd.pipeline.run import run_prep
from tttkd.pipeline.voxelize import voxelize


def test_serial_cache_is_verified_and_matches_the_rendered_truth(prep_rooms, serial_cache):
    _, truths = prep_rooms
    cache = Cache.open(str(serial_cache), read_only=True)
    assert cache.verify() == {s: [] for s in FIRST4}
    assert cache.meta.teacher["name"] == "test_vit_tiny" and cache.meta.voxel_size == 0.04
    assert cache.meta.point_voxel_size == 0.01  # schema 2: points kept on voxel / 4
    n_hidden = 0
    for sid in FIRST4:
        rec, truth = cache.read_scene(sid), truths[sid]
        vox = voxelize(truth.xyz, 0.01)
        np.testing.assert_array_equal(rec.xyz, truth.xyz[vox.keep])  # reader + voxelize
        np.testing.assert_array_equal(rec.voxel_of_point, vox.voxel_of_point)
        np.testing.assert_array_equal(rec.full_label, truth.label)
        frames = {f.name: f for f in truth.frames if f.valid}
        assert (
            rec.image_names == sorted(frames) and rec.attrs["frames"]["available"] == 3
        )  # reader skips -inf poses
        h, w = rec.features.shape[1:3]
        agree = total = 0
        for i, name in enumerate(rec.image_names):
            f = frames[name]
            s = slice(rec.corr_offsets[i], rec.corr_offsets[i + 1])
            pts, uv = rec.corr_point[s], rec.corr_uv[s].astype(np.float64)
            W, H = f.size_25k
            uv_pix = (uv + 0.5) * [W / w, H / h] - 0.5
            uv_true, z = project(rec.xyz[pts], f.K_25k, f.c2w)  # the truth's own camera
            np.testing.assert_allclose(uv_pix, uv_true, atol=2e-3)
            # the surface seen at the pair's pixel is the point's own box (rendered truth)
            iu, iv = np.floor(uv_true.T + 0.5).astype(int)
            agree += (f.box_index_25k[iv, iu] == truth.box_index[vox.keep][pts]).sum()
            total += len(pts)
            # points hidden behind a nearer surface (rendered depth, own camera) never pair
            all_uv, all_z = project(rec.xyz, f.depth_K, f.c2w)
            ju, jv = np.floor(all_uv.T + 0.5).astype(int)
            dw, dh = f.depth_size
            inside = (all_z > 0) & (ju >= 0) & (ju < dw) & (jv >= 0) & (jv < dh)
            d = np.full(len(all_z), np.inf)
            d[inside] = f.depth_mm[jv[inside], ju[inside]] / 1000.0
            hidden = inside & (d > 0) & (all_z - d > 1.2 * (0.05 + 0.1 * d))  # beyond tolerance
            n_hidden += hidden.sum()
            assert not np.isin(np.flatnonzero(hidden), pts).any()
        assert total > 0 and agree / total > 0.85
    assert n_hidden > 100  # the scenes do exercise occlusion


def test_rerun_skips_complete_and_redoes_incomplete(prep_rooms, serial_cache, tmp_path):
    import zarr

    root, _ = prep_rooms
    out = tmp_path / "copy.zarr"
    shutil.copytree(serial_cache, out)
    before = {s: Cache.open(str(out)).scene_info(s)["info"]["run"] for s in FIRST4}
    # an interrupted write: the group exists but was never marked complete
    group = zarr.open_group(str(out), path="scenes/scene0002_00", mode="r+")
    group.attrs["complete"] = False
    report = run_prep(tiny_prep_config(root, out, scenes=FIRST4), progress=False)
    assert report.done == ["scene0002_00"] and sorted(report.skipped) == [
        "scene0000_00",
        "scene0001_00",
        "scene0003_00",
    ]
    cache = Cache.open(str(out), read_only=True)
    after = {s: cache.scene_info(s)["info"]["run"] for s in FIRST4}
    assert after["scene0002_00"] != before["scene0002_00"]
    assert all(after[s] == before[s] for s in FIRST4 if s != "scene0002_00")
    assert_same_contents(contents(serial_cache), contents(out))


def test_bad_scenes_are_listed_and_others_complete(prep_rooms, tmp_path):
    root, _ = prep_rooms
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    # 1: a truncated PLY; 2: every pose invalid; 3: cameras 1 km away (sees nothing)
    ply = bad / "scans/scene0001_00/scene0001_00_vh_clean_2.ply"
    ply.write_bytes(ply.read_bytes()[:900])
    for p in (bad / "scannet_frames_25k/scene0002_00/pose").iterdir():
        p.write_text("-inf -inf -inf -inf\n" * 4)
    for p in (bad / "scannet_frames_25k/scene0003_00/pose").iterdir():
        m = np.loadtxt(p)
        if np.isfinite(m).all():
            m[:3, 3] += 1000.0
            p.write_text("\n".join(" ".join(f"{v:f}" for v in row) for row in m) + "\n")
    out = tmp_path / "feats.zarr"
    report = run_prep(
        tiny_prep_config(bad, out, scenes=FIRST4), progress=False, echo=lambda s: None
    )
    assert report.exit_code == 1 and report.done == ["scene0000_00"]
    reasons = {f["scene_id"]: f["reason"] for f in report.failed}
    assert sorted(reasons) == ["scene0001_00", "scene0002_00", "scene0003_00"]
    assert "scene0001_00_vh_clean_2.ply" in reasons["scene0001_00"]
    assert "no image" in reasons["scene0002_00"]
    assert "zero correspondences" in reasons["scene0003_00"]
    listed = json.loads(Path(str(out) + ".failures.json").read_text())
    assert {f["scene_id"]: f["reason"] for f in listed["failures"]} == reasons
    assert Cache.open(str(out)).scene_ids() == ["scene0000_00"]


def test_other_voxel_size_is_a_conflict_unless_overwrite(prep_rooms, serial_cache, tmp_path):
    root, _ = prep_rooms
    out = tmp_path / "c.zarr"
    shutil.copytree(serial_cache, out)
    with pytest.raises(CacheError, match="voxel_size"):
        run_prep(tiny_prep_config(root, out, scenes=FIRST4[:1], voxel_size=0.05), progress=False)
    with pytest.raises(CacheError, match="reader"):
        opts = {"frames": "25k", "align": True}
        run_prep(
            tiny_prep_config(root, out, scenes=FIRST4[:1], reader_options=opts), progress=False
        )
    r = run_prep(
        tiny_prep_config(root, out, scenes=FIRST4[:1], voxel_size=0.05, overwrite=True),
        progress=False,
    )
    assert r.exit_code == 0 and Cache.open(str(out)).meta.voxel_size == 0.05
    assert Cache.open(str(out)).scene_ids() == ["scene0000_00"]
