"""MinkUNet (Res16UNet) backbones: the MinkowskiEngine reference layout on any sparse backend.

Layout of ``Res16UNet34C`` (SpatioTemporalSegmentation) / ``MinkUNet34C`` (Pointcept):
a k5 stem at stride 1, four down stages (k2 s2 conv + BN + ReLU + BasicBlocks), four up
stages (k2 s2 transposed conv + BN + ReLU, concat with the skip of the same stride,
BasicBlocks). Layer names carry the tensor stride (``conv1p1s2``: at stride 1, conv stride
2) and match the ME ecosystem's names, so ``convert.py`` only renames ``kernel``/``bn``.
The final 1x1 classifier of those models is not here: it is ``rho_Y`` in ``network.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from tttkd.model.sparse.base import BACKEND_NAMES, SparseTensor
from tttkd.model.sparse.nn import SparseBatchNorm, SparseConv3d, SparseReLU, sparse_cat

__all__ = [
    "ARCHITECTURES",
    "BasicBlock",
    "MinkUNet",
    "backbone_from_arch",
    "build_backbone",
    "minkunet14a",
    "minkunet18a",
    "minkunet34c",
    "minkunet_test",
]


class BasicBlock(nn.Module):
    """Two k3 submanifold convs with a residual; 1x1 conv + BN on the skip when widths differ."""

    def __init__(self, inplanes: int, planes: int, bn_momentum: float):
        super().__init__()
        self.conv1 = SparseConv3d(inplanes, planes, 3)
        self.norm1 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = SparseConv3d(planes, planes, 3)
        self.norm2 = SparseBatchNorm(planes, momentum=bn_momentum)
        self.relu = SparseReLU()
        self.downsample: nn.Sequential | None = None
        if inplanes != planes:
            self.downsample = nn.Sequential(
                SparseConv3d(inplanes, planes, 1), SparseBatchNorm(planes, momentum=bn_momentum)
            )

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out.replace(out.feats + residual.feats))


def _stage(inplanes: int, planes: int, blocks: int, bn_momentum: float) -> nn.Sequential:
    layers = [BasicBlock(inplanes, planes, bn_momentum)]
    layers += [BasicBlock(planes, planes, bn_momentum) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MinkUNet(nn.Module):
    """U-Net of sparse BasicBlocks; ``forward`` maps stride-1 input features to
    ``out_channels`` features on the same voxels."""

    def __init__(
        self,
        *,
        in_channels: int,
        layers: Sequence[int],
        planes: Sequence[int],
        init_dim: int,
        stem_kernel: int,
        bn_momentum: float,
    ):
        super().__init__()
        if len(layers) != 8 or len(planes) != 8:
            raise ValueError("layers and planes need 8 entries (4 down, 4 up stages)")
        self.in_channels = in_channels
        self.out_channels = planes[7]
        m = bn_momentum
        p = planes

        def down(c: int) -> SparseConv3d:
            return SparseConv3d(c, c, 2, 2)

        def up(cin: int, cout: int) -> SparseConv3d:
            return SparseConv3d(cin, cout, 2, 2, transposed=True)

        self.conv0p1s1 = SparseConv3d(in_channels, init_dim, stem_kernel)
        self.bn0 = SparseBatchNorm(init_dim, momentum=m)
        self.conv1p1s2 = down(init_dim)
        self.bn1 = SparseBatchNorm(init_dim, momentum=m)
        self.block1 = _stage(init_dim, p[0], layers[0], m)
        self.conv2p2s2 = down(p[0])
        self.bn2 = SparseBatchNorm(p[0], momentum=m)
        self.block2 = _stage(p[0], p[1], layers[1], m)
        self.conv3p4s2 = down(p[1])
        self.bn3 = SparseBatchNorm(p[1], momentum=m)
        self.block3 = _stage(p[1], p[2], layers[2], m)
        self.conv4p8s2 = down(p[2])
        self.bn4 = SparseBatchNorm(p[2], momentum=m)
        self.block4 = _stage(p[2], p[3], layers[3], m)
        self.convtr4p16s2 = up(p[3], p[4])
        self.bntr4 = SparseBatchNorm(p[4], momentum=m)
        self.block5 = _stage(p[4] + p[2], p[4], layers[4], m)
        self.convtr5p8s2 = up(p[4], p[5])
        self.bntr5 = SparseBatchNorm(p[5], momentum=m)
        self.block6 = _stage(p[5] + p[1], p[5], layers[5], m)
        self.convtr6p4s2 = up(p[5], p[6])
        self.bntr6 = SparseBatchNorm(p[6], momentum=m)
        self.block7 = _stage(p[6] + p[0], p[6], layers[6], m)
        self.convtr7p2s2 = up(p[6], p[7])
        self.bntr7 = SparseBatchNorm(p[7], momentum=m)
        self.block8 = _stage(p[7] + init_dim, p[7], layers[7], m)
        self.relu = SparseReLU()

    def forward(self, x: SparseTensor) -> SparseTensor:
        r = self.relu
        # tensor_stride=1
        out_p1 = r(self.bn0(self.conv0p1s1(x)))
        # tensor_stride=2
        out = r(self.bn1(self.conv1p1s2(out_p1)))
        out_b1p2 = self.block1(out)
        # tensor_stride=4
        out = r(self.bn2(self.conv2p2s2(out_b1p2)))
        out_b2p4 = self.block2(out)
        # tensor_stride=8
        out = r(self.bn3(self.conv3p4s2(out_b2p4)))
        out_b3p8 = self.block3(out)
        # tensor_stride=16
        out = r(self.bn4(self.conv4p8s2(out_b3p8)))
        out = self.block4(out)
        # tensor_stride=8
        out = r(self.bntr4(self.convtr4p16s2(out)))
        out = self.block5(sparse_cat(out, out_b3p8))
        # tensor_stride=4
        out = r(self.bntr5(self.convtr5p8s2(out)))
        out = self.block6(sparse_cat(out, out_b2p4))
        # tensor_stride=2
        out = r(self.bntr6(self.convtr6p4s2(out)))
        out = self.block7(sparse_cat(out, out_b1p2))
        # tensor_stride=1
        out = r(self.bntr7(self.convtr7p2s2(out)))
        return self.block8(sparse_cat(out, out_p1))


def _build_minkunet(
    *,
    name: str,
    in_channels: int,
    layers: Sequence[int],
    planes: Sequence[int],
    init_dim: int = 32,
    stem_kernel: int = 5,
    bn_momentum: float = 0.1,
    backend: str = "torch",
) -> MinkUNet:
    """The one builder; ``backend`` is only the default for ``SegKDNet.context``.

    The result's ``arch`` dict (JSON-able) rebuilds the same network: checkpoints store it.
    """
    if backend not in BACKEND_NAMES:
        raise ValueError(f"unknown sparse backend {backend!r}; choose one of {BACKEND_NAMES}")
    net = MinkUNet(
        in_channels=in_channels,
        layers=layers,
        planes=planes,
        init_dim=init_dim,
        stem_kernel=stem_kernel,
        bn_momentum=bn_momentum,
    )
    net.backend = backend
    net.arch = {
        "name": name,
        "in_channels": in_channels,
        "layers": list(layers),
        "planes": list(planes),
        "init_dim": init_dim,
        "stem_kernel": stem_kernel,
        "bn_momentum": bn_momentum,
    }
    return net


def backbone_from_arch(arch: dict, *, backend: str = "torch") -> MinkUNet:
    """Rebuild a backbone from its ``arch`` dict (as saved in a checkpoint)."""
    known = {"name", "in_channels", "layers", "planes", "init_dim", "stem_kernel", "bn_momentum"}
    unknown = set(arch) - known
    if unknown:
        raise ValueError(f"unknown backbone arch keys {sorted(unknown)}")
    return _build_minkunet(**arch, backend=backend)


def minkunet34c(
    *, in_channels: int = 3, stem_kernel: int = 5, bn_momentum: float = 0.1, backend: str = "torch"
) -> MinkUNet:
    """Res16UNet34C / MinkUNet34C: the paper's "Mink" backbone (96-d output)."""
    return _build_minkunet(
        name="minkunet34c",
        in_channels=in_channels,
        layers=(2, 3, 4, 6, 2, 2, 2, 2),
        planes=(32, 64, 128, 256, 256, 128, 96, 96),
        stem_kernel=stem_kernel,
        bn_momentum=bn_momentum,
        backend=backend,
    )


