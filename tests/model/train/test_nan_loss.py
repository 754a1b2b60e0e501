"""A non-finite loss stops training with the step and the batch's scenes named, and no
checkpoint is ever written from non-finite weights.

Before: training went on with NaN weights and wrote them to last/best.safetensors.
"""

from __future__ import annotations

import math

import pytest
import torch

from tttkd.model.config import load_config
from tttkd.model.nan_guard import NonFiniteError, check_finite_weights
from tttkd.model.train import train


def test_a_diverging_run_stops_naming_step_and_scenes(train_cache, tiny_sets, tmp_path):
    out = tmp_path / "run"
    sets = [*tiny_sets, "epochs=3", "optim.lr=1.0e+30", "optim.grad_clip=0"]
    with pytest.raises(NonFiniteError) as e:
        train(load_config(overrides=sets), train_cache, out, echo=lambda s: None)
    msg = str(e.value)
    assert "non-finite" in msg and "step" in msg and "scene00" in msg, msg
    for name in ("last.safetensors", "best.safetensors"):
        if (out / name).exists():  # an epoch that ended finite may have been saved
            from safetensors.torch import load_file

            weights = load_file(str(out / name))
            assert all(torch.isfinite(w).all() for w in weights.values()), name


def test_weights_are_checked_before_a_save():
    net = torch.nn.Linear(3, 2)
    check_finite_weights(net, "last.safetensors")
    with torch.no_grad():
        net.weight[0, 0] = math.nan
    with pytest.raises(NonFiniteError, match=r"last.safetensors.*weight"):
        check_finite_weights(net, "last.safetensors")
