"""tttkd-adapt warns, and records in results.json, when a scene it scores chose the
checkpoint (the checkpoint's ``selected_on``, written by tttkd-train's validation)."""

from __future__ import annotations

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.runner import run_adaptation
from tttkd.model.checkpoint import load_checkpoint, save_checkpoint


def _checkpoint_selected_on(fx, path, scenes):
    net, info = load_checkpoint(fx.checkpoint)
    save_checkpoint(path, net, label_set=info.label_set, class_names=info.class_names,
                    teacher_spec=info.teacher_spec, config=info.config,
                    selected_on=scenes)  # fmt: skip
    return path


def _adapt(fx, ckpt, scenes):
    lines: list[str] = []
    cfg = AdaptConfig(methods=("source",), scenes=scenes)
    res = run_adaptation(cfg, fx.cache, ckpt, progress=False, echo=lines.append).to_dict()
    return res, lines


def test_scoring_a_scene_that_selected_the_checkpoint_warns(adapt_fixture, tmp_path):
    fx = adapt_fixture
    val = list(fx.val_scenes)
    ckpt = _checkpoint_selected_on(fx, tmp_path / "best.safetensors", [val[1], "elsewhere_00"])
    res, lines = _adapt(fx, ckpt, tuple(val))
    assert res["checkpoint"]["scored_scenes_that_selected_it"] == [val[1]]
    assert res["checkpoint"]["selected_on"] == [val[1], "elsewhere_00"]
    warned = [s for s in lines if "chose this checkpoint" in s]
    assert len(warned) == 1 and val[1] in warned[0] and "--val-fraction" in warned[0]
    assert warned[0] in res["notes"]


def test_no_warning_off_the_selection_scenes(adapt_fixture, tmp_path):
    fx = adapt_fixture
    val = list(fx.val_scenes)
    ckpt = _checkpoint_selected_on(fx, tmp_path / "best.safetensors", [val[0]])
    res, lines = _adapt(fx, ckpt, tuple(val[1:]))
    assert res["checkpoint"]["scored_scenes_that_selected_it"] == []
    assert not any("chose this checkpoint" in s for s in lines + res["notes"])