def minkunet18a(
    *, in_channels: int = 3, stem_kernel: int = 5, bn_momentum: float = 0.1, backend: str = "torch"
) -> MinkUNet:
    """Res16UNet18A: two blocks per stage, 96-d output."""
    return _build_minkunet(
        name="minkunet18a",
        in_channels=in_channels,
        layers=(2,) * 8,
        planes=(32, 64, 128, 256, 128, 128, 96, 96),
        stem_kernel=stem_kernel,
        bn_momentum=bn_momentum,
        backend=backend,
    )


def minkunet14a(
    *, in_channels: int = 3, stem_kernel: int = 5, bn_momentum: float = 0.1, backend: str = "torch"
) -> MinkUNet:
    """Res16UNet14A: one block per stage, 96-d output; the small real model."""
    return _build_minkunet(
        name="minkunet14a",
        in_channels=in_channels,
        layers=(1,) * 8,
        planes=(32, 64, 128, 256, 128, 128, 96, 96),
        stem_kernel=stem_kernel,
        bn_momentum=bn_momentum,
        backend=backend,
    )


def minkunet_test(
    *, in_channels: int = 3, stem_kernel: int = 3, bn_momentum: float = 0.1, backend: str = "torch"
) -> MinkUNet:
    """A few channels per stage (16-d output): for tests, not for results."""
    return _build_minkunet(
        name="minkunet_test",
        in_channels=in_channels,
        layers=(1,) * 8,
        planes=(8, 8, 16, 16, 16, 8, 16, 16),
        init_dim=8,
        stem_kernel=stem_kernel,
        bn_momentum=bn_momentum,
        backend=backend,
    )


ARCHITECTURES: dict[str, Callable[..., MinkUNet]] = {
    "minkunet34c": minkunet34c,
    "minkunet18a": minkunet18a,
    "minkunet14a": minkunet14a,
    "minkunet_test": minkunet_test,
}


def build_backbone(
    name: str,
    *,
    in_channels: int,
    stem_kernel: int | None = None,
    bn_momentum: float = 0.1,
    backend: str = "torch",
) -> MinkUNet:
    """Backbone by architecture name (checkpoints record the name and these arguments);
    ``stem_kernel=None`` keeps the variant's own default."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(ARCHITECTURES)}")
    builder = ARCHITECTURES[name]
    if stem_kernel is None:
        return builder(in_channels=in_channels, bn_momentum=bn_momentum, backend=backend)
    return builder(
        in_channels=in_channels, stem_kernel=stem_kernel, bn_momentum=bn_momentum, backend=backend
    )
