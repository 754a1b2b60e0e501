"""``SegKDNet``: the 3D backbone ``psi_3D`` with the two heads ``rho_Y`` and ``rho_2D``.

The API is shaped for test-time training: build the sparse context once per scene
(:meth:`SegKDNet.context`), then call :meth:`SegKDNet.features` (or ``forward``) as many times
as there are steps; only ``psi_3D`` is updated there (:meth:`SegKDNet.param_groups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from tttkd.model.batch import Batch
from tttkd.model.minkunet import MinkUNet
from tttkd.model.sparse.base import SparseContext, SparseTensor

if TYPE_CHECKING:
    from tttkd.model.mae import MAEConfig

__all__ = ["KDHeadConfig", "SegKDNet", "make_kd_head"]


@dataclass(frozen=True)
class KDHeadConfig:
    """``rho_2D``: Linear -> norm -> ReLU -> Linear (our choice; the paper only says "MLP").

    LayerNorm by default: it has no batch statistics, so the head behaves the same in train
    and eval mode and one test scene cannot shift it.
    """

    hidden: int = 256
    norm: Literal["layer", "batch", "none"] = "layer"


def make_kd_head(in_dim: int, teacher_dim: int, cfg: KDHeadConfig) -> nn.Sequential:
    """The ``rho_2D`` MLP."""
    norms = {
        "layer": lambda: nn.LayerNorm(cfg.hidden),
        "batch": lambda: nn.BatchNorm1d(cfg.hidden),
        "none": nn.Identity,
    }
    if cfg.norm not in norms:
        raise ValueError(f"unknown kd-head norm {cfg.norm!r}; choose one of {sorted(norms)}")
    return nn.Sequential(
        nn.Linear(in_dim, cfg.hidden),
        norms[cfg.norm](),
        nn.ReLU(inplace=True),
        nn.Linear(cfg.hidden, teacher_dim),
    )


class SegKDNet(nn.Module):
    """``psi_3D`` (``backbone``), ``rho_Y`` (``seg_head``) and ``rho_2D`` (``kd_head``);
    with ``mae`` also ``rho_MAE`` (``mae_head``: the masked-scene task of ``ttt-mae``)."""

    def __init__(
        self,
        backbone: MinkUNet,
        num_classes: int,
        teacher_dim: int,
        kd_head: KDHeadConfig = KDHeadConfig(),
        mae: MAEConfig | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.teacher_dim = teacher_dim
        self.kd_head_config = kd_head
        dim = backbone.out_channels
        self.seg_head = nn.Linear(dim, num_classes)
        self.kd_head = make_kd_head(dim, teacher_dim, kd_head)
        self.mae_head = None
        if mae is not None:
            from tttkd.model.mae import MAEHead  # mae.py builds its MLP with make_kd_head

            self.mae_head = MAEHead(dim, backbone.in_channels, mae)

    @property
    def backend(self) -> str:
        """Default sparse backend for :meth:`context` (not part of the weights)."""
        return getattr(self.backbone, "backend", "torch")

    def context(self, coords: Tensor, backend: str | None = None) -> SparseContext:
        """Coordinate sets + kernel maps for ``coords`` int32 ``[N, 4]``: build once, reuse."""
        return SparseContext(coords, backend or self.backend)

    def features(self, feats: Tensor, coords: Tensor | SparseContext) -> Tensor:
        """``psi_3D``: per-voxel features ``[N, backbone.out_channels]``."""
        ctx = coords if isinstance(coords, SparseContext) else self.context(coords)
        return self.backbone(SparseTensor.from_context(feats, ctx)).feats

    def forward(
        self,
        batch: Batch,
        context: SparseContext | None = None,
        mae_mask: Tensor | None = None,
        *,
        kd: bool = True,
    ) -> tuple[Tensor | None, ...]:
        """``(logits [N, classes], kd_pred [N, teacher_dim])`` for every voxel of ``batch``
        (``kd_pred`` None with ``kd=False``: a model trained without L_2D skips ``rho_2D``,
        whose activations it would only keep for nothing); with ``mae_mask`` (bool ``[N]``) a
        third item, the colours reconstructed from a second pass with the masked voxels'
        inputs replaced by the mask token (one ``forward``, so DDP sees both passes)."""
        ctx = context if context is not None else batch.coords
        f = self.features(batch.feats, ctx)
        kd_pred = self.kd_head(f) if kd else None
        if mae_mask is None:
            return self.seg_head(f), kd_pred
        return self.seg_head(f), kd_pred, self.reconstruct(batch.feats, ctx, mae_mask)

    def reconstruct(self, feats: Tensor, coords: Tensor | SparseContext, mask: Tensor) -> Tensor:
        """``rho_MAE(psi_3D(masked input))``: reconstructed input features per voxel."""
        if self.mae_head is None:
            raise ValueError("this network has no MAE head (train it with --ssl mae)")
        masked = self.mae_head.mask_input(feats, mask)
        return self.mae_head(self.features(masked, coords))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``psi_3D`` (what TTT updates), ``rho_Y``, ``rho_2D`` and ``rho_MAE`` (empty
        without an MAE head) parameters."""
        return {
            "psi_3D": list(self.backbone.parameters()),
            "rho_Y": list(self.seg_head.parameters()),
            "rho_2D": list(self.kd_head.parameters()),
            "rho_MAE": list(self.mae_head.parameters()) if self.mae_head is not None else [],
        }

    def set_trainable(
        self, *, psi_3d: bool, rho_y: bool, rho_2d: bool, rho_mae: bool = False
    ) -> None:
        """Set ``requires_grad`` per part (TTT: only ``psi_3d=True``)."""
        groups = self.param_groups()
        flags = (("psi_3D", psi_3d), ("rho_Y", rho_y), ("rho_2D", rho_2d), ("rho_MAE", rho_mae))
        for name, flag in flags:
            for p in groups[name]:
                p.requires_grad_(flag)

    @torch.no_grad()
    def predict(self, feats: Tensor, coords: Tensor | SparseContext) -> Tensor:
        """Class logits without autograd (the mode is the caller's choice)."""
        return self.seg_head(self.features(feats, coords))
