"""Checkpoints round-trip, load on every installed backend, and refuse mismatches clearly."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from tttkd.model.minkunet import minkunet_test
from tttkd.model.network import KDHeadConfig, SegKDNet
from tttkd.model.sparse.base import available_backends
from tttkd.model.sparse.testing import random_coords, room_coords

CLASSES = ["wall", "floor", "chair"]
SPEC = {"name": "dinov2_vits14", "dim": 16, "patch": 14, "sha256": "0" * 64}


def _trained_net() -> SegKDNet:
    torch.manual_seed(0)
    net = SegKDNet(minkunet_test(), 3, 16, KDHeadConfig(hidden=8, norm="batch"))
    coords = random_coords(2000, 40, seed=1)
    net.train()
    net.features(torch.randn(coords.shape[0], 3), coords)  # move BN running statistics
    return net.eval()


def _save(tmp_path, net, **kw):
    path = tmp_path / "ckpt.safetensors"
    args = dict(
        label_set="s3dis13",
        class_names=CLASSES,
        teacher_spec=SPEC,
        config={"lr": 0.005, "voxel_size": 0.04},
        backend="torch",
    )
    args.update(kw)
    save_checkpoint(path, net, **args)
    return path


@pytest.mark.parametrize("backend", available_backends())
def test_round_trip_predicts_the_same_on_every_backend(tmp_path, backend):
    net = _trained_net()
    path = _save(tmp_path, net)
    coords = room_coords(700, seed=2)
    feats = torch.randn(coords.shape[0], 3)
    with torch.no_grad():
        ref = net.predict(feats, coords)
    loaded, info = load_checkpoint(
        path, backend=backend, expect_class_names=CLASSES, expect_teacher_dim=16
    )
    assert info.backend == "torch" and loaded.backend == backend
    assert info.class_names == CLASSES and info.teacher_spec == SPEC
    assert info.config == {"lr": 0.005, "voxel_size": 0.04} and info.label_set == "s3dis13"
    loaded.eval()
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    got = loaded.predict(feats, coords)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_mismatches_are_clear_errors(tmp_path):
    net = _trained_net()
    path = _save(tmp_path, net)
    with pytest.raises(CheckpointError, match="label set 's3dis13'"):
        load_checkpoint(path, expect_class_names=["wall", "floor"])
    with pytest.raises(CheckpointError, match="16-d teacher .*1024-d"):
        load_checkpoint(path, expect_teacher_dim=1024)
    with pytest.raises(CheckpointError, match="class names"):
        _save(tmp_path, net, class_names=["a"])
    with pytest.raises(CheckpointError, match="TeacherSpec dim"):
        _save(tmp_path, net, teacher_spec={**SPEC, "dim": 384})
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint_info(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit_the_metadata_fail_strictly(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = _save(tmp_path, _trained_net())
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    del state["seg_head.bias"]
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="seg_head.bias"):
        load_checkpoint(path)


def test_plain_safetensors_file_is_refused_with_the_fix(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv0p1s1.kernel": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="convert_me_state_dict"):
        load_checkpoint(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a tttkd checkpoint"):
        load_checkpoint(bad)
