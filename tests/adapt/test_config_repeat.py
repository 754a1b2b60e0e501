"""``tttkd-adapt --config results.json`` repeats a run: the same resolved config, the same
scores; named options and ``--set`` change it on top."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tttkd.cli.adapt import cli


def _run(fx, out, *args: str) -> dict:
    base = ["--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(out)]
    res = CliRunner().invoke(cli, [*base, "--no-progress", "--no-plots", *args])
    assert res.exit_code == 0, res.output
    return json.loads((out / "results.json").read_text())


def test_a_saved_results_json_repeats_the_run(adapt_fixture, tmp_path):
    fx = adapt_fixture
    scene = fx.val_scenes[0]
    first = _run(
        fx, tmp_path / "a", "--method", "source,ttt-kd", "--steps", "1", "--scenes", scene,
        "--device", "cpu", "--threads", "1", "--max-images", "0", "--seed", "5",
    )  # fmt: skip
    assert first["config"]["max_images"] is None  # 0 = every cached image
    again = _run(fx, tmp_path / "b", "--config", str(tmp_path / "a" / "results.json"))
    assert again["config"] == first["config"]
    for method in ("source", "ttt-kd"):
        assert again["methods"][method]["overall"] == first["methods"][method]["overall"]
    changed = _run(
        fx, tmp_path / "c", "--config", str(tmp_path / "a" / "results.json"),
        "--method", "source", "--set", "seed=6",
    )  # fmt: skip
    assert changed["config"] == {**first["config"], "methods": ["source"], "seed": 6}
