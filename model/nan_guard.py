"""Training never goes on, or saves, with non-finite numbers.

Choice (documented in the README): a non-finite loss STOPS training with an error naming the
epoch, the step, the loss terms and the batch's scenes, rather than skipping the batch: a NaN
is nearly always a setting (learning rate) or a damaged input that should be fixed, and
skipping would hide it. The check reads the loss values the step logs anyway (no extra device
sync), after the optimizer step; the weights it spoiled are never saved, because every save
first checks that all weights are finite (:func:`check_finite_weights`), so
``last.safetensors``/``best.safetensors`` stay those of the last finite epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from tttkd.core import TttkdError

LOSS_TERMS = ("loss", "seg", "kd", "ssl")  # the logged terms, in _train_epoch's order
FIX = (
    "lower the learning rate (optim.lr) or set optim.grad_clip, and check the cache with "
    "`tttkd-prep verify`; resume from the last good epoch with --resume"
)


class NonFiniteError(TttkdError, FloatingPointError):
    """A NaN or inf in the loss or the weights of a training run."""


def check_finite_loss(
    values: Sequence[float],
    names: Sequence[str],
    epoch: int,
    step: int,
    scenes: Sequence[str],
    info: Any = None,
) -> None:
    """Raise when any loss term of the step is NaN/inf, naming the step and the scenes.

    Under DDP (``info.enabled``) the ranks agree first (one tiny all-reduce), so every rank
    stops at the same step and none is left waiting in a collective.
    """
    bad = not all(math.isfinite(v) for v in values)
    if info is not None and getattr(info, "enabled", False):
        import torch

        from tttkd.model.distributed import all_reduce_sum

        flag = torch.tensor([float(bad)], dtype=torch.float64)
        bad = bool(all_reduce_sum(flag, info)[0] > 0)
    if not bad:
        return
    terms = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, values))
    raise NonFiniteError(
        f"non-finite loss at epoch {epoch}, step {step} ({terms}) on the batch of scenes "
        f"{list(scenes)}; training stopped and nothing of this epoch was saved\n  fix: {FIX}"
    )


def check_finite_weights(net: nn.Module, target: str) -> None:
    """Refuse to write ``target`` from a network with NaN/inf weights or buffers."""
    bad = [
        name
        for name, t in [*net.named_parameters(), *net.named_buffers()]
        if t.is_floating_point() and not bool(t.detach().isfinite().all())
    ]
    if bad:
        raise NonFiniteError(
            f"refusing to write {target}: non-finite values in {len(bad)} tensors "
            f"({', '.join(bad[:5])}); the earlier checkpoints are kept\n  fix: {FIX}"
        )
