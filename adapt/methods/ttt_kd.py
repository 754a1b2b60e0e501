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
from tttkd.adapt.ttt import kd_optimizer, predict_view, run_kd_steps
from tttkd.model.network import SegKDNet

__all__ = ["TTTKD", "TTTKDOnline"]


def _non_finite(logits: Tensor, step: int) -> Divergence | None:
    if bool(torch.isfinite(logits).all()):
        return None
    return Divergence(step, float("nan"), "non-finite logits after adaptation")


class TTTKD(Method):
    """Offline TTT-KD: reset to the trained weights for every scene and rotation."""

    name = "ttt-kd"

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        cfg = self.cfg
        view = scene.view(angle)
        self.reset()
        optimizer = kd_optimizer(self.net, cfg.lr, cfg.momentum)
        log = run_kd_steps(
            self.net,
            optimizer,
            scene,
            view,
            steps=cfg.steps,
            bn_mode=cfg.bn_mode,
            kind=cfg.kd_loss,
            guard=DivergenceGuard(cfg.divergence_ratio),
        )
        self.record_steps(out, log)
        out.updated = out.updated or log.steps > 0
        logits = None
        if log.divergence is None:
            logits = predict_view(self.net, view, cfg.bn_mode)
            bad = _non_finite(logits, log.steps)
            if bad is not None:
                out.fallback = out.fallback or bad
                logits = None
        if logits is None:  # fall back to the unadapted prediction
            self.reset()
            logits = predict_view(self.net, view)
        self.reset()
        return logits


class TTTKDOnline(Method):
    """TTT-KD-O: one (or ``online_steps``) step per updated scene, weights carried over."""

    name = "ttt-kd-online"
    online = True

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        super().__init__(net, cfg)
        self.optimizer = kd_optimizer(self.net, cfg.lr, cfg.momentum)
        self.updates = 0  # scenes whose weights were stepped (the stride test counts these)

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        cfg = self.cfg
        if self.scenes_seen % cfg.stride != 0:
            return
        before = self.state_snapshot()
        optim_before = {
            k: v.clone() if isinstance(v, Tensor) else v
            for k, v in _flat_optimizer_state(self.optimizer).items()
        }
        log = run_kd_steps(
            self.net,
            self.optimizer,
            scene,
            scene.view(0.0),
            steps=cfg.online_steps,
            bn_mode=cfg.bn_mode,
            kind=cfg.kd_loss,
            guard=DivergenceGuard(cfg.divergence_ratio),
        )
        self.record_steps(out, log)
        divergence = log.divergence
        if divergence is None and log.steps:
            probe = predict_view(self.net, scene.view(0.0), cfg.bn_mode)
            divergence = _non_finite(probe, log.steps)
            out.fallback = out.fallback or divergence
        if divergence is not None:  # undo this scene's step(s): the stream goes on unharmed
            self.net.load_state_dict(before, strict=True)
            _restore_optimizer_state(self.optimizer, optim_before)
            return
        if log.steps:
            self.updates += 1
            out.updated = True
        out.extra["updates_so_far"] = self.updates

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        return predict_view(self.net, scene.view(angle), self.cfg.bn_mode)


def _flat_optimizer_state(opt: torch.optim.Optimizer) -> dict:
    return {(id(p), k): v for p, st in opt.state.items() for k, v in st.items()}


def _restore_optimizer_state(opt: torch.optim.Optimizer, flat: dict) -> None:
    params = {id(p): p for g in opt.param_groups for p in g["params"]}
    opt.state.clear()
    for (pid, k), v in flat.items():
        opt.state[params[pid]][k] = v
