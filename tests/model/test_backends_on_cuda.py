"""Every sparse backend usable on CUDA equals the torch reference ON THE GPU (issue 10).

Why: tests/model/test_backend_equivalence.py checks the backends on CPU only, and a backend
right on CPU can be wrong on a GPU (a CUDA wheel built for another toolkit, a kernel bug). Run
by scripts/gpu_check.sh on the lent GPU machine; without CUDA every test here skips, saying so.
"""

from __future__ import annotations

import pytest
import torch

from tttkd.model.minkunet import minkunet_test
from tttkd.model.sparse.base import (
    INSTALL_HINTS,
    BackendUnavailableError,
    SparseContext,
    SparseTensor,
    get_backend,
)
from tttkd.model.sparse.select import PREFERENCE, REFERENCE
from tttkd.model.sparse.testing import random_coords, room_coords

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu_check.sh runs it)"
)
CUDA_BACKENDS = [n for n in PREFERENCE["cuda"] if n != REFERENCE]  # never minkowski
RTOL = 1e-4  # of the reference's largest magnitude, fp32 (issue 10's target)


def _backend_or_skip(name: str) -> None:
    try:
        get_backend(name)
    except BackendUnavailableError as err:
        pytest.skip(f"sparse backend {name!r} not installed: {INSTALL_HINTS[name]} ({err})")


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(got).all(), "non-finite values"
    return float((got.float() - ref.float()).abs().max()) / max(1.0, float(ref.abs().max()))


def _conv(backend: str, coords, feats, weight, op) -> list[torch.Tensor]:
    """One conv on a fresh context on the tensors' device: output, grad input, grad weight."""
    k, stride, transposed = op
    ctx = SparseContext(coords, backend)
    x = feats.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    st = SparseTensor.from_context(x, ctx)
    if transposed:  # go down first so that a coarse set exists to come back from
        down = torch.full((8, feats.shape[1], feats.shape[1]), 0.3, device=feats.device)
        st = ctx.backend.conv(st, down, kernel_size=2, stride=2, transposed=False)
    y = ctx.backend.conv(st, w, kernel_size=k, stride=stride, transposed=transposed)
    ramp = torch.linspace(-1.0, 1.0, y.feats.numel(), device=y.feats.device)
    gx, gw = torch.autograd.grad((y.feats * ramp.view_as(y.feats)).sum(), (x, w))
    return [y.coords, y.feats.detach(), gx, gw]


@pytest.mark.parametrize("name", CUDA_BACKENDS)
@pytest.mark.parametrize("op", [(3, 1, False), (5, 1, False), (2, 2, False), (2, 2, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_conv_equals_reference_on_cuda(name, op, seed):
    _backend_or_skip(name)
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(1500, 20, batch_size=2, seed=seed, low=-10).cuda()
    feats = torch.randn(coords.shape[0], 8, generator=g).cuda()
    weight = torch.randn(op[0] ** 3, 8, 16, generator=g).cuda()
    ref = _conv(REFERENCE, coords, feats, weight, op)
    got = _conv(name, coords, feats, weight, op)
    assert torch.equal(got[0].cpu(), ref[0].cpu()), "output coordinates / row order differ"
    for what, a, b in zip(("forward", "grad input", "grad weight"), got[1:], ref[1:]):
        assert _rel_err(a, b) <= RTOL, f"{name} {op} {what}: {_rel_err(a, b):.2e}"


@pytest.mark.parametrize("name", [REFERENCE, *CUDA_BACKENDS])
def test_minkunet_room_on_cuda_equals_reference(name):
    """A ~4k-voxel room through MinkUNet (train mode): forward and every parameter gradient
    on the GPU against the torch reference on the CPU (so the reference itself is checked)."""
    _backend_or_skip(name)
    torch.manual_seed(0)
    net = minkunet_test(in_channels=3).train()
    coords = room_coords(4000, seed=3)
    feats = torch.randn(coords.shape[0], 3)

    def run(backend: str, device: str) -> list[torch.Tensor]:
        net.to(device).zero_grad(set_to_none=True)
        ctx = SparseContext(coords.to(device), backend)
        out = net(SparseTensor.from_context(feats.to(device), ctx)).feats
        out.square().mean().backward()
        return [out.detach().cpu()] + [p.grad.detach().cpu() for p in net.parameters()]

    ref = run(REFERENCE, "cpu")
    got = run(name, "cuda")
    worst = max(_rel_err(a, b) for a, b in zip(got, ref))
    assert worst <= RTOL, f"{name} on cuda vs torch on cpu: {worst:.2e}"
