"""Per-row sums of unit teacher vectors: all ``L_2D`` needs from the teacher maps.

The cosine loss over M (row, image) pairs is ``mean_j (1 - cos(a_r(j), t_j))`` with ``t_j``
the teacher map of pair j's image sampled bilinearly at its ``uv``. Summed per row it is
``(M - sum_r unit(a_r) . u_r) / M`` with ``u_r = sum_j t_j / |t_j|`` (``l2`` of unit vectors
is twice that), so training and TTT need ``u`` (one vector per row seen), not M targets.

Why not sample every pair: a schema-2 training view has several pairs per voxel, and the
M x D gathers, normalisation and scatter were a tenth of a CPU training step. Here
``t_j = sum_k w_jk c_k`` over the four cells around ``uv`` (the border clamping of
``model.losses.sample_teacher``), ``|t_j|^2 = sum_kl w_jk w_jl (c_k . c_l)`` needs only dot
products between neighbouring cells (9 per cell), and ``u = W @ C`` with the sparse
``W[r, cell] = sum of w_jk / |t_j|`` (4 entries per pair): one sparse matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["EPS", "loss_from_unit_sums", "unit_sums"]

EPS = 1e-8  # as F.normalize / F.cosine_similarity in the per-pair loss


def _neighbour_dots(cells: Tensor) -> Tensor:
    """``[9, h * w]``: dot of cell (y, x) with cell (y + dy, x + dx), row ``(dy+1)*3 + dx+1``."""
    h, w, _ = cells.shape
    padded = F.pad(cells, (0, 0, 1, 1, 1, 1))  # zero cells around the grid
    out = cells.new_zeros((9, h, w))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            out[(dy + 1) * 3 + dx + 1] = (cells * shifted).sum(-1)
    return out.reshape(9, h * w)


def unit_sums(
    maps: Sequence[Tensor], corr_point: Tensor, corr_image: Tensor, corr_uv: Tensor, dim: int
) -> tuple[Tensor, Tensor]:
    """``(rows [S], sums [S, D])``: the distinct ``corr_point`` rows (sorted) and, for each,
    the sum of its pairs' unit bilinear teacher samples (float32, on ``corr_uv``'s device).

    ``maps[i]`` is image i's ``[h, w, D]`` feature grid (sizes may differ between images).
    """
    device = corr_uv.device
    rows, inverse = torch.unique(corr_point.long(), sorted=True, return_inverse=True)
    if corr_point.numel() == 0:
        return rows, torch.zeros((0, dim), dtype=torch.float32, device=device)
    image = corr_image.long()
    cells = [m.float() for m in maps]
    sizes = torch.tensor([[m.shape[0], m.shape[1]] for m in cells], device=device)
    base = torch.zeros(len(cells) + 1, dtype=torch.int64, device=device)
    base[1:] = (sizes[:, 0] * sizes[:, 1]).cumsum(0)
    dots = torch.cat([_neighbour_dots(c) for c in cells], dim=1)  # [9, total cells]
    h, w, b = sizes[image, 0], sizes[image, 1], base[image]
    uv = corr_uv.float()
    x0f, y0f = torch.floor(uv[:, 0]), torch.floor(uv[:, 1])
    fx, fy = uv[:, 0] - x0f, uv[:, 1] - y0f
    x0, y0 = x0f.long(), y0f.long()
    xs = (torch.minimum(x0.clamp_min(0), w - 1), torch.minimum((x0 + 1).clamp_min(0), w - 1))
    ys = (torch.minimum(y0.clamp_min(0), h - 1), torch.minimum((y0 + 1).clamp_min(0), h - 1))
    corners = [(ys[0], xs[0], (1 - fx) * (1 - fy)), (ys[0], xs[1], fx * (1 - fy)),
               (ys[1], xs[0], (1 - fx) * fy), (ys[1], xs[1], fx * fy)]  # fmt: skip
    sq = torch.zeros_like(fx)
    for ya, xa, wa in corners:
        cell = b + ya * w + xa
        for yb, xb, wb in corners:
            sq += wa * wb * dots[(yb - ya + 1) * 3 + (xb - xa + 1), cell]
    inv_norm = 1.0 / sq.clamp_min(0).sqrt().clamp_min(EPS)
    cols = torch.cat([b + yy * w + xx for yy, xx, _ in corners])
    vals = torch.cat([wt * inv_norm for _, _, wt in corners])
    weights = torch.sparse_coo_tensor(
        torch.stack([inverse.repeat(4), cols]),
        vals,
        (rows.numel(), int(base[-1])),
        check_invariants=False,
    ).coalesce()
    flat = torch.cat([c.reshape(-1, c.shape[-1]) for c in cells])
    return rows, torch.sparse.mm(weights, flat)


def loss_from_unit_sums(
    kd_pred: Tensor, rows: Tensor, sums: Tensor, num_pairs: int, kind: str = "cosine"
) -> Tensor:
    """The mean over ``num_pairs`` pairs of ``1 - cos`` (``l2``: squared distance of unit
    vectors, twice that) from :func:`unit_sums`; 0 with a graph when there are no pairs."""
    if kind not in ("cosine", "l2"):
        raise ValueError(f"unknown distillation loss {kind!r}; use 'cosine' or 'l2'")
    if num_pairs == 0:
        return kd_pred.sum() * 0.0
    pred = F.normalize(kd_pred.float().index_select(0, rows), dim=1, eps=EPS)
    loss = 1.0 - (pred * sums).sum() / num_pairs
    return loss if kind == "cosine" else 2.0 * loss
