"""The TTT-KD inner loop: SGD steps on ``L_2D`` for one view, ``psi_3D`` only.

Shared by offline TTT-KD, online TTT-KD-O and the benchmark. Per step only the forward and
backward of the network run: the sparse context (kernel maps) comes with the view and the
teacher targets were sampled when the scene was loaded. ``rho_2D`` is applied only to the
voxels that have a correspondence.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tttkd.adapt.bn import backbone_norms, bn_phase
from tttkd.adapt.graph_step import graph_decision, run_captured_steps
from tttkd.adapt.safety import Divergence, DivergenceGuard
from tttkd.adapt.scenes import SceneData, View
from tttkd.model.network import SegKDNet

__all__ = [
    "StepLog",
    "evaluate_view",
    "kd_loss",
    "kd_optimizer",
    "predict_view",
    "run_kd_steps",
    "synchronize",
]


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock step times mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepLog:
    """What happened during one view's TTT steps."""

    losses: list[float] = field(default_factory=list)  # before each step
    step_ms: list[float] = field(default_factory=list)
    divergence: Divergence | None = None
    captured: bool = False  # steps 1.. replayed from a CUDA graph (adapt/graph_step.py)
    loss_after: float | None = None  # after the last step (set by the caller's check)

    @property
    def steps(self) -> int:
        return len(self.step_ms)


def kd_optimizer(net: SegKDNet, lr: float, momentum: float) -> torch.optim.SGD:
    """SGD over ``psi_3D``; the heads are frozen (``requires_grad`` off)."""
    net.set_trainable(psi_3d=True, rho_y=False, rho_2d=False)
    return torch.optim.SGD(net.param_groups()["psi_3D"], lr=lr, momentum=momentum)


def kd_loss(net: SegKDNet, scene: SceneData, view: View, kind: str = "cosine") -> Tensor:
    """``L_2D`` of the view under the current weights (with a graph).

    Equal to ``model.losses.distillation_loss`` over the scene's pairs (the mean over pairs
    of ``1 - cos``; ``l2`` of unit vectors is twice that), computed from per-voxel sums of
    unit targets (see :class:`~tttkd.adapt.scenes.SceneData`).
    """
    if kind not in ("cosine", "l2"):
        raise ValueError(f"unknown distillation loss {kind!r}; use 'cosine' or 'l2'")
    feats = net.features(view.feats, view.context)
    if scene.num_pairs == 0:
        return feats.sum() * 0.0
    return _loss_from_features(net, scene, view, feats, kind)


def _loss_from_features(
    net: SegKDNet, scene: SceneData, view: View, feats: Tensor, kind: str
) -> Tensor:
    pred = F.normalize(net.kd_head(feats[view.kd_rows]), dim=1, eps=1e-8)
    loss = 1.0 - (pred * view.kd_targets).sum() / scene.num_pairs
    return loss if kind == "cosine" else 2.0 * loss


def _grad_norm(params: list[nn.Parameter]) -> float:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.cat(grads)))


@dataclass
class _EagerStep:
    """One eager SGD step of a view, as a callable ``step -> stop`` that appends to ``log``
    (``run_captured_steps`` calls it for step 0 and after a failed capture)."""

    net: SegKDNet
    optimizer: torch.optim.Optimizer
    scene: SceneData
    view: View
    kind: str
    guard: DivergenceGuard | None
    log: StepLog
    params: list[nn.Parameter]

    def __call__(self, step: int) -> bool:
        """True when the loop must stop (a non-finite loss, or the guard's verdict)."""
        log, guard, device = self.log, self.guard, self.scene.device
        synchronize(device)
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = kd_loss(self.net, self.scene, self.view, self.kind)
        value = float(loss.detach())
        if not math.isfinite(value):
            log.divergence = guard.check(step, value) if guard else None
            log.step_ms.append((time.perf_counter() - t0) * 1e3)
            log.losses.append(value)
            return True
        loss.backward()
        grad_norm = _grad_norm(self.params) if guard else None
        verdict = guard.check(step, value, grad_norm) if guard else None
        if verdict is None:
            self.optimizer.step()
        synchronize(device)
        log.step_ms.append((time.perf_counter() - t0) * 1e3)
        log.losses.append(value)
        if verdict is not None:
            log.divergence = verdict
            return True
        return False


def run_kd_steps(
    net: SegKDNet,
    optimizer: torch.optim.Optimizer,
    scene: SceneData,
    view: View,
    *,
    steps: int,
    bn_mode: str,
    kind: str = "cosine",
    guard: DivergenceGuard | None = None,
    cuda_graphs: str = "off",
) -> StepLog:
    """Up to ``steps`` SGD steps; stops at the first divergence (weights are then suspect).

    ``cuda_graphs`` (auto | on | off): replay one captured step on CUDA where
    :func:`~tttkd.adapt.graph_step.graph_decision` allows; otherwise the eager loop.
    """
    log = StepLog()
    if steps == 0 or scene.num_pairs == 0:
        return log
    params = [p for g in optimizer.param_groups for p in g["params"]]
    eager_step = _EagerStep(net, optimizer, scene, view, kind, guard, log, params)
    with bn_phase(net, bn_mode, "step"):
        log.captured, _ = graph_decision(
            cuda_graphs,
            device_type=scene.device.type,
            steps=steps,
            backend=view.context.backend.name,
            optimizer=type(optimizer).__name__,
            bn_mode=bn_mode,
            bn_momentum_none=any(m.momentum is None for m in backbone_norms(net)),
        )
        if log.captured:  # adapt/graph_step.py: step 0 eager, then one graph replayed
            loss_fn = lambda: kd_loss(net, scene, view, kind)  # noqa: E731
            run_captured_steps(
                optimizer, params, loss_fn, eager_step, log, steps=steps, guard=guard
            )
        else:
            for step in range(steps):
                if eager_step(step):
                    break
    return log


@torch.no_grad()
def evaluate_view(
    net: SegKDNet, scene: SceneData, view: View, bn_mode: str = "eval", kind: str = "cosine"
) -> tuple[Tensor, float | None]:
    """Logits per cached point AND the KD loss (None without pairs), from one backbone forward.

    After the last TTT step nothing has checked the weights yet; this forward serves both
    the prediction and that check at no extra cost.
    """
    with bn_phase(net, bn_mode, "predict"):
        feats = net.features(view.feats, view.context)
        logits = net.seg_head(feats)
        loss = None
        if scene.num_pairs:
            loss = float(_loss_from_features(net, scene, view, feats, kind))
    return logits.float()[view.row_of_point], loss


@torch.no_grad()
def predict_view(net: SegKDNet, view: View, bn_mode: str = "eval") -> Tensor:
    """Class logits per CACHED point (float32 ``[N_cached, C]``) for one view."""
    with bn_phase(net, bn_mode, "predict"):
        logits = net.predict(view.feats, view.context)
    return logits.float()[view.row_of_point]
