"""MinkowskiEngine 0.5.4 backend: ME's coordinate manager and conv kernels under our layout.

Why a wrapper and not ``ME.MinkowskiConvolution``: weights are ours (``[K^3, C_in, C_out]``,
``base.kernel_offsets`` order, z fastest) and rows follow the context's canonical order.
ME's kernel is also ``[K^3, C_in, C_out]``, but its kernel region enumerates offsets with
x fastest (``kernel_region.hpp``: ``coordinate_at`` peels the kernel index axis by axis from
the first spatial axis), odd kernels centred and even kernels ``0 .. K-1`` as ours; so the
weight is our weight with its first axis permuted. ME keeps its own row order per coordinate
map; we gather into it and scatter back with permutations built once per context.

ME is installed by ``scripts/build_minkowski.sh`` (CPU build, cached per torch version). On
Python >= 3.10 its ``from collections import Sequence`` fails, hence the shim in ``import_me``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tttkd.model.sparse.base import SparseContext, SparseTensor, conv_output_stride, coords_key

__all__ = [
    "MinkowskiBackend",
    "from_me_weight",
    "import_me",
    "import_me_backend",
    "make_backend",
    "me_kernel_order",
    "to_me_weight",
]

# Coordinates are shifted by a multiple of this so ME sees non-negative ones (no question of
# how it rounds negative coordinates when striding); strides up to this value are supported.
_ALIGN = 1 << 12


def import_me() -> Any:
    """``import MinkowskiEngine`` with the ``collections.Sequence`` shim it needs on py>=3.10."""
    import collections
    import collections.abc

    if not hasattr(collections, "Sequence"):
        collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]
    with warnings.catch_warnings():  # a CPU build says so at every import; we know
        warnings.filterwarnings("ignore", message=".*compiled with CPU_ONLY", category=UserWarning)
        import MinkowskiEngine as ME

    return ME


def import_me_backend() -> Any:
    """ME's compiled module (``ConvolutionMode`` is not re-exported by the package)."""
    import_me()
    import MinkowskiEngineBackend._C as C

    return C


def me_kernel_order(kernel_size: int) -> Tensor:
    """int64 ``[K^3]``: ``perm[k_me]`` = our kernel index of ME's kernel index ``k_me``."""
    k = kernel_size
    ours = torch.arange(k**3).reshape(k, k, k)  # [x, y, z], z fastest
    return ours.permute(2, 1, 0).reshape(-1)  # ME: x fastest


def to_me_weight(weight: Tensor, kernel_size: int) -> Tensor:
    """Ours ``[K^3, C_in, C_out]`` -> ME's ``kernel`` (same shape, ME offset order)."""
    return weight.index_select(0, me_kernel_order(kernel_size).to(weight.device))


def from_me_weight(kernel: Tensor, kernel_size: int) -> Tensor:
    """ME ``kernel`` ``[K^3, C_in, C_out]`` -> ours (e.g. to load a MinkowskiEngine checkpoint)."""
    perm = me_kernel_order(kernel_size).to(kernel.device)
    out = torch.empty_like(kernel)
    out[perm] = kernel
    return out


@dataclass
class _MEState:
    """One ME coordinate manager per context; ``rows[s][j]`` = canonical row of ME row ``j``."""

    manager: Any
    shift: Tensor
    keys: dict[int, Any] = field(default_factory=dict)
    rows: dict[int, Tensor] = field(default_factory=dict)
    inv_rows: dict[int, Tensor] = field(default_factory=dict)


