"""L_Y and L_2D against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tttkd.model.losses import (
    distillation_loss,
    distillation_loss_from_targets,
    sample_teacher,
    segmentation_loss,
)


def test_segmentation_loss_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([0, 1, -1])
    loss = segmentation_loss(logits, labels, label_smoothing=0.2)
    expected = 0.0
    for row, y in zip(logits[:2], labels[:2]):
        logp = torch.log_softmax(row, 0)
        target = torch.full((3,), 0.2 / 3)
        target[y] += 0.8
        expected += float(-(target * logp).sum())
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)


def test_segmentation_loss_all_ignored_is_zero_with_grad():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_sample_teacher_hand_value_and_grid_sample_border():
    # map 2 x 3 (h x w), D = 1: value = 10 * row + col
    fmap = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])[..., None]
    maps = [torch.zeros(4, 4, 1), fmap]  # image 0 is unused
    uv = torch.tensor([[0.5, 0.5], [1.0, 0.0], [2.0, 1.0], [-0.4, 0.25], [2.7, 1.9]])
    img = torch.ones(5, dtype=torch.long)
    got = sample_teacher(maps, img, uv)[:, 0]
    # (0.5, 0.5): mean of 0, 1, 10, 11; (1, 0): cell centre; (-0.4, 0.25): edge x, y 1/4 down
    expected = torch.tensor([5.5, 1.0, 12.0, 2.5, 12.0])
    torch.testing.assert_close(got, expected)
    # the same as grid_sample(align_corners=False, border) with normalised pixel-centre coords
    h, w = 2, 3
    grid = torch.stack([(uv[:, 0] + 0.5) / w * 2 - 1, (uv[:, 1] + 0.5) / h * 2 - 1], 1)
    ref = F.grid_sample(
        fmap.permute(2, 0, 1)[None], grid[None, None], align_corners=False, padding_mode="border"
    )[0, 0, 0]
    torch.testing.assert_close(got, ref)


def test_sample_teacher_many_images_half_precision():
    torch.manual_seed(0)
    maps = [torch.randn(5, 7, 8).half(), torch.randn(4, 6, 8).half()]
    img = torch.tensor([1, 0, 1, 0, 0])
    uv = torch.rand(5, 2) * torch.tensor([5.0, 3.0])
    got = sample_teacher(maps, img, uv)
    assert got.dtype == torch.float32
    for m in range(5):
        fmap = maps[int(img[m])].float()
        h, w, _ = fmap.shape
        g = torch.stack([(uv[m, 0] + 0.5) / w * 2 - 1, (uv[m, 1] + 0.5) / h * 2 - 1])
        ref = F.grid_sample(
            fmap.permute(2, 0, 1)[None],
            g.view(1, 1, 1, 2),
            align_corners=False,
            padding_mode="border",
        )[0, :, 0, 0]
        torch.testing.assert_close(got[m], ref, rtol=1e-5, atol=1e-5)


def test_distillation_loss_values():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], requires_grad=True)
    targets = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    point = torch.tensor([0, 1])  # point 2 has no pair
    loss = distillation_loss_from_targets(pred, targets, point)
    assert loss.item() == pytest.approx((0.0 + 2.0) / 2)
    loss.backward()
    assert torch.equal(pred.grad[2], torch.zeros(2))  # points without pairs: no gradient
    l2 = distillation_loss_from_targets(pred, targets, point, kind="l2")
    assert l2.item() == pytest.approx((0.0 + 4.0) / 2)  # |a - b|^2 = 2 - 2 cos
    t = torch.tensor([[1.0, 1.0]])
    one = distillation_loss_from_targets(pred, t, torch.tensor([0]))
    assert one.item() == pytest.approx(1 - 1 / math.sqrt(2))
    with pytest.raises(ValueError, match="unknown distillation"):
        distillation_loss_from_targets(pred, targets, point, kind="kl")


def test_distillation_loss_no_pairs_is_zero_with_grad():
    pred = torch.randn(3, 4, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = distillation_loss(pred, [torch.randn(2, 2, 4)], empty, empty, torch.zeros(0, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_distillation_loss_from_maps_equals_from_targets():
    torch.manual_seed(0)
    maps = [torch.randn(3, 4, 6), torch.randn(3, 4, 6)]
    pred = torch.randn(10, 6)
    point = torch.tensor([0, 3, 3, 9])
    img = torch.tensor([0, 0, 1, 1])
    uv = torch.rand(4, 2) * 3
    a = distillation_loss(pred, maps, point, img, uv)
    b = distillation_loss_from_targets(pred, sample_teacher(maps, img, uv), point)
    assert a.item() == pytest.approx(b.item())
