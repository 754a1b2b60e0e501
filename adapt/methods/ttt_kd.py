"""TTT-KD: SGD on the distillation loss ``L_2D``, ``psi_3D`` only (METHOD.md).

``ttt-kd`` (offline): for every scene and every rotation, start from the trained weights, run
``steps`` steps, predict, reset. ``ttt-kd-online`` (TTT-KD-O): weights and optimizer state
carry over the stream; every ``stride``-th scene (the 1st, the ``1 + stride``-th, ...) gets
``online_steps`` steps on the unrotated view before its prediction; other scenes are only
predicted. A diverging scene falls back to the weights it started from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods.base import Method, SceneOutcome
from tttkd.adapt.safety import Divergence, DivergenceGuard
from tttkd.adapt.scenes import SceneData
from tttkd.adapt.ttt import StepLog, evaluate_view, kd_optimizer, predict_view, run_kd_steps
from tttkd.model.network import SegKDNet

__all__ = ["TTTKD", "TTTKDOnline"]


def check_after(
    guard: DivergenceGuard, log: StepLog, logits: Tensor, loss: float | None
) -> Divergence | None:
    """Judge the weights left by the last step: its loss and the logits made with them."""
    log.loss_after = loss
    if not bool(torch.isfinite(logits).all()):
        return Divergence(log.steps, float("nan"), "non-finite logits after adaptation")
    if loss is None or not log.steps:
        return None
    return guard.check_final(log.steps, loss)


class TTTKD(Method):
    """Offline TTT-KD: reset to the trained weights for every scene and rotation."""

    name = "ttt-kd"
    uses_teacher = True

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        cfg = self.cfg
        view = scene.view(angle)
        self.reset()
        optimizer = kd_optimizer(self.net, cfg.lr, cfg.momentum)
        guard = DivergenceGuard(cfg.divergence_ratio, cfg.divergence_patience)
        log = run_kd_steps(
            self.net,
            optimizer,
            scene,
            view,
            steps=cfg.steps,
            bn_mode=cfg.bn_mode,
            kind=cfg.kd_loss,
            guard=guard,
        )
        logits = None
        if log.divergence is None:
            logits, loss = evaluate_view(self.net, scene, view, cfg.bn_mode, cfg.kd_loss)
            log.divergence = check_after(guard, log, logits, loss)
            if log.divergence is not None:
                logits = None
        self.record_steps(out, log)
        out.updated = out.updated or log.steps > 0
        if logits is None:  # fall back to the unadapted prediction
            self.reset()
            logits = predict_view(self.net, view)
        self.reset()
        return logits


class TTTKDOnline(Method):
    """TTT-KD-O: one (or ``online_steps``) step per updated scene, weights carried over."""

    name = "ttt-kd-online"
    online = True
    uses_teacher = True

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        super().__init__(net, cfg)
        self.optimizer = kd_optimizer(self.net, cfg.lr, cfg.momentum)
        self.updates = 0  # scenes whose weights were stepped (the stride test counts these)
        self._unrotated: tuple[str, Tensor] | None = None

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        cfg = self.cfg
        out.extra["updates_so_far"] = self.updates
        if self.scenes_seen % cfg.stride != 0:
            return
        before = self.state_snapshot()
        optim_before = {
            k: v.clone() if isinstance(v, Tensor) else v
            for k, v in _flat_optimizer_state(self.optimizer).items()
        }
        guard = DivergenceGuard(cfg.divergence_ratio, cfg.divergence_patience)
        view = scene.view(0.0)
        log = run_kd_steps(
            self.net,
            self.optimizer,
            scene,
            view,
            steps=cfg.online_steps,
            bn_mode=cfg.bn_mode,
            kind=cfg.kd_loss,
            guard=guard,
        )
        if log.divergence is None and log.steps:
            logits, loss = evaluate_view(self.net, scene, view, cfg.bn_mode, cfg.kd_loss)
            log.divergence = check_after(guard, log, logits, loss)
            if log.divergence is None:
                self._unrotated = (scene.scene_id, logits)  # the prediction at angle 0
        self.record_steps(out, log)
        if log.divergence is not None:  # undo this scene's step(s): the stream goes on unharmed
            self.net.load_state_dict(before, strict=True)
            _restore_optimizer_state(self.optimizer, optim_before)
        elif log.steps:
            self.updates += 1
            out.updated = True
        out.extra["updates_so_far"] = self.updates

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        cached, self._unrotated = self._unrotated, None
        if angle == 0.0 and cached is not None and cached[0] == scene.scene_id:
            return cached[1]  # made by the post-step check with the current weights
        return predict_view(self.net, scene.view(angle), self.cfg.bn_mode)


def _flat_optimizer_state(opt: torch.optim.Optimizer) -> dict:
    return {(id(p), k): v for p, st in opt.state.items() for k, v in st.items()}


def _restore_optimizer_state(opt: torch.optim.Optimizer, flat: dict) -> None:
    params = {id(p): p for g in opt.param_groups for p in g["params"]}
    opt.state.clear()
    for (pid, k), v in flat.items():
        opt.state[params[pid]][k] = v
