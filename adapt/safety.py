"""Divergence guard: lr 1.0 on a single scene can blow up, and one scene must not sink a run.

A TTT-KD step whose loss (or gradient norm) is non-finite, or whose loss exceeds
``ratio`` x the scene's first loss, stops adaptation for that scene; the method then falls back
to the unadapted prediction and the report lists the scene with the reason. The run goes on.
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
    """Watches one scene's losses; :meth:`check` returns a :class:`Divergence` or None."""

    def __init__(self, ratio: float):
        if not ratio > 1:
            raise ValueError(f"divergence ratio must be > 1, got {ratio}")
        self.ratio = ratio
        self.first: float | None = None

    def check(self, step: int, loss: float, grad_norm: float | None = None) -> Divergence | None:
        if not math.isfinite(loss):
            return Divergence(step, loss, f"non-finite KD loss ({loss}) at step {step}")
        if grad_norm is not None and not math.isfinite(grad_norm):
            return Divergence(step, loss, f"non-finite gradient at step {step}")
        if self.first is None:
            self.first = loss
            return None
        if loss > self.ratio * self.first and loss > self.first + 1e-6:
            return Divergence(
                step,
                loss,
                f"KD loss exploded at step {step}: {loss:.4g} > {self.ratio:g} x first "
                f"loss {self.first:.4g}",
            )
        return None
