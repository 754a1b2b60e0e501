"""The pure-torch backend against dense ``conv3d`` / ``conv_transpose3d`` on small grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tttkd.model.sparse import torch_backend
from tttkd.model.sparse.base import (
    INSTALL_HINTS,
    BackendUnavailableError,
    SparseContext,
    SparseTensor,
    available_backends,
    get_backend,
    kernel_offsets,
)
from tttkd.model.sparse.testing import random_coords

G = 10  # dense grid side


def _dense(coords: torch.Tensor, feats: torch.Tensor, stride: int, batch: int) -> torch.Tensor:
    """Scatter sparse features on the grid of their stride (cell = coord // stride)."""
    side = G // stride + 1
    out = feats.new_zeros((batch, feats.shape[1], side, side, side))
    c = coords.long()
    out[c[:, 0], :, c[:, 1] // stride, c[:, 2] // stride, c[:, 3] // stride] = feats
    return out


def _gather(dense: torch.Tensor, coords: torch.Tensor, stride: int) -> torch.Tensor:
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1] // stride, c[:, 2] // stride, c[:, 3] // stride]


def _dense_weight(w: torch.Tensor, k: int) -> torch.Tensor:
    """[K^3, Cin, Cout] in kernel_offsets order -> conv3d's [Cout, Cin, K, K, K] (x, y, z)."""
    return w.reshape(k, k, k, w.shape[1], w.shape[2]).permute(4, 3, 0, 1, 2)


@pytest.fixture
def scene():
    torch.manual_seed(0)
    coords = random_coords(300, G, batch_size=2, seed=1)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64, requires_grad=True)
    return coords, feats


def _grads(out: torch.Tensor, ref: torch.Tensor, inputs):
    g = torch.randn_like(ref)
    a = torch.autograd.grad((out * g).sum(), inputs, retain_graph=True)
    b = torch.autograd.grad((ref * g).sum(), inputs)
    return a, b


def test_kernel_offsets_order():
    offs = kernel_offsets(3)
    assert offs.shape == (27, 3)
    assert offs[0].tolist() == [-1, -1, -1]
    assert offs[1].tolist() == [-1, -1, 0]  # z fastest
    assert offs[13].tolist() == [0, 0, 0]
    assert offs[3].tolist() == [-1, 0, -1]
    assert offs[9].tolist() == [0, -1, -1]
    assert kernel_offsets(2).tolist()[:3] == [[0, 0, 0], [0, 0, 1], [0, 1, 0]]


@pytest.fixture(params=["dense-table", "binary-search"])
def lookup(request, monkeypatch):
    """Run a test with both neighbour-lookup strategies of the torch backend."""
    if request.param == "binary-search":
        monkeypatch.setattr(torch_backend, "DENSE_TABLE_CELLS", 0)
    return request.param


