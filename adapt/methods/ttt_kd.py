"""TTT-KD: SGD on the distillation loss ``L_2D``, ``psi_3D`` only (METHOD.md).

``ttt-kd`` (offline), ``rotation_protocol="paper"`` (Algorithm 1, the default): reset to the
trained weights once per scene; for each of the R rotations run ``steps`` steps on the ROTATED
copy, weights carried from the previous rotation, then predict the UNROTATED scene; the logits
are summed. ``"ensemble"``: for every rotation start from the trained weights, run ``steps``
steps on the rotated view and predict that view (a rotation ensemble). With R = 1 both are
the same. ``ttt-kd-online`` (TTT-KD-O): weights and optimizer state
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
from tttkd.adapt.scenes import SceneData, View
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
    """Offline TTT-KD: reset to the trained weights per scene (and per rotation in the
    ensemble protocol)."""

    name = "ttt-kd"
    uses_teacher = True

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        self.reset()
        self._optimizer = kd_optimizer(self.net, self.cfg.lr, self.cfg.momentum)
        out.extra["rotation_protocol"] = self.cfg.rotation_protocol

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        paper = self.cfg.rotation_protocol == "paper"
        view = scene.view(angle)
        target = scene.view(0.0) if paper else view  # the view that is predicted
        if not paper and r > 0:
            self.reset()
            self._optimizer = kd_optimizer(self.net, self.cfg.lr, self.cfg.momentum)
        # paper: a diverging rotation falls back to the weights it started from (for the
        # first rotation, and in the ensemble protocol, the trained ones)
        before = self.state_snapshot() if paper and r > 0 else None
        logits = self._steps_and_predict(scene, view, target, out)
        if logits is None:
            if before is None:
                self.reset()
            else:
                self.net.load_state_dict(before, strict=True)
            self._optimizer = kd_optimizer(self.net, self.cfg.lr, self.cfg.momentum)
            logits = predict_view(self.net, target)
        if not paper or r == self.cfg.rotations - 1:
            self.reset()
        return logits

    def _steps_and_predict(
        self, scene: SceneData, view: View, target: View, out: SceneOutcome
    ) -> Tensor | None:
        """Steps on ``view``; the logits of ``target`` under the adapted weights, or None when
        the steps or the adapted weights diverged (judged on ``view``)."""
        cfg = self.cfg
        guard = DivergenceGuard(cfg.divergence_ratio, cfg.divergence_patience)
        log = run_kd_steps(
            self.net,
            self._optimizer,
            scene,
            view,
            steps=cfg.steps,
            bn_mode=cfg.bn_mode,
            kind=cfg.kd_loss,
            guard=guard,
            cuda_graphs=cfg.cuda_graphs,
        )
        logits = None
        if log.divergence is None:
            logits, loss = evaluate_view(self.net, scene, view, cfg.bn_mode, cfg.kd_loss)
            log.divergence = check_after(guard, log, logits, loss)
            if log.divergence is not None:
                logits = None
            elif target is not view:
                logits = predict_view(self.net, target, cfg.bn_mode)
        self.record_steps(out, log)
        out.updated = out.updated or log.steps > 0
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
            cuda_graphs=cfg.cuda_graphs,
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
