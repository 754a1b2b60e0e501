"""``tttkd-train --ssl mae``: the masked-scene head trains jointly and lands in the checkpoint."""

from __future__ import annotations

import torch

from tttkd.model.checkpoint import load_checkpoint
from tttkd.model.config import load_config
from tttkd.model.train import train


def test_ssl_mae_trains_the_head_and_records_it(train_cache, tiny_sets, tmp_path):
    sets = tiny_sets + [
        "epochs=2", "loss.ssl=mae", "loss.mae_patch_size=0.4", "loss.mae_mask_ratio=0.3",
        "augment.enabled=false", "data.val_split=null",
    ]  # fmt: skip
    res = train(load_config(overrides=sets), train_cache, tmp_path / "run", echo=lambda s: None)
    ssl = [r["train"]["loss_ssl"] for r in res.history]
    assert all(v > 0 for v in ssl) and ssl[-1] < ssl[0]  # a real, decreasing L_MAE
    net, info = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert info.mae == {"mask_ratio": 0.3, "patch_size": 0.4, "hidden": 16, "norm": "layer"}
    torch.manual_seed(0)  # training's seed: the head's initial weights
    from tttkd.model.train import build_network

    fresh = build_network(load_config(overrides=sets), 20, 32, "torch")
    trained = net.mae_head.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.mae_head.state_dict().items())
