"""``tttkd-prep``: command structure, dry run, prep + inspect + verify, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tttkd.cli.prep import cli
from tttkd.pipeline.cache import Cache

TINY = ["--teacher", "test_vit_tiny", "--image-size", "28", "--frames", "25k", "--no-progress"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    root = tmp_path_factory.mktemp("scannet_cli")
    write_scannet_dataset(
        root,
        2,
        frames=("25k",),
        splits=["train", "val"],
        image_size=(64, 48),
        views=2,
        domain=Domain(spacing=0.08),
    )
    return root


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_structure_lists_datasets_and_tools():
    r = invoke("--help")
    assert r.exit_code == 0
    for name in ("scannet", "s3dis", "matterport3d", "pointcept", "inspect", "verify"):
        assert name in r.output
    r = invoke("scannet", "--help")
    assert "--frames" in r.output and "--voxel-size" in r.output and "--scheduler" in r.output
    assert "--images-root" in invoke("s3dis", "--help").output
    assert "--frames" not in invoke("matterport3d", "--help").output


def test_dry_run_counts_and_estimates_without_writing(root, tmp_path):
    out = tmp_path / "feats.zarr"
    r = invoke("scannet", "--root", root, "--cache", out, "--dry-run", *TINY)
    assert r.exit_code == 0, r.output
    assert "2 scenes, 0 complete already, 2 to prepare" in r.output
    assert "estimated cache size" in r.output and "MiB" in r.output
    assert "scenes/s with 1 worker(s), teacher" in r.output and "h for 2 scenes" in r.output
    assert not out.exists() and not Path(str(out) + ".failures.json").exists()


def test_prep_then_inspect_and_verify(root, tmp_path):
    out = tmp_path / "feats.zarr"
    r = invoke("scannet", "--root", root, "--cache", out, "--split", "train", *TINY)
    assert r.exit_code == 0, r.output
    assert "done 1, failed 0, skipped 0" in r.output
    r = invoke("scannet", "--root", root, "--cache", out, *TINY)  # adds the val scene
    assert r.exit_code == 0 and "done 1, failed 0, skipped 1" in r.output
    r = invoke("inspect", out)
    assert r.exit_code == 0 and "train" in r.output and "val" in r.output
    assert "test_vit_tiny" in r.output
    summary = json.loads(invoke("inspect", out, "--json").output)
    assert summary["scenes_per_split"] == {"train": 1, "val": 1}
    assert summary["totals"]["correspondences"] > 0
    r = invoke("verify", out)
    assert r.exit_code == 0 and "verified 2 scenes: 2 ok, 0 with problems" in r.output


def test_verify_fails_on_an_incomplete_scene(root, tmp_path):
    import zarr

    out = tmp_path / "feats.zarr"
    assert invoke("scannet", "--root", root, "--cache", out, *TINY).exit_code == 0
    zarr.open_group(str(out), path="scenes/scene0001_00", mode="r+").attrs["complete"] = False
    r = invoke("verify", out)
    assert r.exit_code == 1 and "scene0001_00: incomplete" in r.output


def test_conflicting_rerun_is_refused_unless_overwrite(root, tmp_path):
    out = tmp_path / "feats.zarr"
    args = ["scannet", "--root", root, "--cache", out, "--scenes", "scene0000_00", *TINY]
    assert invoke(*args).exit_code == 0
    r = invoke(*args, "--voxel-size", "0.05")
    assert r.exit_code == 1 and "voxel_size" in r.output and "--overwrite" in r.output
    r = invoke(*args, "--teacher", "test_vit_tiny_reg")
    assert r.exit_code == 1 and "teacher" in r.output
    r = invoke(*args, "--voxel-size", "0.05", "--overwrite")
    assert r.exit_code == 0 and Cache.open(str(out)).meta.voxel_size == 0.05


def test_points_only_needs_no_images_flag(root, tmp_path):
    r = invoke(
        "pointcept", "--root", root, "--cache", tmp_path / "p.zarr", "--label-set", "scannet20"
    )
    assert r.exit_code == 1 and "needs posed images" in r.output and "--no-images" in r.output
    out = tmp_path / "points.zarr"
    r = invoke("scannet", "--root", root, "--cache", out, "--no-images", "--no-progress")
    assert r.exit_code == 0, r.output
    cache = Cache.open(str(out), read_only=True)
    assert cache.meta.image_policy == {"selection": "none", "no_images": True}
    rec = cache.read_scene("scene0000_00")
    assert rec.num_images == 0 and rec.num_corr == 0 and rec.num_points > 0
    assert cache.verify() == {"scene0000_00": [], "scene0001_00": []}


def test_usage_errors(root, tmp_path):
    r = invoke("scannet", "--root", root, "--cache", tmp_path / "x.zarr", "--workers", "2",
               "--scheduler", "tcp://127.0.0.1:1")  # fmt: skip
    assert r.exit_code == 2 and "not both" in r.output
    r = invoke("scannet", "--root", root, "--cache", tmp_path / "x.zarr", "-o", "novalue")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = invoke(
        "scannet", "--root", root, "--cache", tmp_path / "x.zarr", "--scenes", "scene9999_00", *TINY
    )
    assert r.exit_code == 1 and "scene9999_00" in r.output
    r = invoke("inspect", tmp_path / "nothing.zarr")
    assert r.exit_code == 1 and "no tttkd cache" in r.output
    r = invoke("scannet", "--root", root, *TINY)
    assert r.exit_code == 2 and "missing option --cache" in r.output


def test_old_names_out_and_scene_still_work_with_a_deprecation_line(root, tmp_path):
    out = tmp_path / "old.zarr"
    r = CliRunner().invoke(
        cli, ["scannet", "--root", str(root), "--out", str(out), "--scene", "scene0000_00", *TINY]
    )
    assert r.exit_code == 0, r.output
    assert "--out is deprecated" in r.stderr and "use --cache" in r.stderr
    assert "--scene is deprecated" in r.stderr and "use --scenes" in r.stderr
    assert Cache.open(str(out), read_only=True).scene_ids() == ["scene0000_00"]
    r = CliRunner().invoke(cli, ["verify", str(out), "--scene", "scene0000_00"])
    assert r.exit_code == 0 and "verified 1 scenes" in r.output and "use --scenes" in r.stderr


def test_the_cache_records_its_config_and_a_rerun_from_it_is_the_same(root, tmp_path):
    out = tmp_path / "feats.zarr"
    args = ["scannet", "--root", root, "--cache", out, "--scenes", "scene0000_00", *TINY]
    assert invoke(*args, "--seed", "3", "--device", "auto").exit_code == 0
    r = invoke("inspect", out, "--config")
    assert r.exit_code == 0, r.output
    saved = tmp_path / "prep.yaml"
    saved.write_text(r.output)
    import yaml

    record = yaml.safe_load(r.output)
    assert record["seed"] == 3 and record["scenes"] == ["scene0000_00"]
    assert record["device"] in ("cpu", "cuda") and record["teacher"] == "test_vit_tiny"
    assert "overwrite" not in record and "storage_options" not in record
    again = tmp_path / "again.zarr"
    r = invoke("scannet", "--config", saved, "--set", f"out={again}", "--no-progress")
    assert r.exit_code == 0 and "done 1, failed 0, skipped 0" in r.output, r.output
    a, b = Cache.open(str(out), read_only=True), Cache.open(str(again), read_only=True)
    assert a.meta.conflicts_with(b.meta) == []
    assert yaml.safe_load(invoke("inspect", again, "--config").output) == {
        **record,
        "out": str(again),
    }
    r = invoke("s3dis", "--config", saved)
    assert r.exit_code == 2 and "is a scannet config" in r.output


def test_lossy_pca_codec_fits_a_basis_and_reports_fidelity(root, tmp_path):
    out = tmp_path / "pca.zarr"
    r = invoke("scannet", "--root", root, "--cache", out, "--feature-codec", "pca8", *TINY)
    assert r.exit_code == 0 and "pca: 8 components fitted" in r.output, r.output
    cache = Cache.open(str(out), read_only=True)
    assert cache.pca is not None and cache.pca.k == 8
    assert cache.read_scene("scene0000_00").features.shape[-1] == 32  # decoded to D
    cosine = cache.summary()["feature_cosine"]
    assert 0.5 < cosine <= 1.0
    assert "feature cosine vs raw" in invoke("inspect", out).output


def test_pointcept_layout_points_only(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for split, scene in (("train", "scene0000_00"), ("val", "scene0011_00")):
        d = tmp_path / "pc" / split / scene
        d.mkdir(parents=True)
        np.save(d / "coord.npy", (rng.random((4000, 3)) * 3).astype(np.float32))
        np.save(d / "color.npy", rng.integers(0, 256, (4000, 3)).astype(np.uint8))
        np.save(d / "segment20.npy", rng.integers(-1, 20, 4000).astype(np.int64))
    out = tmp_path / "pc.zarr"
    args = ["pointcept", "--root", tmp_path / "pc", "--cache", out, "--no-progress"]
    r = invoke(*args)
    assert r.exit_code == 1 and "--no-images" in r.output
    r = invoke(*args, "--no-images")
    assert r.exit_code == 1 and "--label-set" in r.output
    r = invoke(*args, "--no-images", "--label-set", "scannet20")
    assert r.exit_code == 0, r.output
    cache = Cache.open(str(out), read_only=True)
    assert cache.scene_ids() == ["train/scene0000_00", "val/scene0011_00"]
    assert cache.meta.label_set == "scannet20" and len(cache.meta.class_names) == 20
    rec = cache.read_scene("val/scene0011_00")
    assert rec.split == "val" and rec.num_images == 0 and len(rec.voxel_of_point) == 4000
    assert invoke("verify", out).exit_code == 0
