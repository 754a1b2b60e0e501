"""The masked-scene self-supervised task of the ``ttt-mae`` baseline (``--ssl mae``).

Why this task: the paper's TTT-MAE baseline (supplementary I) replaces the original image
MAE, which has no setup for scenes, with the masked reconstruction of Masked Scene Contrast
(MSC; Wu et al., CVPR 2023) on the same MinkUNet. As in MSC: the scene is cut into cubic grid
patches of ``patch_size`` metres (MSC ``mask_grid_size=0.1``), a fraction ``mask_ratio`` of
the patches is masked (MSC ``mask_rate=0.4``), masked voxels' input colours are replaced by a
learned mask token (MSC ``mask_token``), and the masked voxels' colours are reconstructed from
``psi_3D``'s features, the loss being the squared error summed over the channels and averaged
over the masked voxels (MSC's ``color_loss``). Ours: the head is the same MLP as ``rho_2D``
(MSC uses one Linear); normals are not reconstructed (the cache stores colours only). MSC's
contrastive half is not part of TTT-MAE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tttkd.model.network import KDHeadConfig, make_kd_head
from tttkd.model.sparse.base import coords_key

__all__ = ["MAEConfig", "MAEHead", "patch_mask", "reconstruction_loss"]


@dataclass(frozen=True)
class MAEConfig:
    """What the checkpoint records about its MAE head (the test-time task is the trained one).

    No defaults here: they live once, in ``model.config.LossConfig`` (``mae_*``)."""

    mask_ratio: float  # fraction of patches masked
    patch_size: float  # metres, side of a cubic mask patch
    hidden: int  # head MLP width (as rho_2D's)
    norm: str

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mae mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if not self.patch_size > 0:
            raise ValueError(f"mae patch_size must be > 0 metres, got {self.patch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MAEHead(nn.Module):
    """The learned mask token (input side) and the colour-reconstruction MLP (output side)."""

    def __init__(self, in_dim: int, feat_dim: int, cfg: MAEConfig):
        super().__init__()
        self.config = cfg
        self.mask_token = nn.Parameter(torch.zeros(1, feat_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as MSC
        self.mlp = make_kd_head(in_dim, feat_dim, KDHeadConfig(cfg.hidden, cfg.norm))

    def mask_input(self, feats: Tensor, mask: Tensor) -> Tensor:
        """``feats`` with the rows where ``mask`` replaced by the mask token."""
        token = self.mask_token.to(feats.dtype).expand_as(feats)
        return torch.where(mask.unsqueeze(1), token, feats)

    def forward(self, features: Tensor) -> Tensor:
        """Reconstructed input features (colours in [-1, 1]) per voxel."""
        return self.mlp(features)


def patch_mask(
    coords: Tensor,
    voxel_size: float,
    patch_size: float,
    ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Bool ``[N]``: the voxels of ``round(ratio * P)`` randomly chosen grid patches.

    ``coords`` int ``[N, 4]`` (batch, x, y, z voxel indices); a patch is the set of voxels of
    one scene whose centres fall in one cube of side ``patch_size`` metres. Patches are drawn
    with ``generator`` (seeded by the caller), so a mask is a function of the seed.
    At least one patch is masked and at least one kept when there are two or more.
    """
    if coords.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=coords.device)
    centres = (coords[:, 1:].double() + 0.5) * voxel_size
    cell = torch.floor(centres / patch_size).long()
    patch = _row_ids(torch.cat([coords[:, :1].long(), cell], 1))
    num = int(patch.max()) + 1
    k = min(max(int(round(ratio * num)), 1), max(num - 1, 1))
    order = torch.randperm(num, generator=generator, device="cpu").to(coords.device)
    chosen = torch.zeros(num, dtype=torch.bool, device=coords.device)
    chosen[order[:k]] = True
    return chosen[patch]


def _row_ids(rows: Tensor) -> Tensor:
    """``unique(rows, dim=0, return_inverse=True)[1]``, computed on one int64 key per row
    whose order is the rows' lexicographic order (the same ids): the row-wise ``unique``
    compares rows one by one on CPU, 180 ms of a ~1 s demo training step."""
    lo = rows.min(0).values
    extent = rows.max(0).values - lo + 1
    if float(torch.prod(extent.double())) >= 2.0**62:  # no int64 key fits: the slow way
        return torch.unique(rows, dim=0, return_inverse=True)[1]
    return torch.unique(coords_key(rows, lo, extent), return_inverse=True)[1]


def reconstruction_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked rows of the squared error summed over channels (0 with no mask)."""
    if not bool(mask.any()):
        return pred.sum() * 0.0
    diff = pred.float()[mask] - target.float()[mask]
    return (diff * diff).sum(1).mean()
