"""spconv 2.x backend: spconv's kernel maps and gather-GEMM-scatter under our parameter layout.

Why a thin wrapper and not ``spconv.SubMConv3d``: our weights are ``[K^3, C_in, C_out]`` in
``base.kernel_offsets`` order (z fastest), shared by every backend, and our rows follow the
context's canonical order. spconv 2.x stores ``KRSC`` = ``[C_out, K_x, K_y, K_z, C_in]`` (axis 1
is index column 1 = x; kernel index ``a`` on an axis means offset ``a - padding``), so the
weight is a pure permute of ours; coarse rows come back in spconv's order and are permuted.

Two measured CPU bugs of spconv 2.3.8 are worked around here (see ``_cpu_guard``):

* its CPU gather-GEMM-scatter races when torch has more than one intra-op thread: submanifold
  convs return wrong numbers (upstream spconv#679; 13 of 20 random scenes at 2 threads here).
  The kernel maps are fine; the scatter is not. Every spconv call therefore runs with one
  torch thread, restored afterwards.
* ``ops.indice_conv_backward`` calls ``torch.cuda.current_stream()`` before branching on the
  device, which raises on machines without a GPU driver. During our CPU calls only, spconv's
  module-level ``get_current_stream`` answers 0 (the value it uses itself for CPU tensors).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tttkd.model.sparse.base import SparseContext, SparseTensor, conv_output_stride, coords_key

__all__ = ["SpconvBackend", "cpu_guard", "from_spconv_weight", "make_backend", "to_spconv_weight"]

_GUARD_LOCK = threading.RLock()


def _ops() -> Any:
    import spconv.pytorch.ops as ops  # lazy: spconv is optional

    return ops


@contextmanager
def cpu_guard(device: torch.device) -> Iterator[None]:
    """Make spconv CPU calls correct: one torch thread, no CUDA stream query (no-op on GPU).

    ``torch.set_num_threads`` is process-wide, hence the lock: concurrent callers queue up
    instead of restoring each other's thread counts. The stream patch answers 0 only to the
    thread holding the guard; other threads still reach spconv's original function.
    """
    if device.type != "cpu":
        yield
        return
    ops = _ops()
    with _GUARD_LOCK:
        n_threads = torch.get_num_threads()
        original = ops.get_current_stream
        owner = threading.get_ident()

        def get_current_stream() -> int:
            return 0 if threading.get_ident() == owner else original()

        torch.set_num_threads(1)
        ops.get_current_stream = get_current_stream
        try:
            yield
        finally:
            ops.get_current_stream = original
            torch.set_num_threads(n_threads)


def to_spconv_weight(weight: Tensor, kernel_size: int) -> Tensor:
    """Ours ``[K^3, C_in, C_out]`` -> spconv ``KRSC`` ``[C_out, K, K, K, C_in]``, differentiably."""
    k = kernel_size
    w = weight.reshape(k, k, k, weight.shape[1], weight.shape[2])
    return w.permute(4, 0, 1, 2, 3).contiguous()


def from_spconv_weight(weight: Tensor) -> Tensor:
    """spconv ``KRSC`` ``[C_out, K, K, K, C_in]`` -> ours ``[K^3, C_in, C_out]``."""
    c_out, k = weight.shape[0], weight.shape[1]
    return weight.permute(1, 2, 3, 4, 0).reshape(k**3, weight.shape[4], c_out)


@dataclass(frozen=True)
class _SpMap:
    """spconv indice pairs of one op; ``perm[r]`` = spconv output row of canonical coarse row r."""

    pairs: Tensor
    pair_num: Tensor
    n_out: int
    perm: Tensor | None


def _native(
    ctx: SparseContext, stride: int, align: int, margin: int
) -> tuple[Tensor, Tensor, list[int]]:
    """Indices ``(b, x', y', z')`` of the set at ``stride`` in spconv's non-negative grid units.

    The shift is a multiple of ``align`` (2 * stride for strided convs), so flooring to the
    coarse grid commutes with it and spconv's ``floor(i / 2)`` is our ``floor(x / 2s) * 2s``.
    """
    lo, extent = ctx.bounds()
    coords = ctx.coords(stride)
    shift = torch.div(lo[1:], align, rounding_mode="floor") * align
    native = coords.to(torch.int64)
    native[:, 1:] = torch.div(native[:, 1:] - shift, stride, rounding_mode="floor")
    hi = lo[1:] + extent[1:] - 1
    shape = torch.div(hi - shift, stride, rounding_mode="floor") + 1 + margin
    shape = shape + shape % 2  # even, so stride-2 outputs of the last cell stay inside
    return native.to(torch.int32).contiguous(), shift, [int(v) for v in shape]


def _subm_map(ctx: SparseContext, stride: int, kernel_size: int) -> _SpMap:
    def build() -> _SpMap:
        from spconv.core import ConvAlgo

        indices, _, shape = _native(ctx, stride, stride, margin=kernel_size)
        k3, one = [kernel_size] * 3, [1] * 3
        pad = [kernel_size // 2] * 3
        with cpu_guard(indices.device):
            _, pairs, pair_num = _ops().get_indice_pairs(
                indices, ctx.batch_size, shape, ConvAlgo.Native, k3, one, pad, one, [0] * 3,
                True, False,
            )  # fmt: skip
        return _SpMap(pairs, pair_num, indices.shape[0], None)

    return ctx.cached(("spconv", "subm", stride, kernel_size), build)


def _down_map(ctx: SparseContext, stride: int, kernel_size: int) -> _SpMap:
    """Strided conv from ``stride`` to ``2 * stride``; transposed convs reuse it (inverse=True)."""

    def build() -> _SpMap:
        from spconv.core import ConvAlgo

        indices, shift, shape = _native(ctx, stride, 2 * stride, margin=kernel_size + 2)
        k3, two, one = [kernel_size] * 3, [2] * 3, [1] * 3
        pad = [kernel_size // 2 if kernel_size % 2 else 0] * 3
        with cpu_guard(indices.device):
            out_inds, pairs, pair_num = _ops().get_indice_pairs(
                indices, ctx.batch_size, shape, ConvAlgo.Native, k3, two, pad, one, [0] * 3,
                False, False,
            )  # fmt: skip
        # Back to world coordinates, then find each canonical coarse row among spconv's rows.
        world = out_inds.to(torch.int64)
        world[:, 1:] = world[:, 1:] * (2 * stride) + shift
        coarse = ctx.coords(2 * stride)
        lo, extent = ctx.bounds(pad=2 * stride * (kernel_size + 2))
        sp_keys = coords_key(world, lo, extent)
        sorted_keys, order = torch.sort(sp_keys)
        want = coords_key(coarse, lo, extent)
        pos = torch.searchsorted(sorted_keys, want).clamp_(max=max(sorted_keys.numel() - 1, 0))
        if sorted_keys.numel() < want.numel() or not bool((sorted_keys[pos] == want).all()):
            raise RuntimeError(
                f"spconv backend: spconv's stride-{2 * stride} output set misses canonical rows "
                f"(kernel {kernel_size}); this is a bug in tttkd's spconv backend"
            )
        return _SpMap(pairs, pair_num, int(out_inds.shape[0]), order[pos])

    return ctx.cached(("spconv", "down", stride, kernel_size), build)


class _SpconvConvFn(torch.autograd.Function):
    """spconv forward/backward kernels, each run under :func:`cpu_guard`."""

    @staticmethod
    def forward(
        ctx, feats: Tensor, weight: Tensor, smap: _SpMap, n_out: int, inverse: bool, subm: bool
    ) -> Tensor:
        feats = feats.contiguous()
        ctx.save_for_backward(feats, weight)
        ctx.smap, ctx.inverse, ctx.subm = smap, inverse, subm
        with cpu_guard(feats.device):
            return _ops().indice_conv(
                feats, weight, smap.pairs, smap.pair_num, n_out, inverse, subm
            )

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        feats, weight = ctx.saved_tensors
        smap = ctx.smap
        with cpu_guard(feats.device):
            grad_x, grad_w = _ops().indice_conv_backward(
                feats, weight, grad_out.contiguous(), smap.pairs, smap.pair_num, ctx.inverse,
                ctx.subm,
            )  # fmt: skip
        return grad_x, grad_w, None, None, None, None


class SpconvBackend:
    """spconv 2.x kernels; indice pairs cached in the :class:`SparseContext`."""

    name = "spconv"

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
        w = to_spconv_weight(weight.to(x.feats.dtype), kernel_size)
        c_out = weight.shape[2]
        if stride == 1 and not transposed:
            if kernel_size % 2 == 0:
                raise ValueError("spconv backend: submanifold convs need an odd kernel size")
            n = x.feats.shape[0]
            if n == 0:
                return x.replace(x.feats.new_zeros((0, c_out)))
            smap = _subm_map(ctx, x.stride, kernel_size)
            feats = _SpconvConvFn.apply(x.feats, w, smap, n, False, True)
            return x.replace(feats)
        if not transposed:
            if ctx.coords(out_stride).shape[0] == 0:
                return SparseTensor.from_context(x.feats.new_zeros((0, c_out)), ctx, out_stride)
            smap = _down_map(ctx, x.stride, kernel_size)
            out = _SpconvConvFn.apply(x.feats, w, smap, smap.n_out, False, False)
            return SparseTensor.from_context(out.index_select(0, smap.perm), ctx, out_stride)
        n_fine = ctx.coords(out_stride).shape[0]
        if n_fine == 0:
            return SparseTensor.from_context(x.feats.new_zeros((0, c_out)), ctx, out_stride)
        smap = _down_map(ctx, out_stride, kernel_size)
        # spconv's coarse rows (a superset for odd kernels; extra rows stay zero).
        x_sp = x.feats.new_zeros((smap.n_out, x.feats.shape[1]))
        x_sp = x_sp.index_copy(0, smap.perm, x.feats)
        out = _SpconvConvFn.apply(x_sp, w, smap, n_fine, True, False)
        return SparseTensor.from_context(out, ctx, out_stride)


def make_backend() -> SpconvBackend:
    """Entry point used by ``base.get_backend("spconv")``; raises ImportError without spconv."""
    import spconv.pytorch  # noqa: F401  (fail here, with the install hint, not mid-forward)

    return SpconvBackend()
