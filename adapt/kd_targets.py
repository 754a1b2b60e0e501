"""Per-point sums of unit teacher vectors: what TTT-KD's cosine loss needs from the teacher.

The loss over a scene's M (point, image) pairs is ``mean_j (1 - cos(a_p(j), t_j))`` with
``t_j`` the teacher map of pair j's image sampled bilinearly at its ``uv``. Summed per
point it is ``n_p - unit(a_p) . u_p`` with ``u_p = sum_j t_j / |t_j|``, so TTT keeps ``u``
(one row per point seen by some image) instead of M targets. The sums are computed without
materialising the M x D targets by ``model.teacher_sums.unit_sums`` (training uses the same
function); this module reads them from a cache record.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tttkd.model.losses import sample_teacher
from tttkd.model.teacher_sums import EPS, unit_sums
from tttkd.pipeline.cache import SceneRecord

__all__ = ["unit_target_sums", "unit_target_sums_reference"]


def unit_target_sums(record: SceneRecord, device: torch.device, dim: int) -> tuple[Tensor, Tensor]:
    """``(seen_points [S], unit_sums [S, D])`` for the record's pairs (float32, on device)."""
    corr_point = torch.from_numpy(record.corr_point.astype(np.int64)).to(device)
    if corr_point.numel() == 0:
        return unit_sums([], corr_point, corr_point, torch.zeros((0, 2), device=device), dim)
    maps = [torch.from_numpy(np.ascontiguousarray(f)).to(device) for f in record.features]
    image = torch.from_numpy(record.corr_image.astype(np.int64)).to(device)
    uv = torch.from_numpy(record.corr_uv).to(device)
    return unit_sums(maps, corr_point, image, uv, dim)


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
