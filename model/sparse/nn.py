"""Backend-neutral layers on :class:`SparseTensor`: conv, batch norm, ReLU, concat.

Layers hold only parameters; the backend comes from the tensor's context, so one module
(and one ``state_dict``) runs on every backend.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tttkd.model.sparse.base import SparseTensor

__all__ = ["SparseBatchNorm", "SparseConv3d", "SparseReLU", "sparse_cat"]


class SparseConv3d(nn.Module):
    """Sparse 3D conv with ``weight`` ``[K^3, C_in, C_out]`` in ``kernel_offsets`` order.

    ``stride=1``: submanifold; ``stride=2``: downsampling, or upsampling onto the context's
    existing finer set when ``transposed``. ``kernel_size=1, stride=1`` is a plain matmul.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        *,
        transposed: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if transposed and stride != 2:
            raise ValueError("a transposed conv here always upsamples (stride 2)")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.transposed = transposed
        self.weight = nn.Parameter(torch.empty(kernel_size**3, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Kaiming normal, fan_out, ReLU gain: the init of the MinkowskiEngine MinkUNets.
        fan_out = self.out_channels * self.kernel_size**3
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, transposed={self.transposed}, bias={self.bias is not None}"
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.kernel_size == 1 and self.stride == 1:
            out = x.replace(x.feats @ self.weight[0])
        else:
            out = x.context.backend.conv(
                x,
                self.weight,
                kernel_size=self.kernel_size,
                stride=self.stride,
                transposed=self.transposed,
            )
        if self.bias is not None:
            out = out.replace(out.feats + self.bias)
        return out


class SparseBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` over the rows of a sparse tensor (keys: weight, bias, running_*)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class SparseReLU(nn.Module):
    """ReLU on the features (never in place: the input may be a saved skip connection)."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu(x.feats))


def sparse_cat(*xs: SparseTensor) -> SparseTensor:
    """Concatenate features of tensors on the same coordinate set (U-Net skips)."""
    first = xs[0]
    for x in xs[1:]:
        if x.context is not first.context or x.stride != first.stride:
            raise ValueError(
                f"cannot concatenate sparse tensors at strides {first.stride} and {x.stride} "
                "or from different contexts"
            )
    feats: list[Tensor] = [x.feats for x in xs]
    return first.replace(torch.cat(feats, dim=1))
