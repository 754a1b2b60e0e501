"""The training config: paper defaults, YAML deltas, --set overrides, strict keys and types."""

from __future__ import annotations

import pytest

from tttkd.model.config import (
    ConfigError,
    TrainConfig,
    config_diff,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def test_defaults_are_the_papers():
    c = TrainConfig()
    assert c.optim.lr == 0.005 and c.optim.weight_decay == 1e-4
    assert c.optim.div_factor == 10 and c.optim.final_div_factor == 1000
    assert c.loss.label_smoothing == 0.2 and c.loss.kd_weight == 1.0 and c.loss.kd
    assert c.augment.mix3d_p == 0.5 and c.model.arch == "minkunet34c"
    assert c.data.voxel_size is None  # taken from the cache (4 cm by default)


def test_yaml_delta_then_set_overrides_in_order(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("optim:\n  lr: 0.01\naugment:\n  scale: [0.8, 1.2]\nepochs: 7\n")
    b = tmp_path / "b.yaml"
    b.write_text("optim: {weight_decay: 0.001}\n")
    c = load_config([a, b], ["optim.lr=0.02", "data.voxel_size=0.02", "model.stem_kernel=null"])
    assert c.optim.lr == 0.02 and c.optim.weight_decay == 0.001 and c.epochs == 7
    assert c.augment.scale == (0.8, 1.2) and isinstance(c.augment.scale, tuple)
    assert c.data.voxel_size == 0.02 and c.model.stem_kernel is None
    assert c.optim.div_factor == 10  # untouched defaults stay
    assert isinstance(load_config(overrides=["optim.lr=1"]).optim.lr, float)  # int -> float


@pytest.mark.parametrize(
    "item, message",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr'; did you mean 'lr'"),
        ("nope=1", "unknown config key 'nope'"),
        ("optim.lr.x=1", "optim.lr: expected a number"),
        ("optim=3", "optim: expected a mapping"),
        ("epochs=1.5", "epochs: expected an integer"),
        ("loss.kd=maybe", "loss.kd: expected true/false"),
        ("model.kd_norm=group", "model.kd_norm: 'group' is not one of"),
        ("augment.scale=[1.0]", "augment.scale: expected 2 values"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("augment.mix3d_p=1.5", "augment.mix3d_p is a probability"),
        ("optim.lr", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_errors(item, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(overrides=[item])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    f = tmp_path / "delta.yaml"
    f.write_text("data:\n  batchsize: 4\n")
    with pytest.raises(ConfigError, match=r"delta.yaml: unknown config key 'data.batchsize'"):
        load_config([f])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.yaml"])


def test_save_load_round_trip_and_diff(tmp_path):
    c = load_config(overrides=["optim.lr=0.003", "runtime.num_workers=1"])
    path = tmp_path / "config.yaml"
    save_config(c, path)
    import yaml

    back = config_from_dict(yaml.safe_load(path.read_text()))
    assert back == c and config_to_dict(back) == config_to_dict(c)
    other = load_config(overrides=["optim.lr=0.004", "runtime.num_workers=3"])
    assert config_diff(c, other) == [
        "optim.lr: 0.003 -> 0.004",
        "runtime.num_workers: 1 -> 3",
    ]
    assert config_diff(c, other, ignore=("runtime",)) == ["optim.lr: 0.003 -> 0.004"]


@pytest.mark.parametrize("cycle", [True, False])
def test_one_cycle_momentum_is_explicit(cycle):
    """With cycle_momentum OneCycleLR drives AdamW's beta1 (0.95 -> 0.85 -> 0.95) and the
    configured betas[0] never applies; without, betas[0] holds for the whole run."""
    import torch

    from tttkd.model.train_setup import make_optimizer

    cfg = load_config(overrides=["epochs=1", f"optim.cycle_momentum={str(cycle).lower()}"])
    assert cfg.optim.cycle_momentum is cycle and cfg.optim.betas[0] == 0.9
    p = torch.nn.Parameter(torch.zeros(3))
    optimizer, scheduler = make_optimizer([p], cfg, steps_per_epoch=10)
    beta1 = []
    for _ in range(9):
        beta1.append(optimizer.param_groups[0]["betas"][0])
        p.grad = torch.ones(3)
        optimizer.step()
        scheduler.step()
    if cycle:
        assert beta1[0] == pytest.approx(0.95) and min(beta1) == pytest.approx(0.85, abs=0.01)
    else:
        assert beta1 == [0.9] * 9
    with pytest.raises(ConfigError, match="optim.base_momentum"):
        load_config(overrides=["optim.base_momentum=0.99"])
