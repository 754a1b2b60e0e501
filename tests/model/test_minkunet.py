"""MinkUNet layout, shapes, gradients, and the geometry it must respect."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.batch import Sample, collate
from tttkd.model.minkunet import (
    ARCHITECTURES,
    backbone_from_arch,
    build_backbone,
    minkunet34c,
    minkunet_test,
)
from tttkd.model.network import KDHeadConfig, SegKDNet
from tttkd.model.sparse.base import SparseContext, SparseTensor
from tttkd.model.sparse.testing import random_coords, room_coords


def test_minkunet34c_layout():
    net = minkunet34c(in_channels=3)
    n_params = sum(p.numel() for p in net.parameters())
    # MinkUNet34C is "37.9M" in Pointcept's model zoo, with a 96 x 20 classifier we lack
    assert 37.8e6 < n_params < 37.9e6
    sd = net.state_dict()
    assert sd["conv0p1s1.weight"].shape == (125, 3, 32)
    assert sd["conv1p1s2.weight"].shape == (8, 32, 32)
    assert sd["block4.5.conv2.weight"].shape == (27, 256, 256)
    assert "block4.6.conv1.weight" not in sd
    assert sd["convtr4p16s2.weight"].shape == (8, 256, 256)
    assert sd["block5.0.conv1.weight"].shape == (27, 256 + 128, 256)
    assert sd["block8.0.downsample.0.weight"].shape == (1, 96 + 32, 96)
    assert sd["block8.1.conv2.weight"].shape == (27, 96, 96)
    assert net.out_channels == 96
    layers = [
        max(int(k.split(".")[1]) for k in sd if k.startswith(f"block{i}.")) + 1 for i in range(1, 9)
    ]
    assert layers == [2, 3, 4, 6, 2, 2, 2, 2]


def test_tiny_forward_backward_shapes():
    torch.manual_seed(0)
    net = minkunet_test(in_channels=4)
    coords = room_coords(2000, seed=1)
    feats = torch.randn(coords.shape[0], 4)
    ctx = SparseContext(coords)
    out = net(SparseTensor.from_context(feats, ctx))
    assert out.feats.shape == (coords.shape[0], net.out_channels)
    assert out.stride == 1 and torch.equal(out.coords, coords)
    assert ctx.strides == [1, 2, 4, 8, 16]
    out.feats.pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_translation_by_16_voxels_changes_nothing():
    """The network is equivariant to shifts that keep the stride-16 grid aligned."""
    torch.manual_seed(0)
    net = minkunet_test().eval()
    coords = room_coords(1500, seed=3)
    feats = torch.randn(coords.shape[0], 3)
    shifted = coords.clone()
    shifted[:, 1:] += torch.tensor([16, -32, 48], dtype=torch.int32)
    with torch.no_grad():
        a = net(SparseTensor.from_context(feats, SparseContext(coords))).feats
        b = net(SparseTensor.from_context(feats, SparseContext(shifted))).feats
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_batch_of_two_equals_each_alone():
    torch.manual_seed(0)
    net = minkunet_test().eval()
    c1, c2 = room_coords(800, seed=4), room_coords(900, seed=5)
    f1, f2 = torch.randn(c1.shape[0], 3), torch.randn(c2.shape[0], 3)
    batch = collate([Sample(c1[:, 1:], f1), Sample(c2[:, 1:], f2)])
    with torch.no_grad():
        both = net(SparseTensor.from_context(batch.feats, SparseContext(batch.coords))).feats
        one = net(SparseTensor.from_context(f2, SparseContext(c2))).feats
    torch.testing.assert_close(both[batch.offsets[1] :], one, rtol=1e-5, atol=1e-5)


def test_context_reuse_gives_identical_outputs_and_grads():
    torch.manual_seed(0)
    net = SegKDNet(minkunet_test(), num_classes=5, teacher_dim=12)
    coords = random_coords(1500, 32, seed=6)  # several voxels at stride 16 for train-mode BN
    feats = torch.randn(coords.shape[0], 3)
    ctx = net.context(coords)
    outs = []
    for _ in range(2):
        net.zero_grad()
        f = net.features(feats, ctx)
        f.sum().backward()
        outs.append((f.detach(), net.backbone.conv0p1s1.weight.grad.clone()))
    n_maps = len(ctx._cache)
    fresh = net.features(feats, coords).detach()
    assert len(ctx._cache) == n_maps
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(outs[0][0], fresh)


def test_segkdnet_heads_and_param_groups():
    net = SegKDNet(minkunet_test(), num_classes=7, teacher_dim=24, kd_head=KDHeadConfig(32))
    coords = random_coords(1000, 40, seed=7)
    batch = collate([Sample(coords[:, 1:], torch.randn(coords.shape[0], 3))])
    logits, kd = net(batch)
    assert logits.shape == (coords.shape[0], 7) and kd.shape == (coords.shape[0], 24)
    # without L_2D, rho_2D is not run; the logits are the same
    logits_no_kd, none = net(batch, kd=False)
    assert none is None and torch.equal(logits_no_kd, logits)
    groups = net.param_groups()
    n = sum(len(v) for v in groups.values())
    assert n == len(list(net.parameters()))
    assert {id(p) for p in groups["psi_3D"]} == {id(p) for p in net.backbone.parameters()}
    net.set_trainable(psi_3d=True, rho_y=False, rho_2d=False)
    assert all(p.requires_grad for p in groups["psi_3D"])
    assert not any(p.requires_grad for p in groups["rho_Y"] + groups["rho_2D"])


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_named_variants_rebuild_from_arch(name):
    net = build_backbone(name, in_channels=6)
    again = backbone_from_arch(net.arch)
    assert again.arch == net.arch
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in again.state_dict().items()
    }
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("pointnet", in_channels=3)


def test_torch_backend_runs_under_bf16_autocast():
    """AMP must not break the pure-torch backend (the sparse GEMMs run in the features' dtype)."""
    torch.manual_seed(0)
    net = minkunet_test(in_channels=4)
    coords = room_coords(2000, seed=1)
    feats = torch.randn(coords.shape[0], 4)
    ctx = SparseContext(coords)
    ref = net(SparseTensor.from_context(feats, ctx)).feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(SparseTensor.from_context(feats, ctx)).feats
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out.float()).all()
    assert torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0) > 0.99
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
