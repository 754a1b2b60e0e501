"""The command line end to end (real cache, real checkpoint, files on disk) and the scoring:
outputs exist and parse; cross-dataset evaluation uses the shared classes only."""

from __future__ import annotations

import csv
import json

import numpy as np
from click.testing import CliRunner

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.evaluation import full_resolution
from tttkd.adapt.runner import run_adaptation
from tttkd.cli.adapt import cli
from tttkd.core import shared_classes, source_to_target
from tttkd.pipeline.cache import Cache

PNG = b"\x89PNG\r\n\x1a\n"


def _invoke(args: list[str]):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    return res


def test_cli_writes_json_csv_table_plots_and_predictions(adapt_fixture, tmp_path):
    fx = adapt_fixture
    out = tmp_path / "run"
    scenes = fx.val_scenes[:2]
    res = _invoke(
        [
            "--cache",
            fx.cache,
            "--checkpoint",
            str(fx.checkpoint),
            "--out",
            str(out),
            "--method",
            "source,ttt-kd,ttt-kd-online,bn,tent",
            "--steps",
            "2",
            "--bn-passes",
            "2",
            "--scenes",
            ",".join(scenes),
            "--device",
            "cpu",
            "--no-progress",
            "--save-predictions",
            "--ply",
            "--seed",
            "3",
        ]
    )
    assert res.exit_code == 0, res.output
    assert "| method | mIoU | gain vs source |" in res.output
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["steps"] == 2 and result["config"]["seed"] == 3
    assert result["config"]["methods"] == ["source", "ttt-kd", "ttt-kd-online", "bn", "tent"]
    assert result["scenes"] == list(scenes)
    for m in result["methods"].values():
        assert sorted(m["scenes"]) == sorted(scenes)
        assert 0 <= m["overall"]["miou"] <= 1 and set(m["overall"]["iou"]) == set(
            result["evaluation"]["scored_classes"]
        )
        assert m["timing"]["seconds"] > 0 and m["timing"]["scenes_per_s"] > 0
    assert result["methods"]["ttt-kd"]["timing"]["ms_per_step"] > 0
    assert result["methods"]["ttt-kd"]["timing"]["steps"] == 4
    assert result["timing"]["peak_rss_mb"] > 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 5 * (len(scenes) + 1)
    all_rows = {r["method"]: r for r in rows if r["scene"] == "ALL"}
    assert float(all_rows["ttt-kd"]["miou"]) == result["methods"]["ttt-kd"]["overall"]["miou"]
    table = (out / "table.md").read_text()
    assert table.count("\n| ") >= 5 and "| ttt-kd-online |" in table
    for png in ("class_iou.png", "scene_gain.png"):
        assert (out / png).read_bytes()[:8] == PNG
    # predictions: full resolution, checkpoint ids; PLY of the voxel points
    from plyfile import PlyData

    cache = Cache.open(fx.cache, read_only=True)
    for sid in scenes:
        rec = cache.read_points(sid)
        pred = np.load(out / "predictions" / "ttt-kd" / f"{sid}.npy")
        assert pred.shape == rec.full_label.shape and pred.dtype == np.int16
        assert pred.min() >= 0 and pred.max() < 20
        ply = PlyData.read(str(out / "predictions" / "ttt-kd" / f"{sid}.ply"))
        assert ply["vertex"].count == rec.num_points
        # the saved labels reproduce the reported per-scene accuracy
        acc = np.mean(pred[rec.full_label >= 0] == rec.full_label[rec.full_label >= 0])
        assert abs(acc - result["methods"]["ttt-kd"]["scenes"][sid]["accuracy"]) < 1e-9


def test_cli_reports_missing_options_and_bad_methods(adapt_fixture, tmp_path):
    res = CliRunner().invoke(cli, ["--out", str(tmp_path)])
    assert res.exit_code != 0 and "--cache" in res.output and "--checkpoint" in res.output
    res = CliRunner().invoke(
        cli,
        [
            "--cache",
            adapt_fixture.cache,
            "--checkpoint",
            str(adapt_fixture.checkpoint),
            "--out",
            str(tmp_path),
            "--method",
            "source,magic",
            "--no-progress",
        ],
    )
    assert res.exit_code != 0 and "unknown method 'magic'" in res.output
    assert "--stride" in CliRunner().invoke(cli, ["--help"]).output


