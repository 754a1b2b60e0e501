"""The two losses of TTT-KD: L_Y (segmentation) and L_2D (distillation from teacher maps).

``L_2D`` = mean over valid (point, image) pairs of ``1 - cos(rho_2D(f_p), t_i(u_p))`` where
``t_i(u)`` samples image ``i``'s teacher map bilinearly at feature-grid position ``u``
(``(x, y)``; cell (row j, col i) centred at ``(i, j)``; outside the outermost centres the
edge value is used, i.e. ``grid_sample(align_corners=False, padding_mode="border")``).
Teacher targets do not change during test-time training: sample them once with
:func:`sample_teacher` and call :func:`distillation_loss_from_targets` every step. Training
and TTT compute the same value from per-row sums of unit targets (``model.teacher_sums``);
these per-pair functions are its reference.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "distillation_loss",
    "distillation_loss_from_targets",
    "sample_teacher",
    "segmentation_loss",
]

KDKind = Literal["cosine", "l2"]


def segmentation_loss(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.2, ignore_index: int = -1
) -> Tensor:
    """Cross-entropy with label smoothing; 0 (with a graph) when every label is ignored."""
    labels = labels.long()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits, labels, ignore_index=ignore_index, label_smoothing=label_smoothing
    )


def sample_teacher(maps: list[Tensor], corr_image: Tensor, corr_uv: Tensor) -> Tensor:
    """Bilinear samples ``[M, D]`` (float32) of ``maps[corr_image[m]]`` at ``corr_uv[m]``."""
    m = corr_image.shape[0]
    if m == 0:
        dim = maps[0].shape[-1] if maps else 0
        return torch.zeros((0, dim), dtype=torch.float32, device=corr_uv.device)
    if int(corr_image.min()) < 0 or int(corr_image.max()) >= len(maps):
        raise ValueError(
            f"corr_image holds image indices {int(corr_image.min())}..{int(corr_image.max())} "
            f"but there are {len(maps)} teacher maps"
        )
    dim = maps[0].shape[-1]
    out = torch.empty((m, dim), dtype=torch.float32, device=corr_uv.device)
    order = torch.argsort(corr_image, stable=True)
    counts = torch.bincount(corr_image, minlength=len(maps)).tolist()
    start = 0
    for img, n in enumerate(counts):
        if n == 0:
            continue
        rows = order[start : start + n]
        start += n
        fmap = maps[img]
        h, w, d = fmap.shape
        if d != dim:
            raise ValueError(f"teacher map {img} has dimension {d}, expected {dim}")
        uv = corr_uv[rows].float()
        x0f = torch.floor(uv[:, 0])
        y0f = torch.floor(uv[:, 1])
        fx = (uv[:, 0] - x0f)[:, None]
        fy = (uv[:, 1] - y0f)[:, None]
        x0 = x0f.long()
        y0 = y0f.long()
        xs = (x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1))
        ys = (y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1))
        flat = fmap.reshape(h * w, d)

        def at(yy: Tensor, xx: Tensor, flat: Tensor = flat, w: int = w) -> Tensor:
            return flat[yy * w + xx].float()

        top = at(ys[0], xs[0]) * (1 - fx) + at(ys[0], xs[1]) * fx
        bottom = at(ys[1], xs[0]) * (1 - fx) + at(ys[1], xs[1]) * fx
        out[rows] = top * (1 - fy) + bottom * fy
    return out


def distillation_loss_from_targets(
    kd_pred: Tensor, targets: Tensor, corr_point: Tensor, kind: KDKind = "cosine"
) -> Tensor:
    """Mean over pairs of ``1 - cos`` (or squared L2 of unit vectors) between
    ``kd_pred[corr_point]`` and ``targets``; 0 with a graph when there are no pairs."""
    if corr_point.numel() == 0:
        return kd_pred.sum() * 0.0
    pred = kd_pred.index_select(0, corr_point)  # deterministic backward, unlike x[idx]
    targets = targets.to(pred.dtype)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(pred, targets, dim=1, eps=1e-8)).mean()
    if kind == "l2":
        diff = F.normalize(pred, dim=1, eps=1e-8) - F.normalize(targets, dim=1, eps=1e-8)
        return diff.pow(2).sum(1).mean()
    raise ValueError(f"unknown distillation loss {kind!r}; use 'cosine' or 'l2'")


def distillation_loss(
    kd_pred: Tensor,
    maps: list[Tensor],
    corr_point: Tensor,
    corr_image: Tensor,
    corr_uv: Tensor,
    kind: KDKind = "cosine",
) -> Tensor:
    """``L_2D`` from teacher maps: sample targets, then :func:`distillation_loss_from_targets`."""
    with torch.no_grad():
        targets = sample_teacher(maps, corr_image, corr_uv)
    return distillation_loss_from_targets(kd_pred, targets, corr_point, kind)
