"""Model selection off the reported split: best.safetensors is chosen on held-out TRAINING
scenes (seeded), and the scenes are recorded in the run folder and the checkpoint."""

from __future__ import annotations

import json

import pytest

from tttkd.model.checkpoint import read_checkpoint_info
from tttkd.model.config import ConfigError, load_config
from tttkd.model.runlog import read_log
from tttkd.model.selection import held_out_scenes
from tttkd.model.train import train
from tttkd.pipeline.cache import Cache


def _run(cache: str, out, sets: list[str]):
    return train(load_config(overrides=sets), cache, out, echo=lambda s: None)


def test_val_fraction_validates_on_held_out_training_scenes(train_cache, tiny_sets, tmp_path):
    train_ids = Cache.open(train_cache, read_only=True).scene_ids("train")
    assert len(train_ids) == 3
    sets = tiny_sets + ["epochs=2", "data.val_fraction=0.34", "seed=3"]
    res = _run(train_cache, tmp_path / "run", sets)
    held = held_out_scenes(train_ids, 0.34, 3)
    assert len(held) == 1 and set(held) <= set(train_ids)
    record = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert record["selected_on"] == held and "held-out 0.34 of split 'train'" in record["how"]
    start = read_log(tmp_path / "run" / "log.jsonl", "start")[0]
    assert start["scenes_train"] == 2 and start["scenes_val"] == 1  # held out of training
    assert res.history[-1]["val"]["scenes"] == 1
    assert read_checkpoint_info(tmp_path / "run" / "best.safetensors").selected_on == held
    assert read_checkpoint_info(tmp_path / "run" / "last.safetensors").selected_on == []
    # seeded: another seed may hold out another scene, the same seed the same one
    assert held_out_scenes(train_ids, 0.34, 3) == held
    assert {tuple(held_out_scenes(train_ids, 0.34, s)) for s in range(8)} != {tuple(held)}


def test_default_run_selects_on_no_scene(train_cache, tiny_sets, tmp_path):
    cfg = load_config(overrides=tiny_sets)
    assert cfg.data.val_split is None and cfg.data.val_fraction == 0.0
    res = _run(train_cache, tmp_path / "run", tiny_sets + ["epochs=1"])
    assert "val" not in res.history[0]
    assert read_checkpoint_info(tmp_path / "run" / "best.safetensors").selected_on == []
    assert json.loads((tmp_path / "run" / "selection.json").read_text())["selected_on"] == []


def test_bad_val_fraction_is_a_clear_error():
    with pytest.raises(ConfigError, match="data.val_fraction"):
        load_config(overrides=["data.val_fraction=1.5"])
    with pytest.raises(ConfigError, match="data.val_split=null"):
        load_config(overrides=["data.val_fraction=0.1", "data.val_split=val"])
    with pytest.raises(ConfigError, match="leaves none to train on"):
        held_out_scenes(["a", "b"], 0.9, 0)
