"""CUDA-graph capture of a TTT-KD step: one capture per view, replayed for its other steps.

Why: a scene's coordinates, kernel maps and teacher targets are fixed for all its steps, so
the whole step (forward, KD loss, backward, SGD update) is the same sequence of GPU kernels
every time. On a GPU that step is launch-bound (hundreds of small kernels, issue 10);
replaying a captured graph launches it once.

How: the first step runs eagerly on a side stream (it builds the kernel maps and the SGD
momentum buffers, and warms cuBLAS, as capture requires), then one step is captured and
replayed for steps 1..N-1. After each replay the loss and gradient norm are read back and
given to the divergence guard exactly as the eager loop does. The one difference: the eager
loop skips the SGD update of a step the guard rejects, a replay has already applied it. Both
callers (``methods/ttt_kd.py``) discard the weights of a diverged view, so the outcome is the
same. If capture fails the remaining steps run eagerly (with a warning).

:func:`graph_decision` is the pure rule for captured vs eager, tested on CPU; capture itself
needs a CUDA device (``tests/adapt/test_graph_step.py`` compares weights on a GPU).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "CUDA_GRAPH_MODES",
    "GRAPH_SAFE_BACKENDS",
    "MIN_GRAPH_STEPS",
    "graph_decision",
    "run_captured_steps",
]

CUDA_GRAPH_MODES: tuple[str, ...] = ("auto", "on", "off")

# Sparse backends whose forward and backward make no host-device sync once the kernel maps
# exist (pure torch ops on fixed shapes); spconv / MinkowskiEngine are not known to be safe.
GRAPH_SAFE_BACKENDS: tuple[str, ...] = ("torch", "table")

# One eager warm-up step + one captured step replayed at least twice; fewer steps (e.g. the
# online stream's one step per scene) cost more to capture than they save.
MIN_GRAPH_STEPS = 3


def graph_decision(
    mode: str,
    *,
    device_type: str,
    steps: int,
    backend: str,
    optimizer: str,
    bn_mode: str,
    bn_momentum_none: bool,
) -> tuple[bool, str]:
    """``(captured, why)`` for one view's TTT steps; pure, so the rule is testable on CPU.

    ``optimizer`` is the optimizer's class name (only plain SGD is known to be capturable:
    no host-side state after its first step); ``bn_momentum_none`` says some BatchNorm uses
    a cumulative average, whose factor ``1 / num_batches_tracked`` is computed on the host.
    """
    if mode not in CUDA_GRAPH_MODES:
        raise ValueError(f"cuda_graphs must be one of {', '.join(CUDA_GRAPH_MODES)}, got {mode!r}")
    reasons = [
        (mode == "off", "cuda_graphs is off"),
        (device_type != "cuda", f"device is {device_type}, not cuda"),
        (steps < MIN_GRAPH_STEPS, f"{steps} step(s) < {MIN_GRAPH_STEPS}: capture would not pay"),
        (backend not in GRAPH_SAFE_BACKENDS, f"backend {backend!r} is not known capture-safe"),
        (optimizer != "SGD", f"optimizer {optimizer} is not known capture-safe"),
        (
            bn_mode == "train" and bn_momentum_none,
            "BatchNorm with momentum=None updates statistics with a host-side factor",
        ),
    ]
    for blocked, why in reasons:
        if blocked:
            return False, why
    return True, "captured"


def _grad_norm_tensor(params: list[nn.Parameter]) -> Tensor:
    grads = [p.grad.detach().flatten() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.linalg.vector_norm(torch.cat(grads))


def run_captured_steps(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss_fn: Callable[[], Tensor],
    eager_step: Callable[[int], bool],
    log,
    *,
    steps: int,
    guard,
) -> None:
    """Steps ``0..steps-1``: step 0 by ``eager_step`` on a side stream, then capture + replay.

    ``eager_step(step) -> stop`` is the eager loop's body (it appends to ``log``);
    ``loss_fn()`` builds the KD loss with a graph; ``log`` is the caller's ``StepLog``.
    """
    device = params[0].device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        stop = eager_step(0)
    torch.cuda.current_stream(device).wait_stream(side)
    if stop:
        return
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    try:
        stats = _capture(graph, optimizer, params, loss_fn, with_grad_norm=guard is not None)
    except RuntimeError as err:
        warnings.warn(
            f"CUDA graph capture of the TTT step failed, running eagerly: {err}", stacklevel=3
        )
        optimizer.zero_grad(set_to_none=True)
        for step in range(1, steps):
            if eager_step(step):
                break
        return
    try:
        _replay(graph, stats, log, steps=steps, guard=guard, device=device)
    finally:
        optimizer.zero_grad(set_to_none=True)  # grads live in the graph's memory pool
        del graph


def _capture(
    graph: torch.cuda.CUDAGraph,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss_fn: Callable[[], Tensor],
    *,
    with_grad_norm: bool,
) -> Tensor:
    """Capture one whole step into ``graph``; returns the tensor each replay refills with
    the loss (and the gradient norm, for the guard)."""
    with torch.cuda.graph(graph):
        loss = loss_fn()
        loss.backward()
        if with_grad_norm:
            stats = torch.stack([loss.detach(), _grad_norm_tensor(params)])
        else:
            stats = loss.detach().reshape(1)
        optimizer.step()
    return stats


def _replay(
    graph: torch.cuda.CUDAGraph, stats: Tensor, log, *, steps: int, guard, device: torch.device
) -> None:
    """Steps ``1..steps-1`` by replay, each judged as the eager loop judges its steps."""
    for step in range(1, steps):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        graph.replay()
        values = stats.tolist()  # waits for the replay
        log.step_ms.append((time.perf_counter() - t0) * 1e3)
        log.losses.append(values[0])
        if not math.isfinite(values[0]):  # as the eager loop: stop, guard or not
            log.divergence = guard.check(step, values[0]) if guard else None
            break
        verdict = guard.check(step, values[0], values[1]) if guard else None
        if verdict is not None:
            log.divergence = verdict  # the update is applied; callers discard the weights
            break
