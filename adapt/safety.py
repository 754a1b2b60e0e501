"""Divergence guard: lr 1.0 on a single scene can blow up, and one scene must not sink a run.

A test-time step (TTT-KD's KD loss, TTT-MAE's MAE loss) whose loss or gradient norm is
non-finite, or whose loss exceeds ``ratio`` x the scene's first loss, stops adaptation for that
scene; the method then falls back to the unadapted prediction and the report lists the scene
with the reason, naming the loss. The run goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Divergence", "DivergenceGuard"]


@dataclass(frozen=True)
class Divergence:
    """Why adaptation of a scene was abandoned (``step`` counts from 0)."""

    step: int
    loss: float
    reason: str

    def to_dict(self) -> dict:
        loss = self.loss if math.isfinite(self.loss) else str(self.loss)
        return {"step": self.step, "loss": loss, "reason": self.reason}


class DivergenceGuard:
    """Watches one scene's losses; :meth:`check` (each step) and :meth:`check_final` (the
    weights that will predict) return a :class:`Divergence` or None.

    At lr 1.0 the loss of a healthy scene may spike for a step or two and recover (seen on
    the demo benchmark: 0.45 -> 0.74 -> 0.46 -> ... -> 0.28), so a step stops TTT when the
    loss is non-finite or stays above ``ratio`` x the first loss for ``patience``
    consecutive steps; after the last step the loss must be back below ``ratio`` x first
    (the last step's damage is otherwise never seen).
    """

    def __init__(self, ratio: float, patience: int = 1, loss_name: str = "KD loss"):
        """``loss_name`` names the watched loss in the reason (``"MAE loss"`` for ttt-mae)."""
        if not ratio > 1:
            raise ValueError(f"divergence ratio must be > 1, got {ratio}")
        if patience < 1:
            raise ValueError(f"divergence patience must be >= 1, got {patience}")
        self.ratio = ratio
        self.patience = patience
        self.loss_name = loss_name
        self.first: float | None = None
        self._above = 0

    def _too_high(self, loss: float) -> bool:
        return self.first is not None and loss > self.ratio * self.first + 1e-6

    def check(self, step: int, loss: float, grad_norm: float | None = None) -> Divergence | None:
        if not math.isfinite(loss):
            return Divergence(step, loss, f"non-finite {self.loss_name} ({loss}) at step {step}")
        if grad_norm is not None and not math.isfinite(grad_norm):
            return Divergence(step, loss, f"non-finite gradient at step {step}")
        if self.first is None:
            self.first = loss
        self._above = self._above + 1 if self._too_high(loss) else 0
        if self._above >= self.patience:
            return Divergence(
                step,
                loss,
                f"{self.loss_name} exploded: above {self.ratio:g} x the first loss "
                f"{self.first:.4g} for {self.patience} steps (step {step}: {loss:.4g})",
            )
        return None

    def check_final(self, step: int, loss: float) -> Divergence | None:
        """The loss of the adapted weights (after the last step)."""
        if not math.isfinite(loss):
            return Divergence(step, loss, f"non-finite {self.loss_name} ({loss}) after adaptation")
        if self._too_high(loss):
            return Divergence(
                step,
                loss,
                f"{self.loss_name} exploded: {loss:.4g} after adaptation > {self.ratio:g} x the "
                f"first loss {self.first:.4g}",
            )
        return None