@pytest.mark.parametrize("k", [1, 3, 5])
def test_submanifold_matches_dense_conv3d(scene, k, lookup):
    coords, feats = scene
    ctx = SparseContext(coords, "torch")
    w = torch.randn(k**3, 3, 4, dtype=torch.float64, requires_grad=True)
    out = ctx.backend.conv(
        SparseTensor.from_context(feats, ctx), w, kernel_size=k, stride=1, transposed=False
    )
    dense = F.conv3d(_dense(coords, feats, 1, 2), _dense_weight(w, k), padding=k // 2)
    ref = _gather(dense, coords, 1)
    torch.testing.assert_close(out.feats, ref)
    a, b = _grads(out.feats, ref, (feats, w))
    torch.testing.assert_close(a, b)


def test_strided_and_transposed_match_dense(scene, lookup):
    coords, feats = scene
    ctx = SparseContext(coords, "torch")
    x = SparseTensor.from_context(feats, ctx)
    w_down = torch.randn(8, 3, 5, dtype=torch.float64, requires_grad=True)
    down = ctx.backend.conv(x, w_down, kernel_size=2, stride=2, transposed=False)
    assert down.stride == 2
    dense_down = F.conv3d(_dense(coords, feats, 1, 2), _dense_weight(w_down, 2), stride=2)
    ref_down = _gather(dense_down, down.coords, 2)
    torch.testing.assert_close(down.feats, ref_down)

    w_up = torch.randn(8, 5, 2, dtype=torch.float64, requires_grad=True)
    up = ctx.backend.conv(down, w_up, kernel_size=2, stride=2, transposed=True)
    assert up.stride == 1 and torch.equal(up.coords, coords)
    # conv_transpose3d weight is [Cin, Cout, K, K, K]
    wt = w_up.reshape(2, 2, 2, 5, 2).permute(3, 4, 0, 1, 2)
    dense_up = F.conv_transpose3d(dense_down, wt, stride=2)
    ref_up = _gather(dense_up, coords, 1)
    torch.testing.assert_close(up.feats, ref_up)
    a, b = _grads(up.feats, ref_up, (feats, w_down, w_up))
    torch.testing.assert_close(a, b)


def test_strided_at_stride_two_and_odd_kernel(scene, lookup):
    """Conv from stride 2 to 4 with k3: dense conv on the stride-2 grid, padding 1."""
    coords, feats = scene
    ctx = SparseContext(coords, "torch")
    x1 = SparseTensor.from_context(feats, ctx)
    w1 = torch.randn(8, 3, 3, dtype=torch.float64)
    x2 = ctx.backend.conv(x1, w1, kernel_size=2, stride=2, transposed=False)
    w = torch.randn(27, 3, 4, dtype=torch.float64, requires_grad=True)
    x4 = ctx.backend.conv(x2, w, kernel_size=3, stride=2, transposed=False)
    assert x4.stride == 4
    dense2 = _dense(x2.coords, x2.feats, 2, 2)
    # out cell v (stride 4) reads stride-2 cells 2v + d, d in -1..1
    ref_dense = F.conv3d(F.pad(dense2, (1, 1, 1, 1, 1, 1)), _dense_weight(w, 3), stride=2)
    ref = _gather(ref_dense, x4.coords, 4)
    torch.testing.assert_close(x4.feats, ref)
    a, b = _grads(x4.feats, ref, (feats, w))
    torch.testing.assert_close(a, b)


def test_gradcheck_tiny():
    coords = random_coords(30, 4, seed=3)
    feats = torch.randn(coords.shape[0], 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(27, 2, 2, dtype=torch.float64, requires_grad=True)
    ctx = SparseContext(coords, "torch")

    def f(feats, w):
        x = SparseTensor.from_context(feats, ctx)
        return ctx.backend.conv(x, w, kernel_size=3, stride=1, transposed=False).feats

    assert torch.autograd.gradcheck(f, (feats, w))


def test_context_canonical_sets_and_cache_reuse(scene):
    coords, feats = scene
    ctx = SparseContext(coords, "torch")
    c2 = ctx.coords(2)
    expected = torch.unique(
        torch.cat([coords[:, :1], torch.div(coords[:, 1:], 2, rounding_mode="floor") * 2], 1),
        dim=0,
    )
    assert torch.equal(c2, expected)  # lexicographically sorted unique floor
    assert torch.equal(ctx.coords(2)[ctx.parent(2)][:, 1:], (coords[:, 1:] // 2) * 2)
    w = torch.randn(27, 3, 4, dtype=torch.float64)
    x = SparseTensor.from_context(feats, ctx)
    out1 = ctx.backend.conv(x, w, kernel_size=3, stride=1, transposed=False).feats
    n_cached = len(ctx._cache)
    kmap = ctx._cache[("torch", "subm", 1, 3)]
    out2 = ctx.backend.conv(x, w, kernel_size=3, stride=1, transposed=False).feats
    assert len(ctx._cache) == n_cached and ctx._cache[("torch", "subm", 1, 3)] is kmap
    assert torch.equal(out1, out2)
    ctx.clear_cache()
    out3 = ctx.backend.conv(x, w, kernel_size=3, stride=1, transposed=False).feats
    assert torch.equal(out1, out3)


def test_negative_coordinates_match_shifted(lookup):
    """Floor semantics: shifting every coordinate by a multiple of 4 changes nothing."""
    coords = random_coords(200, 8, seed=5, low=-4)
    feats = torch.randn(coords.shape[0], 2, dtype=torch.float64)
    w2 = torch.randn(8, 2, 3, dtype=torch.float64)
    w3 = torch.randn(27, 3, 3, dtype=torch.float64)
    outs = []
    for shift in (0, 8):
        c = coords.clone()
        c[:, 1:] += shift
        ctx = SparseContext(c, "torch")
        x = SparseTensor.from_context(feats, ctx)
        y = ctx.backend.conv(x, w2, kernel_size=2, stride=2, transposed=False)
        y = ctx.backend.conv(y, w3, kernel_size=3, stride=1, transposed=False)
        outs.append(y.feats)
    torch.testing.assert_close(outs[0], outs[1])


def test_context_rejects_bad_coords():
    c = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]], dtype=torch.int32)
    with pytest.raises(ValueError, match="duplicate"):
        SparseContext(c)
    with pytest.raises(TypeError, match="int32"):
        SparseContext(c.long())
    with pytest.raises(ValueError, match="unknown sparse backend"):
        get_backend("cuda-magic")


def test_transposed_lands_on_the_finer_set():
    coords = random_coords(50, 6, seed=2)
    ctx = SparseContext(coords)
    x4 = SparseTensor.from_context(torch.randn(ctx.coords(4).shape[0], 2), ctx, stride=4)
    y = ctx.backend.conv(x4, torch.randn(8, 2, 2), kernel_size=2, stride=2, transposed=True)
    assert y.stride == 2  # the stride-2 set is made from stride 1 on demand
    with pytest.raises(ValueError, match="unsupported conv"):
        ctx.backend.conv(x4, torch.randn(27, 2, 2), kernel_size=3, stride=3, transposed=False)


def test_available_backends_lists_torch_and_errors_name_the_install():
    names = available_backends()
    assert names[0] == "torch"
    for name in ("spconv", "minkowski"):
        if name in names:
            continue
        with pytest.raises(BackendUnavailableError) as err:
            get_backend(name)
        msg = str(err.value)
        assert INSTALL_HINTS[name] in msg or "not part of this tttkd install" in msg
