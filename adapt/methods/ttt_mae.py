"""``ttt-mae``: test-time training on the masked-scene reconstruction loss (model/mae.py).

The paper's TTT-MAE baseline (supplementary I): the network is trained jointly with the
masked-scene task (``tttkd-train --ssl mae``), and at test time it runs exactly the protocol
of offline ``ttt-kd`` (reset per scene, ``--steps`` SGD steps on ``psi_3D`` only, the same
rotation protocol and divergence guard) with ``L_MAE`` in place of ``L_2D``. The mask ratio and
patch size are the trained task's (from the checkpoint); every step draws a new mask, seeded by
the run seed, the scene and the view, so results never depend on the order of scenes. The
guard judges the adapted weights on the first step's mask. No image is read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from tttkd.adapt.bn import bn_phase
from tttkd.adapt.config import AdaptConfig, AdaptConfigError
from tttkd.adapt.methods.base import SceneOutcome
from tttkd.adapt.methods.ttt_kd import TTTKD, check_after
from tttkd.adapt.safety import DivergenceGuard
from tttkd.adapt.scenes import SceneData, View, scene_seed
from tttkd.adapt.ttt import StepLog, predict_view, synchronize
from tttkd.model.mae import patch_mask, reconstruction_loss
from tttkd.model.network import SegKDNet

__all__ = ["TTTMAE", "mae_view_loss"]


def mae_view_loss(net: SegKDNet, view: View, mask: Tensor) -> Tensor:
    """``L_MAE`` of one view under the current weights for the voxels in ``mask``."""
    return reconstruction_loss(net.reconstruct(view.feats, view.context, mask), view.feats, mask)


def run_loss_steps(
    net: SegKDNet,
    optimizer: torch.optim.Optimizer,
    loss_of_step: Callable[[int], Tensor],
    *,
    steps: int,
    bn_mode: str,
    guard: DivergenceGuard,
    device: torch.device,
) -> StepLog:
    """Up to ``steps`` SGD steps on ``loss_of_step(i)``; stops at the first divergence."""
    log = StepLog()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    with bn_phase(net, bn_mode, "step"):
        for step in range(steps):
            synchronize(device)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of_step(step)
            value = float(loss.detach())
            verdict = None
            if math.isfinite(value):
                loss.backward()
                grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
                norm = float(torch.linalg.vector_norm(torch.cat(grads))) if grads else 0.0
                verdict = guard.check(step, value, norm)
                if verdict is None:
                    optimizer.step()
            else:
                verdict = guard.check(step, value)
            synchronize(device)
            log.step_ms.append((time.perf_counter() - t0) * 1e3)
            log.losses.append(value)
            if verdict is not None:
                log.divergence = verdict
                break
    return log


class TTTMAE(TTTKD):
    """Offline TTT on the masked-scene reconstruction loss; needs an MAE head."""

    name = "ttt-mae"
    uses_teacher = False

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        if net.mae_head is None:
            raise AdaptConfigError(
                "method ttt-mae needs a checkpoint trained with the masked-scene head "
                "(tttkd-train --ssl mae ...); this checkpoint has none: train one, or drop "
                "ttt-mae from --method"
            )
        super().__init__(net, cfg)
        self.mae = net.mae_head.config

    def _steps_and_predict(
        self, scene: SceneData, view: View, target: View, out: SceneOutcome
    ) -> Tensor | None:
        cfg, net = self.cfg, self.net
        gen = torch.Generator().manual_seed(
            scene_seed(cfg.seed, scene.scene_id, f"mae/{view.angle!r}")
        )

        def draw() -> Tensor:
            return patch_mask(
                view.coords, scene.voxel_size, self.mae.patch_size, self.mae.mask_ratio, gen
            )

        check_mask = draw()  # the first step's mask; the adapted weights are judged on it
        guard = DivergenceGuard(cfg.divergence_ratio, cfg.divergence_patience, "MAE loss")
        log = run_loss_steps(
            net,
            self._optimizer,
            lambda i: mae_view_loss(net, view, check_mask if i == 0 else draw()),
            steps=cfg.steps,
            bn_mode=cfg.bn_mode,
            guard=guard,
            device=scene.device,
        )
        logits = None
        if log.divergence is None:
            with torch.no_grad(), bn_phase(net, cfg.bn_mode, "predict"):
                logits = net.seg_head(net.features(view.feats, view.context)).float()
                logits = logits[view.row_of_point]
                loss = float(mae_view_loss(net, view, check_mask)) if log.steps else None
            log.divergence = check_after(guard, log, logits, loss)
            if log.divergence is not None:
                logits = None
            elif target is not view:
                logits = predict_view(net, target, cfg.bn_mode)
        self.record_steps(out, log)
        out.updated = out.updated or log.steps > 0
        return logits
