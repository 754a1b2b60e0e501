"""The MinkowskiEngine backend equals the torch reference; ME's own layout matches ours."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.sparse.base import INSTALL_HINTS, SparseContext, SparseTensor, get_backend
from tttkd.model.sparse.testing import mixed_scene, rel_close, run_conv_op

try:
    from tttkd.model.sparse.minkowski_backend import import_me

    import_me()
except ImportError as err:
    pytest.skip(
        f"MinkowskiEngine not importable ({err}); minkowski backend tests skipped. Build and "
        f"install it with: {INSTALL_HINTS['minkowski']}  (or `make minkowski`)",
        allow_module_level=True,
    )

from tttkd.model.sparse import minkowski_backend as mb

# (kernel_size, stride, transposed): every op MinkUNet uses, odd strided kernels, even subm.
OPS = [
    (3, 1, False),
    (5, 1, False),
    (2, 1, False),
    (2, 2, False),
    (3, 2, False),
    (2, 2, True),
    (3, 2, True),
]


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", OPS, ids=lambda o: f"k{o[0]}s{o[1]}{'T' if o[2] else ''}")
def test_matches_torch_forward_and_grads(op, threads):
    k, c_in, c_out = op[0], 8, 12
    coords = mixed_scene(1)
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(coords.shape[0], c_in, generator=g)
    weight = torch.randn(k**3, c_in, c_out, generator=g) / (k**3 * c_in) ** 0.5
    torch.set_num_threads(threads)
    ref = run_conv_op("torch", coords, feats, weight, op)
    got = run_conv_op("minkowski", coords, feats, weight, op)
    for name, a, b in zip(("output", "grad feats", "grad weight"), ref, got):
        assert a.shape == b.shape, name
        assert rel_close(a, b), f"{name}: max err {(a - b).abs().max():.3g}"


def test_kernel_order_matches_me_own_convolution():
    """ME's own MinkowskiConvolution with ``to_me_weight(W)`` gives our backend's output."""
    ME = import_me()
    coords = mixed_scene(3, batches=1)
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(coords.shape[0], 4, generator=g)
    weight = torch.randn(27, 4, 5, generator=g)
    conv = ME.MinkowskiConvolution(4, 5, kernel_size=3, stride=1, dimension=3)
    with torch.no_grad():
        conv.kernel.copy_(mb.to_me_weight(weight, 3))
    x = ME.SparseTensor(
        feats, coords, quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_SUM
    )
    own = conv(x)
    # ME's output rows follow its own coordinate map: look each one up among ours.
    ours = get_backend("minkowski").conv(
        SparseTensor.from_context(feats, SparseContext(coords, "minkowski")),
        weight,
        kernel_size=3,
        stride=1,
        transposed=False,
    )
    lookup = {tuple(c): i for i, c in enumerate(coords.tolist())}
    rows = torch.tensor([lookup[tuple(c)] for c in own.C.tolist()])
    assert rel_close(own.F.detach(), ours.feats.detach()[rows])
    assert torch.equal(mb.from_me_weight(mb.to_me_weight(weight, 3), 3), weight)
    assert not torch.equal(mb.me_kernel_order(3), torch.arange(27))  # the permute is real


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_kernel_order_agrees_with_checkpoint_conversion(k):
    """The runtime permutation and ``convert.py``'s (ME checkpoints) are the same one."""
    from tttkd.model.convert import me_kernel_permutation

    assert torch.equal(mb.me_kernel_order(k), me_kernel_permutation(k))


def test_coordinate_manager_built_once_per_context():
    ctx = SparseContext(mixed_scene(6), "minkowski")
    w3, w2 = torch.randn(27, 4, 4) * 0.1, torch.randn(8, 4, 4) * 0.1
    states = []
    for _ in range(3):
        x = SparseTensor.from_context(torch.randn(ctx.coords(1).shape[0], 4), ctx)
        y = ctx.backend.conv(x, w3, kernel_size=3, stride=1, transposed=False)
        d = ctx.backend.conv(y, w2, kernel_size=2, stride=2, transposed=False)
        ctx.backend.conv(d, w2, kernel_size=2, stride=2, transposed=True)
        states.append(mb._state(ctx))
    assert states[0] is states[1] is states[2]
    assert sorted(states[0].keys) == [1, 2]  # no coordinate map is re-made per pass


def test_minkunet_trained_on_minkowski_loads_on_torch(tmp_path):
    from tttkd.model.minkunet import minkunet_test

    torch.manual_seed(0)
    coords = mixed_scene(7, n=2500, grid=32)
    feats = torch.randn(coords.shape[0], 3)
    net = minkunet_test(in_channels=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(2):  # weights and BN running stats both move on the minkowski backend
        out = net(SparseTensor.from_context(feats, SparseContext(coords, "minkowski"))).feats
        opt.zero_grad()
        out.square().mean().backward()
        opt.step()
    net.eval()
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    other = minkunet_test(in_channels=3)
    other.load_state_dict(torch.load(path, weights_only=True), strict=True)
    other.eval()
    with torch.no_grad():
        ref = net(SparseTensor.from_context(feats, SparseContext(coords, "minkowski"))).feats
        got = other(SparseTensor.from_context(feats, SparseContext(coords, "torch"))).feats
    assert got.shape == ref.shape == (coords.shape[0], net.out_channels)
    assert rel_close(ref, got, rtol=1e-4), f"max err {(ref - got).abs().max():.3g}"