def test_cross_dataset_evaluation_scores_only_shared_classes(adapt_fixture):
    """An S3DIS-trained checkpoint on a ScanNet cache: the 8 shared classes are scored, a
    predicted S3DIS-only class (e.g. beam) counts as wrong, other ScanNet classes ignored."""
    fx = adapt_fixture
    preds = {}
    result = run_adaptation(
        AdaptConfig(methods=("source",), split="val", device="cpu"),
        fx.cache,
        fx.s3dis_checkpoint,
        progress=False,
        echo=lambda s: None,
        on_scene=lambda m, s, o: preds.__setitem__(s, o.logits.argmax(1).numpy()),
    )
    shared = list(shared_classes("s3dis13", "scannet20"))
    assert result.evaluation["cross_dataset"] and result.evaluation["scored_classes"] == shared
    assert len(shared) == 8
    assert set(result.methods["source"]["overall"]["iou"]) == set(shared)
    # recompute the overall IoU by hand from the raw predictions
    cache = Cache.open(fx.cache, read_only=True)
    names = cache.meta.class_names
    lut = source_to_target("s3dis13", "scannet20")
    tp = dict.fromkeys(shared, 0)
    fp = dict.fromkeys(shared, 0)
    fn = dict.fromkeys(shared, 0)
    for sid, p in preds.items():
        rec = cache.read_points(sid)
        pred = lut[full_resolution(p, rec.voxel_of_point)]  # S3DIS id -> ScanNet id or -1
        gt = rec.full_label.astype(np.int64)
        keep = np.isin(gt, [names.index(c) for c in shared])
        for c in shared:
            k = names.index(c)
            tp[c] += int(np.sum(keep & (gt == k) & (pred == k)))
            fp[c] += int(np.sum(keep & (gt != k) & (pred == k)))
            fn[c] += int(np.sum(keep & (gt == k) & (pred != k)))
    iou = result.methods["source"]["overall"]["iou"]
    for c in shared:
        denom = tp[c] + fp[c] + fn[c]
        expected = tp[c] / denom if denom else None
        assert (iou[c] is None and expected is None) or abs(iou[c] - expected) < 1e-12, c
    valid = [v for v in iou.values() if v is not None]
    assert abs(result.methods["source"]["overall"]["miou"] - np.mean(valid)) < 1e-12


def test_sweep_writes_csv_and_figure(adapt_fixture, tmp_path):
    fx = adapt_fixture
    out = tmp_path / "sweep"
    res = _invoke(
        [
            "sweep",
            "--cache",
            fx.cache,
            "--checkpoint",
            str(fx.checkpoint),
            "--out",
            str(out),
            "--over",
            "steps,stride,images",
            "--values",
            "steps=0,2",
            "--values",
            "stride=1,2",
            "--values",
            "images=1",
            "--scenes",
            ",".join(fx.val_scenes[:2]),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    got = [(r["sweep"], r["value"], r["method"]) for r in rows]
    assert got == [
        ("source", "-", "source"),
        ("steps", "0.0", "ttt-kd"),
        ("steps", "2.0", "ttt-kd"),
        ("stride", "1.0", "ttt-kd-online"),
        ("stride", "2.0", "ttt-kd-online"),
        ("images", "1.0", "ttt-kd"),
    ]
    by = {(r["sweep"], r["value"]): r for r in rows}
    assert by["steps", "0.0"]["miou"] == by["source", "-"]["miou"]  # 0 steps = source
    assert (out / "figure1.png").read_bytes()[:8] == PNG
    assert (out / "runs" / "steps_2" / "results.json").is_file()


def test_scenes_use_the_networks_voxel_size(adapt_fixture, tmp_path):
    """A network trained at 0.3 m sees the cache re-voxelized at 0.3 m; one trained finer
    than the cache is refused with the fix."""
    import pytest

    from tttkd.adapt.config import AdaptConfigError
    from tttkd.model.checkpoint import load_checkpoint, save_checkpoint

    fx = adapt_fixture
    net, info = load_checkpoint(fx.checkpoint)
    kw = dict(
        label_set=info.label_set, class_names=info.class_names, teacher_spec=info.teacher_spec
    )
    coarse, fine = tmp_path / "coarse.safetensors", tmp_path / "fine.safetensors"
    save_checkpoint(coarse, net, config={"data": {"voxel_size": 0.3}}, **kw)
    save_checkpoint(fine, net, config={"data": {"voxel_size": 0.05}}, **kw)
    result = run_adaptation(
        AdaptConfig(methods=("source",), scenes=fx.val_scenes[:1]),
        fx.cache,
        coarse,
        progress=False,
        echo=lambda s: None,
    )
    assert result.cache["network_voxel_size"] == 0.3
    assert any("re-voxelized at the network's 0.3 m" in n for n in result.notes)
    with pytest.raises(AdaptConfigError, match="--voxel-size 0.05"):
        run_adaptation(
            AdaptConfig(methods=("source",), scenes=fx.val_scenes[:1]),
            fx.cache,
            fine,
            progress=False,
            echo=lambda s: None,
        )
