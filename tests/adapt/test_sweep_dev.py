"""``tttkd-adapt sweep --dev-scenes``: tuning runs on development scenes only, and the scenes
left to report on are recorded; the ``lr`` sweep. Real cache and checkpoint (conftest.py)."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner

from tttkd.cli.adapt import cli


def _sweep(fx, out, *extra):
    args = ["sweep", "--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(out),
            "--over", "lr", "--values", "lr=0.3,1", "--steps", "1", "--split", "val",
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_lr_sweep_runs_only_on_the_dev_scenes_and_records_the_rest(adapt_fixture, tmp_path):
    fx = adapt_fixture
    val = list(fx.val_scenes)
    res = _sweep(fx, tmp_path / "s", "--dev-scenes", val[2])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "s" / "sweep.csv").open()))
    assert [(r["sweep"], r["value"]) for r in rows] == [
        ("source", "-"),
        ("lr", "0.3"),
        ("lr", "1.0"),
    ]
    record = json.loads((tmp_path / "s" / "dev_scenes.json").read_text())
    assert record == {"dev_scenes": [val[2]], "report_on": val[:2]}
    for run in ("source", "lr_0.3", "lr_1"):
        result = json.loads((tmp_path / "s" / "runs" / run / "results.json").read_text())
        assert result["scenes"] == [val[2]], run  # never a scene to report
    lr1 = json.loads((tmp_path / "s" / "runs" / "lr_1" / "results.json").read_text())
    assert lr1["config"]["lr"] == 1.0
    assert "report on the other 2" in res.output


def test_dev_scenes_as_a_seeded_count_and_errors(adapt_fixture, tmp_path):
    fx = adapt_fixture
    res = _sweep(fx, tmp_path / "a", "--dev-scenes", "2")
    assert res.exit_code == 0, res.output
    a = json.loads((tmp_path / "a" / "dev_scenes.json").read_text())
    assert len(a["dev_scenes"]) == 2 and len(a["report_on"]) == 1
    assert sorted(a["dev_scenes"] + a["report_on"]) == sorted(fx.val_scenes)
    res = _sweep(fx, tmp_path / "b", "--dev-scenes", "3")  # nothing left to report
    assert res.exit_code == 1 and "choose between 1 and 2" in res.output
    res = _sweep(fx, tmp_path / "c", "--dev-scenes", "scene9999_00")
    assert res.exit_code == 1 and "not among the 3 selected scenes" in res.output
