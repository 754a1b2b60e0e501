"""BatchNorm behaviour of ``psi_3D`` during test-time training and prediction.

The paper does not say (METHOD.md). Modes, applied to the backbone's BN layers only; the
heads ``rho_Y`` and ``rho_2D`` always stay in eval mode (they are frozen):

``eval`` (default)
    running statistics from training during steps and prediction; one scene's statistics
    never change the model.
``train``
    batch statistics during steps, and the running statistics are updated as in training;
    prediction uses the (updated) running statistics. Offline methods reset them per scene.
``scene``
    the scene's own batch statistics during steps and prediction; the stored running
    statistics are left untouched (TENT's choice).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from torch import nn

from tttkd.model.network import SegKDNet

__all__ = ["backbone_norms", "bn_phase"]

Phase = Literal["step", "predict"]


def backbone_norms(net: SegKDNet) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``psi_3D``."""
    return [m for m in net.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def bn_phase(net: SegKDNet, mode: str, phase: Phase) -> Iterator[None]:
    """Put ``net`` in the right train/eval state for ``phase`` under ``mode``; restore after."""
    if mode not in ("eval", "train", "scene"):
        raise ValueError(f"unknown BN mode {mode!r}; choose eval, train or scene")
    was_training = net.training
    norms = backbone_norms(net)
    tracking = [m.track_running_stats for m in norms]
    net.eval()
    batch_stats = mode == "scene" or (mode == "train" and phase == "step")
    try:
        for m in norms:
            m.train(batch_stats)
            if mode == "scene":
                # torch then normalises with batch statistics and leaves running ones alone
                m.track_running_stats = False
        yield
    finally:
        for m, track in zip(norms, tracking):
            m.track_running_stats = track
        net.train(was_training)