def _state(ctx: SparseContext) -> _MEState:
    def build() -> _MEState:
        ME = import_me()
        map_type = (
            ME.CoordinateMapType.GPU if ctx.device.type == "cuda" else ME.CoordinateMapType.CPU
        )
        manager = ME.CoordinateManager(D=3, coordinate_map_type=map_type)
        lo, _ = ctx.bounds()
        shift = torch.div(lo, _ALIGN, rounding_mode="floor") * _ALIGN
        shift[0] = 0
        st = _MEState(manager, shift)
        coords = (ctx.coords(1).to(torch.int64) - shift).to(torch.int32).contiguous()
        key, (unique_map, _) = manager.insert_and_map(coords, [1, 1, 1], "")
        if unique_map.numel() != coords.shape[0]:
            raise RuntimeError("MinkowskiEngine merged coordinates the context holds as unique")
        _set_rows(st, 1, key, unique_map.to(torch.int64))
        return st

    return ctx.cached(("minkowski", "state"), build)


def _set_rows(st: _MEState, stride: int, key: Any, rows: Tensor) -> None:
    st.keys[stride] = key
    st.rows[stride] = rows
    inv = torch.empty_like(rows)
    inv[rows] = torch.arange(rows.numel(), device=rows.device)
    st.inv_rows[stride] = inv


def _key(ctx: SparseContext, st: _MEState, stride: int) -> Any:
    """ME's coordinate map at ``stride`` (made by ME from stride / 2), matched to ours."""
    if stride in st.keys:
        return st.keys[stride]
    if stride > _ALIGN:
        raise ValueError(f"minkowski backend supports tensor strides up to {_ALIGN}")
    fine_key = _key(ctx, st, stride // 2)
    key = st.manager.stride(fine_key, [2, 2, 2])
    me_coords = st.manager.get_coordinates(key).to(torch.int64) + st.shift.to(ctx.device)
    ours = ctx.coords(stride)
    lo, extent = ctx.bounds(pad=2 * stride)
    sorted_keys, order = torch.sort(coords_key(ours, lo, extent))
    want = coords_key(me_coords, lo, extent)
    pos = torch.searchsorted(sorted_keys, want).clamp_(max=max(sorted_keys.numel() - 1, 0))
    if me_coords.shape[0] != ours.shape[0] or not bool((sorted_keys[pos] == want).all()):
        raise RuntimeError(
            f"MinkowskiEngine's stride-{stride} coordinates differ from the canonical set "
            f"({me_coords.shape[0]} vs {ours.shape[0]} rows); a bug in the minkowski backend"
        )
    _set_rows(st, stride, key, order[pos])
    return key


class MinkowskiBackend:
    """MinkowskiEngine kernels; ME's manager (and its kernel-map cache) lives in the context."""

    name = "minkowski"

    def conv(
        self,
        x: SparseTensor,
        weight: Tensor,
        *,
        kernel_size: int,
        stride: int,
        transposed: bool,
    ) -> SparseTensor:
        ctx = x.context
        out_stride = conv_output_stride(
            x, weight, kernel_size=kernel_size, stride=stride, transposed=transposed
        )
        n_out = ctx.coords(out_stride).shape[0]
        if x.feats.shape[0] == 0 or n_out == 0:
            feats = x.feats.new_zeros((n_out, weight.shape[2]))
            return SparseTensor.from_context(feats, ctx, out_stride)

        ME = import_me()
        st = _state(ctx)
        in_key, out_key = _key(ctx, st, x.stride), _key(ctx, st, out_stride)
        gen = ME.KernelGenerator(
            kernel_size=kernel_size, stride=stride, dilation=1, is_transpose=transposed, dimension=3
        )
        x_me = x.feats.index_select(0, st.rows[x.stride])
        w_me = to_me_weight(weight.to(x.feats.dtype), kernel_size)
        fn = (
            ME.MinkowskiConvolutionTransposeFunction
            if transposed
            else ME.MinkowskiConvolutionFunction
        )
        mode = import_me_backend().ConvolutionMode.DEFAULT
        y_me = fn.apply(x_me, w_me, gen, mode, in_key, out_key, st.manager)
        feats = y_me.index_select(0, st.inv_rows[out_stride])
        return SparseTensor.from_context(feats, ctx, out_stride)


def make_backend() -> MinkowskiBackend:
    """Entry point used by ``base.get_backend("minkowski")``; ImportError without ME."""
    import_me()
    return MinkowskiBackend()
