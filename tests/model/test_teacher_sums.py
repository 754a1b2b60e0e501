"""model.teacher_sums: the sparse per-row unit sums give the per-pair L_2D (value and
gradient) of model.losses, on images of different sizes and uv outside the grid."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.losses import distillation_loss_from_targets, sample_teacher
from tttkd.model.teacher_sums import loss_from_unit_sums, unit_sums


def _pairs(seed: int, rows: int = 40, pairs: int = 300, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    sizes = [(5, 7), (3, 4), (6, 2)]
    maps = [torch.randn(h, w, dim, generator=g).half() for h, w in sizes]
    image = torch.randint(0, len(maps), (pairs,), generator=g)
    hw = torch.tensor(sizes, dtype=torch.float32)[image]
    # from one cell outside the grid to one beyond it on both axes (border clamping)
    uv = torch.rand(pairs, 2, generator=g) * (hw.flip(1) + 2) - 1.5
    point = torch.randint(0, rows, (pairs,), generator=g)
    pred = torch.randn(rows, dim, generator=g, requires_grad=True)
    return maps, point, image, uv, pred


@pytest.mark.parametrize("kind", ["cosine", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_sums_loss_equals_the_per_pair_loss_and_gradient(kind, seed):
    maps, point, image, uv, pred = _pairs(seed)
    ref = distillation_loss_from_targets(pred, sample_teacher(maps, image, uv), point, kind)
    (g_ref,) = torch.autograd.grad(ref, pred)
    rows, sums = unit_sums(maps, point, image, uv, dim=16)
    new = loss_from_unit_sums(pred, rows, sums, point.numel(), kind)
    (g_new,) = torch.autograd.grad(new, pred)
    assert rows.tolist() == sorted(set(point.tolist()))
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-4, atol=1e-7)


def test_unit_sums_are_the_sums_of_unit_samples():
    maps, point, image, uv, _ = _pairs(3)
    unit = torch.nn.functional.normalize(sample_teacher(maps, image, uv), dim=1, eps=1e-8)
    rows, sums = unit_sums(maps, point, image, uv, dim=16)
    for r, s in zip(rows.tolist(), sums):
        torch.testing.assert_close(s, unit[point == r].sum(0), rtol=1e-5, atol=1e-5)


def test_no_pairs_is_zero_with_a_graph():
    maps, point, image, uv, pred = _pairs(0)
    rows, sums = unit_sums(maps, point[:0], image[:0], uv[:0], dim=16)
    assert rows.numel() == 0 and sums.shape == (0, 16)
    loss = loss_from_unit_sums(pred, rows, sums, 0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and pred.grad is not None
