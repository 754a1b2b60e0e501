"""Per-point sums of unit teacher vectors: what TTT-KD's cosine loss needs from the teacher.

The loss over a scene's M (point, image) pairs is ``mean_j (1 - cos(a_p(j), t_j))`` with
``t_j`` the teacher map of pair j's image sampled bilinearly at its ``uv``. Summed per
point it is ``n_p - unit(a_p) . u_p`` with ``u_p = sum_j t_j / |t_j|``, so TTT keeps ``u``
(one row per point seen by some image) instead of M targets.

Computing ``u`` without materialising the M x D targets: ``t_j = sum_k w_jk c_k`` over the
four grid cells around ``uv`` (the same border clamping as ``model.losses.sample_teacher``),
``|t_j|^2 = sum_kl w_jk w_jl (c_k . c_l)`` needs only dot products between neighbouring
cells (9 per cell, cheap), and then ``u = W @ C`` with the sparse ``W[p, cell] = sum of
w_jk / |t_j|`` (4 entries per pair) and ``C`` the stacked cells of all images: one sparse
matrix product instead of 4 gathers and ~20 passes over an M x D array.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttkd.model.losses import sample_teacher
from tttkd.pipeline.cache import SceneRecord

__all__ = ["unit_target_sums", "unit_target_sums_reference"]

EPS = 1e-8  # as F.normalize / the training loss


def _neighbour_dots(cells: Tensor) -> Tensor:
    """``[I, 3, 3, h, w]``: dot of cell (y, x) with cell (y + dy, x + dx), dy, dx in -1..1."""
    n, h, w, _ = cells.shape
    padded = F.pad(cells, (0, 0, 1, 1, 1, 1))  # zero cells around the grid
    out = cells.new_zeros((n, 3, 3, h, w))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            out[:, dy + 1, dx + 1] = (cells * shifted).sum(-1)
    return out


def unit_target_sums(record: SceneRecord, device: torch.device, dim: int) -> tuple[Tensor, Tensor]:
    """``(seen_points [S], unit_sums [S, D])`` for the record's pairs (float32, on device)."""
    corr_point = torch.from_numpy(record.corr_point.astype(np.int64)).to(device)
    seen, inverse = torch.unique(corr_point, sorted=True, return_inverse=True)
    if corr_point.numel() == 0:
        return seen, torch.zeros((0, dim), dtype=torch.float32, device=device)
    cells = torch.from_numpy(np.ascontiguousarray(record.features)).to(device).float()
    n_img, h, w, d = cells.shape
    image = torch.from_numpy(record.corr_image.astype(np.int64)).to(device)
    uv = torch.from_numpy(record.corr_uv).to(device).float()
    x0f, y0f = torch.floor(uv[:, 0]), torch.floor(uv[:, 1])
    fx, fy = uv[:, 0] - x0f, uv[:, 1] - y0f
    x0, y0 = x0f.long(), y0f.long()
    xs = (x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1))
    ys = (y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1))
    corners = [(ys[0], xs[0], (1 - fx) * (1 - fy)), (ys[0], xs[1], fx * (1 - fy)),
               (ys[1], xs[0], (1 - fx) * fy), (ys[1], xs[1], fx * fy)]  # fmt: skip
    dots = _neighbour_dots(cells)
    sq = torch.zeros_like(fx)
    for ya, xa, wa in corners:
        for yb, xb, wb in corners:
            sq += wa * wb * dots[image, yb - ya + 1, xb - xa + 1, ya, xa]
    inv_norm = 1.0 / sq.clamp_min(0).sqrt().clamp_min(EPS)
    rows = inverse.repeat(4)
    cols = torch.cat([image * (h * w) + yy * w + xx for yy, xx, _ in corners])
    vals = torch.cat([wt * inv_norm for _, _, wt in corners])
    weights = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), vals, (seen.numel(), n_img * h * w), check_invariants=False
    ).coalesce()
    return seen, torch.sparse.mm(weights, cells.reshape(n_img * h * w, d))


def unit_target_sums_reference(
    record: SceneRecord, device: torch.device, dim: int
) -> tuple[Tensor, Tensor]:
    """The direct way (sample every pair, normalise, add up): the test oracle."""
    corr_point = torch.from_numpy(record.corr_point.astype(np.int64)).to(device)
    seen, inverse = torch.unique(corr_point, sorted=True, return_inverse=True)
    maps = [torch.from_numpy(np.ascontiguousarray(f)).to(device) for f in record.features]
    image = torch.from_numpy(record.corr_image.astype(np.int64)).to(device)
    uv = torch.from_numpy(record.corr_uv).to(device)
    targets = sample_teacher(maps, image, uv) if maps else torch.zeros((0, dim), device=device)
    sums = torch.zeros((seen.numel(), dim), dtype=torch.float32, device=device)
    sums.index_add_(0, inverse, F.normalize(targets, dim=1, eps=EPS))
    return seen, sums
