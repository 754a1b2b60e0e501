"""The training loop end to end on a real cache: learning, exact resume, Source-Only, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tttkd.model.checkpoint import load_checkpoint, read_checkpoint_info
from tttkd.model.config import ConfigError, load_config
from tttkd.model.runlog import read_log
from tttkd.model.train import resolve_config, train
from tttkd.pipeline.cache import Cache


def info_classes() -> tuple[str, ...]:
    from tttkd.core import get_label_set

    return get_label_set("scannet20").class_names


def run(cache: str, out, sets: list[str], **kw):
    return train(load_config(overrides=sets), cache, out, echo=lambda s: None, **kw)


def test_overfits_one_scene_and_loss_decreases(train_cache, tiny_sets, tmp_path):
    sets = tiny_sets + [
        "epochs=30",
        "optim.lr=0.02",
        "augment.enabled=false",
        "data.train_split=val",  # the one-scene split: a tiny overfit set
        "data.val_split=val",
        "runtime.val_every=30",
    ]
    res = run(train_cache, tmp_path / "run", sets)
    losses = [r["train"]["loss"] for r in res.history]
    kd = [r["train"]["loss_kd"] for r in res.history]
    assert losses[-1] < 0.6 * losses[0] and kd[-1] < 0.5 * kd[0]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    val = res.history[-1]["val"]["voxel"]
    assert res.history[-1]["train"]["accuracy"] > 0.9 and val["accuracy"] > 0.9
    assert val["iou"]["floor"] > 0.5 and set(val["iou"]) <= set(info_classes())
    assert "val" not in res.history[0]  # val_every
    # the checkpoint is a real tttkd checkpoint carrying the resolved config
    net, info = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert info.config["data"]["voxel_size"] == 0.2 and info.config["optim"]["lr"] == 0.02
    assert info.teacher_dim == 32 and info.label_set == "scannet20" and info.backend == "torch"
    # the metadata-only reader (no weights loaded) gives what loading the checkpoint gives
    assert read_checkpoint_info(tmp_path / "run" / "best.safetensors") == info
    assert (tmp_path / "run" / "config.yaml").is_file()
    steps = read_log(tmp_path / "run" / "log.jsonl", "step")
    assert steps and {"loss", "loss_seg", "loss_kd", "lr"} <= set(steps[0])


def test_resume_is_exact(train_cache, tiny_sets, tmp_path):
    """2 epochs in one go == 1 epoch + resume 1 (full recipe: augmentation, Mix3D, KD).

    Two torch threads on purpose: with more than one, a non-deterministic backward (e.g. the
    one of advanced indexing) would make the two runs differ."""
    torch.set_num_threads(2)
    sets = tiny_sets + ["epochs=2", "data.val_split=null", "optim.grad_clip=1.0"]
    run(train_cache, tmp_path / "a", sets)
    first = run(train_cache, tmp_path / "b", sets, stop_after_epochs=1)
    assert first.epochs_done == 1
    mid = load_file(str(tmp_path / "b" / "last.safetensors"))
    second = run(train_cache, tmp_path / "b", sets, resume=True)
    assert second.epochs_done == 2 and [r["epoch"] for r in second.history] == [2]
    a = load_file(str(tmp_path / "a" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "last.safetensors"))
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], mid[k]) for k in a)  # the second epoch did train
    sa = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert sa["scheduler"] == sb["scheduler"] and sa["global_step"] == sb["global_step"]
    for i, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], sb["optimizer"]["state"][i]["exp_avg_sq"])
    # resuming with another recipe is refused; runtime settings may change
    with pytest.raises(ConfigError, match="optim.lr: 0.005 -> 0.01"):
        run(train_cache, tmp_path / "b", [*sets, "optim.lr=0.01"], resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        run(train_cache, tmp_path / "b", sets)
    with pytest.raises(ConfigError, match="no run to resume"):
        run(train_cache, tmp_path / "c", sets, resume=True)


def test_no_kd_is_source_only(train_cache, tiny_sets, tmp_path):
    sets = tiny_sets + ["epochs=1", "loss.kd=false", "data.val_split=val"]
    res = run(train_cache, tmp_path / "so", sets)
    assert res.history[0]["train"]["loss_kd"] == 0.0
    net, info = load_checkpoint(tmp_path / "so" / "last.safetensors")
    assert info.config["loss"]["kd"] is False
    torch.manual_seed(0)  # same seed as training: the untrained rho_2D is the initial one
    from tttkd.model.train import build_network

    fresh = build_network(load_config(overrides=tiny_sets), 20, 32, "torch")
    for (k, p), q in zip(net.kd_head.state_dict().items(), fresh.kd_head.state_dict().values()):
        assert torch.equal(p, q), k
    assert res.history[0]["val"]["scenes"] == 1


def test_config_checks_against_the_cache(train_cache):
    meta = Cache.open(train_cache, read_only=True).meta
    assert resolve_config(load_config(), meta).data.voxel_size == 0.1  # the cache's
    with pytest.raises(ConfigError, match="finer than the cache's 0.1"):
        resolve_config(load_config(overrides=["data.voxel_size=0.05"]), meta)
    import dataclasses

    no_img = dataclasses.replace(meta, image_policy={"selection": "none", "no_images": True})
    with pytest.raises(ConfigError, match="--no-kd"):
        resolve_config(load_config(), no_img)
    assert not resolve_config(load_config(overrides=["loss.kd=false"]), no_img).loss.kd


def test_sparse_sync_bn_conversion_keeps_weights_and_output():
    from tttkd.model.distributed import SparseSyncBatchNorm, convert_sparse_sync_bn
    from tttkd.model.minkunet import minkunet_test
    from tttkd.model.network import SegKDNet
    from tttkd.model.sparse.base import SparseContext

    torch.manual_seed(0)
    net = SegKDNet(minkunet_test(), 5, 8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    coords = torch.unique(torch.randint(0, 12, (300, 3)), dim=0).int()
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)
    feats = torch.randn(len(coords), 3)
    net.eval()
    ref = net.predict(feats, SparseContext(coords))
    conv = convert_sparse_sync_bn(net)
    assert sum(isinstance(m, SparseSyncBatchNorm) for m in conv.modules()) > 10
    assert conv.state_dict().keys() == before.keys()
    assert all(torch.equal(conv.state_dict()[k], v) for k, v in before.items())
    torch.testing.assert_close(conv.predict(feats, SparseContext(coords)), ref)
