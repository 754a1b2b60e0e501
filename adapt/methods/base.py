"""What every adaptation method is: its own copy of the network, one scene at a time.

A method receives the scenes of the stream in order (:meth:`Method.process`) and returns the
summed logits over the run's rotations for every cached point, plus what it did (steps,
losses, fallbacks). Offline methods reset to the trained weights before each scene (and, for
TTT-KD in the ensemble protocol, before each rotation), so scene order cannot matter; online
methods carry weights along.

Adding a method (AdaContrast, TTT-MAE, ...): subclass :class:`Method`, implement
:meth:`Method.adapt_view` (and :meth:`Method.begin_scene` when it needs a per-scene update),
and add one line to ``METHODS`` in ``tttkd/adapt/methods/__init__.py``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.rotations import rotation_angles
from tttkd.adapt.safety import Divergence
from tttkd.adapt.scenes import SceneData
from tttkd.adapt.ttt import StepLog, predict_view
from tttkd.model.network import SegKDNet

__all__ = ["Method", "SceneOutcome"]


@dataclass
class SceneOutcome:
    """One method's result on one scene."""

    logits: Tensor  # float32 [N_cached, C] on CPU, summed over rotations
    updated: bool = False  # did the weights change for this scene
    steps: int = 0
    losses: list[list[float]] = field(default_factory=list)  # per rotation, before each step
    losses_after: list[float] = field(default_factory=list)  # per rotation, after the last
    step_ms: list[float] = field(default_factory=list)
    fallback: Divergence | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able per-scene record (no logits)."""
        first = [ls[0] for ls in self.losses if ls]
        last = [ls[-1] for ls in self.losses if ls]
        return {
            "updated": self.updated,
            "steps": self.steps,
            "loss_first": (sum(first) / len(first)) if first else None,
            "loss_last": (sum(last) / len(last)) if last else None,
            "loss_after": (
                sum(self.losses_after) / len(self.losses_after) if self.losses_after else None
            ),
            "ms_per_step": (sum(self.step_ms) / len(self.step_ms)) if self.step_ms else None,
            "fallback": self.fallback.to_dict() if self.fallback else None,
            "seconds": self.seconds,
            **self.extra,
        }


class Method:
    """Base class: owns a copy of the network and the trained weights to reset to."""

    name: ClassVar[str] = "method"
    online: ClassVar[bool] = False
    uses_teacher: ClassVar[bool] = False  # reads teacher features (the runner skips them if none)

    def __init__(self, net: SegKDNet, cfg: AdaptConfig):
        self.cfg = cfg
        self.net = copy.deepcopy(net)
        self.net.eval()
        self.net.set_trainable(psi_3d=False, rho_y=False, rho_2d=False)
        self._trained = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.scenes_seen = 0

    def reset(self) -> None:
        """Back to the trained weights (and BN statistics)."""
        self.net.load_state_dict(self._trained, strict=True)

    def state_snapshot(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def process(self, scene: SceneData) -> SceneOutcome:
        """Adapt (per the method) and predict every rotation; logits summed."""
        t0 = time.perf_counter()
        out = SceneOutcome(logits=torch.zeros(0))
        self.begin_scene(scene, out)
        total: Tensor | None = None
        for r, angle in enumerate(rotation_angles(self.cfg.rotations)):
            logits = self.adapt_view(scene, angle, r, out)
            total = logits if total is None else total + logits
        out.logits = total.cpu() if total is not None else torch.zeros(0)
        self.scenes_seen += 1
        out.seconds = time.perf_counter() - t0
        return out

    def begin_scene(self, scene: SceneData, out: SceneOutcome) -> None:
        """Per-scene work before the rotations (online updates, statistics); default none."""

    def adapt_view(self, scene: SceneData, angle: float, r: int, out: SceneOutcome) -> Tensor:
        """Logits per cached point for the view at ``angle``; default: predict as is."""
        return predict_view(self.net, scene.view(angle))

    @staticmethod
    def record_steps(out: SceneOutcome, log: StepLog) -> None:
        out.steps += log.steps
        out.losses.append(log.losses)
        out.step_ms.extend(log.step_ms)
        if log.loss_after is not None:
            out.losses_after.append(log.loss_after)
        if log.divergence is not None and out.fallback is None:
            out.fallback = log.divergence
