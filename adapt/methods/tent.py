"""``tent``: entropy minimisation on the BN affine parameters (Wang et al., ICLR 2021).

As in TENT: BN layers of ``psi_3D`` normalise with the scene's batch statistics (running
statistics untouched), only their weight and bias are trained, with Adam on the mean
softmax entropy over the scene's voxels; ``tent_steps`` steps per scene on the unrotated
view. ``tent_predict="adapt"`` (the original): the unrotated scene's prediction is the output
of the adapting forward, i.e. made with the weights BEFORE the (last) step, as TENT predicts
and updates in one pass; ``"after"``: it is predicted again with the updated weights. Other
rotations are predicted with the updated weights, batch statistics. ``tent_episodic`` resets
per scene; by default the weights carry over the stream as in the original (online) TENT.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tttkd.adapt.bn import backbone_norms, bn_phase
from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods.base import Method, SceneOutcome
from tttkd.adapt.safety import Divergence
from tttkd.adapt.scenes import SceneData
from tttkd.adapt.ttt import predict_view
from tttkd.model.network import SegKDNet

__all__ = ["Tent", "entropy"]


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy of the softmax over rows."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1).mean()


class Tent(Method):
    """TENT on psi_3D's BatchNorm affine parameters."""

    name = "tent"

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        super().__init__(net, cfg)
        self.online = not cfg.tent_episodic
        self._adapting: Tensor | None = None  # the adapting forward's logits (unrotated view)
        self._make_optimizer()

    def _make_optimizer(self) -> None:
        params = []
        for m in backbone_norms(self.net):
            for p in (m.weight, m.bias):
                if p is not None:
                    p.requires_grad_(True)
                    params.append(p)
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.tent_lr)

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        if self.cfg.tent_episodic:
            self.reset()
            self._make_optimizer()
        before = None if self.cfg.tent_episodic else self.state_snapshot()
        view = scene.view(0.0)
        self._adapting = None
        adapting = None
        with bn_phase(self.net, "scene", "step"):
            losses = []
            for step in range(self.cfg.tent_steps):
                self.optimizer.zero_grad(set_to_none=True)
                logits = self.net.seg_head(self.net.features(view.feats, view.context))
                adapting = logits.detach().float()[view.row_of_point]
                loss = entropy(logits)
                value = float(loss.detach())
                losses.append(value)
                if not math.isfinite(value):
                    out.fallback = Divergence(step, value, f"non-finite entropy at step {step}")
                    break
                loss.backward()
                self.optimizer.step()
                out.steps += 1
        out.losses.append(losses)
        out.extra["entropy_first"] = losses[0] if losses else None
        if out.fallback is not None:
            if before is not None:
                self.net.load_state_dict(before, strict=True)
            else:
                self.reset()
        out.updated = out.steps > 0 and out.fallback is None
        if out.updated and self.cfg.tent_predict == "adapt":
            self._adapting = adapting
        out.extra["tent_predict"] = self.cfg.tent_predict

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        if angle == 0.0 and self._adapting is not None:
            logits, self._adapting = self._adapting, None
            return logits
        return predict_view(self.net, scene.view(angle), "scene")
