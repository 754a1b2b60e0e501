"""The masked-scene task of ttt-mae: loss values, seeded patch masks, checkpointed head."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.checkpoint import load_checkpoint, save_checkpoint
from tttkd.model.mae import MAEConfig, patch_mask, reconstruction_loss
from tttkd.model.minkunet import minkunet_test
from tttkd.model.network import KDHeadConfig, SegKDNet
from tttkd.model.sparse.testing import room_coords


def _grid(nx: int, ny: int, nz: int) -> torch.Tensor:
    """Every voxel of an nx x ny x nz block, batch 0, as int32 [N, 4]."""
    g = torch.stack(
        torch.meshgrid(torch.arange(nx), torch.arange(ny), torch.arange(nz), indexing="ij"), -1
    ).reshape(-1, 3)
    return torch.cat([torch.zeros(len(g), 1, dtype=torch.long), g], 1).int()


def test_reconstruction_loss_is_zero_when_perfect_and_the_mean_sq_error_otherwise():
    target = torch.tensor([[0.5, -0.5, 1.0], [0.0, 0.2, -1.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([True, False, True])
    assert float(reconstruction_loss(target.clone(), target, mask)) == 0.0
    pred = target.clone()
    pred[0, 0] += 0.3  # masked row: counts
    pred[1] += 5.0  # unmasked row: ignored
    pred[2] -= 0.1  # masked row: 3 x 0.01
    expected = (0.3**2 + 3 * 0.1**2) / 2  # channel sum, mean over the 2 masked rows
    assert float(reconstruction_loss(pred, target, mask)) == pytest.approx(expected, rel=1e-6)
    assert float(reconstruction_loss(pred, target, torch.zeros(3, dtype=torch.bool))) == 0.0


def test_patch_mask_is_seeded_whole_patches_and_covers_the_ratio():
    coords = _grid(20, 20, 4)  # 0.1 m voxels, 0.2 m patches: 10 x 10 x 2 = 200 patches of 8
    kw = dict(voxel_size=0.1, patch_size=0.2, ratio=0.4)
    m1 = patch_mask(coords, generator=torch.Generator().manual_seed(3), **kw)
    m2 = patch_mask(coords, generator=torch.Generator().manual_seed(3), **kw)
    m3 = patch_mask(coords, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert int(m1.sum()) == 80 * 8  # exactly 40 % of the patches, so 40 % of the voxels
    patch = (coords[:, 1:] // 2).long()
    key = patch[:, 0] * 1000 + patch[:, 1] * 10 + patch[:, 2]
    for k in key.unique():  # a patch is masked whole or not at all
        assert m1[key == k].all() or not m1[key == k].any()
    # another batch entry is another scene: its patches are drawn separately
    two = torch.cat([coords, coords.clone().index_fill_(1, torch.tensor([0]), 1)])
    m = patch_mask(two, generator=torch.Generator().manual_seed(3), **kw)
    assert int(m.sum()) == 160 * 8


def _reference_mask(coords, voxel_size, patch_size, ratio, generator):
    """patch_mask as first written: patches numbered by the row-wise unique of (batch, cell)."""
    cell = torch.floor((coords[:, 1:].double() + 0.5) * voxel_size / patch_size).long()
    _, patch = torch.unique(torch.cat([coords[:, :1].long(), cell], 1), dim=0, return_inverse=True)
    num = int(patch.max()) + 1
    k = min(max(int(round(ratio * num)), 1), max(num - 1, 1))
    chosen = torch.zeros(num, dtype=torch.bool)
    chosen[torch.randperm(num, generator=generator)[:k]] = True
    return chosen[patch]


def test_patch_mask_numbers_patches_as_the_rowwise_unique_did():
    # two rooms around the origin (negative cells too): the same mask, seed for seed, so
    # seeded trainings and TTT runs repeat their earlier results exactly
    second = room_coords(300, seed=2)
    second[:, 0] = 1
    coords = torch.cat([room_coords(400, seed=1), second])
    coords[:, 1:] -= 20
    for seed in range(3):
        for patch_size in (0.2, 0.5):
            args = (coords, 0.1, patch_size, 0.4)
            new = patch_mask(*args, torch.Generator().manual_seed(seed))
            assert torch.equal(new, _reference_mask(*args, torch.Generator().manual_seed(seed)))


def test_mae_head_round_trips_in_the_checkpoint_and_loads_strictly(tmp_path):
    torch.manual_seed(0)
    cfg = MAEConfig(mask_ratio=0.3, patch_size=0.25, hidden=8, norm="layer")
    net = SegKDNet(minkunet_test(), 3, 16, KDHeadConfig(hidden=8), mae=cfg).eval()
    path = tmp_path / "mae.safetensors"
    spec = {"name": "t", "dim": 16}
    save_checkpoint(path, net, label_set="x", class_names=["a", "b", "c"], teacher_spec=spec,
                    config={})  # fmt: skip
    loaded, info = load_checkpoint(path)
    loaded.eval()
    assert info.mae == cfg.to_dict() and loaded.mae_head.config == cfg
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    coords = room_coords(300, seed=1)
    feats = torch.rand(coords.shape[0], 3) * 2 - 1
    mask = patch_mask(coords, 0.1, 0.25, 0.3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net.reconstruct(feats, coords, mask),
                           loaded.reconstruct(feats, coords, mask))  # fmt: skip
    # a checkpoint without the head has none, and asking it to reconstruct says how to get one
    plain = SegKDNet(minkunet_test(), 3, 16, KDHeadConfig(hidden=8)).eval()
    save_checkpoint(path, plain, label_set="x", class_names=["a", "b", "c"], teacher_spec=spec,
                    config={})  # fmt: skip
    loaded, info = load_checkpoint(path)
    assert info.mae is None and loaded.mae_head is None
    with pytest.raises(ValueError, match="--ssl mae"):
        loaded.reconstruct(feats, coords, mask)
