"""Which sparse backend a run uses: ``auto`` picks by device, and every backend is checked.

Why: a backend that imports is not yet a backend that computes the right numbers on this
device (a CUDA wheel built for another toolkit, a library bug). Before a run uses any backend
other than the reference, :func:`probe_backend` runs each kind of conv MinkUNet uses on a
tiny scene, forward and gradients, against the pure-torch reference ON THE SAME DEVICE, and a
backend that disagrees is refused with a message saying what differed and what to use instead.

Preference (:data:`PREFERENCE`), first available backend that passes its probe wins:

* ``cuda``: ``table`` first (pure torch, so no CUDA-version-bound wheel; one gather + one GEMM
  per conv instead of 27 small kernels and atomics, the bottleneck measured in issue 10),
  then ``spconv`` (fast, but its wheels stop at CUDA 12.6 and it was never verified on a GPU
  for this project), then the ``torch`` reference. MinkowskiEngine is never picked: it does
  not build against CUDA 12+ (its issues 543, 594, 638). Revisit this order with the figures
  of ``python -m benchmarks.bench_gpu`` (benchmarks/RESULTS.md).
* ``cpu``: ``torch`` only, the measured CPU winner: ``bench_backbone --threads 1`` at 15k
  voxels, CPU time of a step 1.6 s (torch) vs 4.8-5.2 s (table; dense tables do ~3x the
  flops of the ~9 of 27 neighbours a surface voxel has). spconv on CPU is wrong with more
  than one thread (DESIGN.md), so ``auto`` never picks it there.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from tttkd.model.sparse.base import (
    Backend,
    BackendUnavailableError,
    SparseContext,
    SparseTensor,
    get_backend,
)

__all__ = [
    "PREFERENCE",
    "REFERENCE",
    "BackendCheckError",
    "backend_line",
    "probe_backend",
    "resolve_backend",
]

REFERENCE = "torch"

PREFERENCE: dict[str, tuple[str, ...]] = {
    "cuda": ("table", "spconv", "torch"),
    "cpu": ("torch",),
}

# Relative (to the reference's largest magnitude) tolerance of the probe, fp32 on a tiny scene.
PROBE_RTOL = 1e-4

# (kernel, stride, transposed): the convs of a MinkUNet (stem 5 or 3, blocks 3, down/up 2)
PROBE_OPS: tuple[tuple[int, int, bool], ...] = (
    (3, 1, False),
    (5, 1, False),
    (2, 2, False),
    (2, 2, True),
)

# (backend, device) -> None when verified, else the refusal message (probed once per process)
_VERIFIED: dict[tuple[str, str], str | None] = {}


class BackendCheckError(ValueError):
    """A sparse backend whose start-up check against the torch reference failed."""


def _probe_scene(device: torch.device) -> Tensor:
    """~300 voxels of two small surfaces at negative and positive coordinates (batch 0 and 1)."""
    g = torch.Generator().manual_seed(1234)
    parts = []
    for b in range(2):
        xy = torch.cartesian_prod(torch.arange(-6, 7), torch.arange(-5, 6))
        z = (xy[:, :1] // 3 + torch.randint(0, 2, (xy.shape[0], 1), generator=g)).clamp(-3, 3)
        pts = torch.unique(torch.cat([xy, z], 1), dim=0)
        parts.append(torch.cat([torch.full((pts.shape[0], 1), b), pts], 1))
    coords = torch.cat(parts)
    return coords[torch.randperm(coords.shape[0], generator=g)].int().to(device)


def _run_op(backend: Backend, coords: Tensor, feats: Tensor, weight: Tensor, op) -> list[Tensor]:
    k, stride, transposed = op
    ctx = SparseContext(coords, backend)
    x = feats.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    st = SparseTensor.from_context(x, ctx)
    if transposed:
        down = torch.full((8, feats.shape[1], feats.shape[1]), 0.25, device=feats.device)
        st = backend.conv(st, down, kernel_size=2, stride=2, transposed=False)
    y = backend.conv(st, w, kernel_size=k, stride=stride, transposed=transposed)
    ramp = torch.linspace(-1.0, 1.0, y.feats.numel(), device=y.feats.device)
    gx, gw = torch.autograd.grad((y.feats * ramp.view_as(y.feats)).sum(), (x, w))
    return [y.feats.detach(), gx, gw]


def probe_backend(backend: str | Backend, device: torch.device | str) -> None:
    """Raise :class:`BackendCheckError` unless ``backend`` equals the torch reference on
    ``device`` (every conv kind, forward and both gradients, relative :data:`PROBE_RTOL`)."""
    device = torch.device(device)
    be = get_backend(backend) if isinstance(backend, str) else backend
    ref = get_backend(REFERENCE)
    coords = _probe_scene(device)
    g = torch.Generator().manual_seed(99)
    for op in PROBE_OPS:
        feats = torch.randn(coords.shape[0], 4, generator=g).to(device)
        weight = torch.randn(op[0] ** 3, 4, 3, generator=g).to(device)
        want = _run_op(ref, coords, feats, weight, op)
        try:
            got = _run_op(be, coords, feats, weight, op)
        except Exception as err:  # a crashing backend is refused like a wrong one
            raise BackendCheckError(_refusal(be.name, device, op, f"it raised {err!r}")) from err
        for what, a, b in zip(("forward", "grad input", "grad weight"), got, want):
            if a.shape != b.shape:
                why = f"{what} has shape {tuple(a.shape)}, the reference {tuple(b.shape)}"
                raise BackendCheckError(_refusal(be.name, device, op, why))
            err = float((a.float() - b.float()).abs().max()) / max(1e-6, float(b.abs().max()))
            if not err <= PROBE_RTOL:
                why = f"{what} differs from the reference by {err:.2e} (tolerance {PROBE_RTOL:g})"
                raise BackendCheckError(_refusal(be.name, device, op, why))


def _refusal(name: str, device: torch.device, op, why: str) -> str:
    k, s, tr = op
    kind = f"kernel {k}, stride {s}{', transposed' if tr else ''}"
    return (
        f"sparse backend {name!r} failed its start-up check on {device}: {kind} conv: {why}. "
        f"It would give wrong numbers, so it is refused. Use --backend {REFERENCE} (the "
        f"reference) or auto, or reinstall/upgrade {name} for this device."
    )


def _verified(name: str, device: torch.device) -> None:
    """Probe once per process, backend and device; a failure is remembered and re-raised."""
    key = (name, str(device))
    if key not in _VERIFIED:
        try:
            probe_backend(name, device)
        except BackendCheckError as err:
            _VERIFIED[key] = str(err)
            raise
        _VERIFIED[key] = None
    if _VERIFIED[key] is not None:
        raise BackendCheckError(_VERIFIED[key])


def resolve_backend(name: str, device: torch.device | str) -> str:
    """The backend a run uses: ``auto`` = the first of :data:`PREFERENCE` for the device that
    imports and passes its probe; a named backend must import and pass (else an error)."""
    device = torch.device(device)
    if name != "auto":
        get_backend(name)  # unknown name: ValueError; missing library: names the install
        if name != REFERENCE:
            _verified(name, device)
        return name
    for candidate in PREFERENCE.get(device.type, (REFERENCE,)):
        if candidate == REFERENCE:
            return candidate
        try:
            _verified(candidate, device)
        except BackendUnavailableError:
            continue
        except BackendCheckError as err:
            warnings.warn(f"auto backend: skipping {candidate!r}: {err}", stacklevel=2)
            continue
        return candidate
    return REFERENCE


def backend_line(
    backend: str, requested: str | None, device: torch.device | str, precision: str
) -> str:
    """One line for the CLIs: what computes the sparse convs, and in which precision."""
    how = "auto" if requested == "auto" else "requested" if requested else "checkpoint's"
    checked = "reference" if backend == REFERENCE else "verified against the torch reference"
    return f"sparse backend: {backend} ({how}, {checked}) on {device}; precision: {precision}"
