"""Every sparse backend gives the torch reference's outputs and gradients on the same scene.

Backends that are not installed skip LOUDLY with the command that installs them.
"""

from __future__ import annotations

import pytest
import torch

from tttkd.model.minkunet import minkunet_test
from tttkd.model.sparse.base import (
    BACKEND_NAMES,
    INSTALL_HINTS,
    BackendUnavailableError,
    SparseContext,
    SparseTensor,
    get_backend,
)
from tttkd.model.sparse.testing import random_coords, room_coords

OTHERS = [n for n in BACKEND_NAMES if n != "torch"]
TOL = {"rtol": 1e-4, "atol": 1e-4}


def _backend_or_skip(name: str):
    try:
        return get_backend(name)
    except BackendUnavailableError as err:
        pytest.skip(f"sparse backend {name!r} not installed: {INSTALL_HINTS[name]} ({err})")


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = max(1.0, float(b.abs().max()))
    torch.testing.assert_close(a / scale, b / scale, **TOL, msg=lambda m: f"{what}: {m}")


# (kernel, stride, transposed, input stride)
OPS = [
    (3, 1, False, 1),
    (5, 1, False, 1),
    (3, 1, False, 2),
    (2, 2, False, 1),
    (2, 2, False, 2),
    (2, 2, True, 2),
    (2, 2, True, 4),
]


@pytest.mark.parametrize("name", OTHERS)
@pytest.mark.parametrize("op", OPS, ids=lambda o: f"k{o[0]}s{o[1]}{'tr' if o[2] else ''}@{o[3]}")
def test_conv_matches_torch(name, op):
    _backend_or_skip(name)
    k, stride, transposed, in_stride = op
    coords = random_coords(800, 16, batch_size=2, seed=7)
    outs = {}
    for backend in ("torch", name):
        torch.manual_seed(0)
        ctx = SparseContext(coords, backend)
        n_in = ctx.coords(in_stride).shape[0]
        ctx.coords(in_stride * 2)  # the sets a U-Net would have made on the way down
        feats = torch.randn(n_in, 5, requires_grad=True)
        w = torch.randn(k**3, 5, 6, requires_grad=True)
        x = SparseTensor.from_context(feats, ctx, stride=in_stride)
        y = ctx.backend.conv(x, w, kernel_size=k, stride=stride, transposed=transposed)
        g = torch.randn(y.feats.shape, generator=torch.Generator().manual_seed(1))
        gx, gw = torch.autograd.grad((y.feats * g).sum(), (feats, w))
        outs[backend] = (y.coords, y.feats.detach(), gx, gw)
    ref, got = outs["torch"], outs[name]
    assert torch.equal(ref[0], got[0]), "output coordinates / row order differ"
    _close(got[1], ref[1], "forward")
    _close(got[2], ref[2], "grad feats")
    _close(got[3], ref[3], "grad weight")


@pytest.mark.parametrize("name", OTHERS)
def test_minkunet_matches_torch(name):
    _backend_or_skip(name)
    torch.manual_seed(0)
    net = minkunet_test(in_channels=3)
    net.train()
    coords = room_coords(3000, seed=2)
    feats = torch.randn(coords.shape[0], 3)
    results = {}
    for backend in ("torch", name):
        net.zero_grad()
        ctx = SparseContext(coords, backend)
        out = net(SparseTensor.from_context(feats, ctx)).feats
        out.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        results[backend] = (out.detach(), grads)
    _close(results[name][0], results["torch"][0], "minkunet forward")
    for n, g in results["torch"][1].items():
        _close(results[name][1][n], g, f"grad {n}")
