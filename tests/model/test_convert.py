"""MinkowskiEngine-ecosystem MinkUNet state dicts convert and load strictly.

The synthetic state dicts are written from the ME layout rules (key names, ``.bn.``,
``kernel`` shapes, 1x1 kernels as [C_in, C_out], x-fastest kernel index), independently of
our own modules.
"""

from __future__ import annotations

import pytest
import torch

from tttkd.model.convert import (
    convert_me_state_dict,
    me_kernel_permutation,
    read_me_state_dict,
    segkdnet_from_me,
)
from tttkd.model.sparse.base import SparseContext, SparseTensor, kernel_offsets
from tttkd.model.sparse.testing import random_coords


def _me_offset(index: int, k: int) -> list[int]:
    """MinkowskiEngine 0.5 kernel_region::coordinate_at: axis 0 (x) varies fastest."""
    out = []
    for _ in range(3):
        i = index % k
        out.append(i if k % 2 == 0 else i - k // 2)
        index //= k
    return out


def _bn(sd: dict, name: str, c: int, g: torch.Generator) -> None:
    sd[f"{name}.bn.weight"] = torch.rand(c, generator=g) + 0.5
    sd[f"{name}.bn.bias"] = torch.randn(c, generator=g)
    sd[f"{name}.bn.running_mean"] = torch.randn(c, generator=g)
    sd[f"{name}.bn.running_var"] = torch.rand(c, generator=g) + 0.5
    sd[f"{name}.bn.num_batches_tracked"] = torch.tensor(7)


def me_state_dict(layers, planes, *, in_ch=3, init=8, stem=5, classes=4, prefix="module."):
    """A Res16UNet / MinkUNet state dict in MinkowskiEngine 0.5 layout, random values."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}

    def kern(name, k, cin, cout):
        shape = (cin, cout) if k == 1 else (k**3, cin, cout)
        sd[f"{name}.kernel"] = torch.randn(*shape, generator=g) * 0.2

    def stage(i, cin, cout, n):
        for j in range(n):
            b = f"block{i}.{j}"
            kern(f"{b}.conv1", 3, cin if j == 0 else cout, cout)
            _bn(sd, f"{b}.norm1", cout, g)
            kern(f"{b}.conv2", 3, cout, cout)
            _bn(sd, f"{b}.norm2", cout, g)
            if j == 0 and cin != cout:
                kern(f"{b}.downsample.0", 1, cin, cout)
                _bn(sd, f"{b}.downsample.1", cout, g)

    p = planes
    kern("conv0p1s1", stem, in_ch, init)
    _bn(sd, "bn0", init, g)
    downs = [init, p[0], p[1], p[2]]
    for s, c in enumerate(downs):
        name = ["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"][s]
        kern(name, 2, c, c)
        _bn(sd, f"bn{s + 1}", c, g)
        stage(s + 1, c, p[s], layers[s])
    skips = [p[2], p[1], p[0], init]
    cin = p[3]
    for s in range(4):
        name = ["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"][s]
        kern(name, 2, cin, p[4 + s])
        _bn(sd, f"bntr{4 + s}", p[4 + s], g)
        stage(5 + s, p[4 + s] + skips[s], p[4 + s], layers[4 + s])
        cin = p[4 + s]
    sd["final.kernel"] = torch.randn(p[7], classes, generator=g)
    sd["final.bias"] = torch.randn(1, classes, generator=g)
    return {prefix + k: v for k, v in sd.items()}


def test_permutation_maps_me_offsets_to_ours():
    for k in (1, 2, 3, 5):
        perm = me_kernel_permutation(k)
        ours = kernel_offsets(k).tolist()
        for c in range(k**3):
            assert _me_offset(int(perm[c]), k) == ours[c], (k, c)


def test_converted_stem_computes_the_me_convolution():
    """Brute force: y[u] = sum_m x[u + me_offset(m)] @ W_me[m], against our conv."""
    sd = me_state_dict((1,) * 8, (8, 8, 8, 8, 8, 8, 8, 8), stem=3, prefix="")
    w_me = sd["conv0p1s1.kernel"].double()
    ours = convert_me_state_dict(sd).backbone["conv0p1s1.weight"].double()
    coords = random_coords(60, 5, seed=1)
    feats = torch.randn(coords.shape[0], 3, dtype=torch.float64)
    ctx = SparseContext(coords)
    got = ctx.backend.conv(
        SparseTensor.from_context(feats, ctx), ours, kernel_size=3, stride=1, transposed=False
    ).feats
    row = {tuple(c.tolist()): i for i, c in enumerate(coords)}
    ref = torch.zeros(coords.shape[0], w_me.shape[2], dtype=torch.float64)
    for i, c in enumerate(coords.tolist()):
        for m in range(27):
            d = _me_offset(m, 3)
            j = row.get((c[0], c[1] + d[0], c[2] + d[1], c[3] + d[2]))
            if j is not None:
                ref[i] += feats[j] @ w_me[m]
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize(
    "layers,planes,stem",
    [
        ((2, 3, 4, 6, 2, 2, 2, 2), (8, 8, 16, 16, 16, 8, 8, 8), 5),  # 34C depths, thin
        ((1,) * 8, (8, 16, 16, 16, 16, 16, 12, 12), 3),
    ],
)
def test_me_state_dict_converts_and_loads_strictly(layers, planes, stem):
    sd = me_state_dict(layers, planes, stem=stem, classes=4)
    net = segkdnet_from_me(sd, teacher_dim=10)
    arch = net.backbone.arch
    assert arch["layers"] == list(layers) and arch["planes"] == list(planes)
    assert arch["stem_kernel"] == stem and arch["in_channels"] == 3 and arch["init_dim"] == 8
    assert net.num_classes == 4
    torch.testing.assert_close(net.seg_head.weight, sd["module.final.kernel"].t())
    torch.testing.assert_close(net.seg_head.bias, sd["module.final.bias"][0])
    torch.testing.assert_close(net.backbone.bn0.running_var, sd["module.bn0.bn.running_var"])
    down = net.backbone.block5[0].downsample  # 1x1 kernel: [C_in, C_out] -> [1, C_in, C_out]
    torch.testing.assert_close(down[0].weight[0], sd["module.block5.0.downsample.0.kernel"])
    coords = random_coords(400, 20, seed=3)
    with torch.no_grad():
        logits = net.eval().predict(torch.randn(coords.shape[0], 3), coords)
    assert logits.shape == (coords.shape[0], 4) and torch.isfinite(logits).all()


def test_conversion_errors_are_clear():
    sd = me_state_dict((1,) * 8, (8,) * 8, stem=3)
    with pytest.raises(ValueError, match="4 classes, not 20"):
        segkdnet_from_me(sd, teacher_dim=4, num_classes=20)
    no_final = {k: v for k, v in sd.items() if "final" not in k}
    with pytest.raises(ValueError, match="pass num_classes"):
        segkdnet_from_me(no_final, teacher_dim=4)
    assert segkdnet_from_me(no_final, teacher_dim=4, num_classes=6).num_classes == 6
    broken = dict(sd)
    del broken["module.block3.0.norm2.bn.bias"]
    with pytest.raises(ValueError, match="block3.0.norm2.bias"):
        segkdnet_from_me(broken, teacher_dim=4)
    with pytest.raises(ValueError, match="need 1..8"):
        convert_me_state_dict({"conv0p1s1.kernel": torch.zeros(27, 3, 8)})


def test_read_me_checkpoint_file(tmp_path):
    sd = me_state_dict((1,) * 8, (8,) * 8, stem=3)
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": sd, "best_metric": 0.7}, path)
    loaded = read_me_state_dict(path)
    assert loaded.keys() == sd.keys()
    assert segkdnet_from_me(loaded, teacher_dim=4).num_classes == 4
    bad = tmp_path / "bad.pth"
    torch.save({"epoch": 3}, bad)
    with pytest.raises(ValueError, match="no state dict"):
        read_me_state_dict(bad)
