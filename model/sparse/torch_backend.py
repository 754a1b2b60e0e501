"""Pure-PyTorch sparse convolution: sorted-key kernel maps and gather-GEMM-scatter.

The reference for correctness (every other backend is tested against it) and the default on
CPU. Kernel maps: coordinates are encoded as int64 mixed-radix keys (``base.coords_key``),
sorted once, and each neighbour query ``u + d * s`` is a ``searchsorted`` of ``key(u) +
key(d * s)`` (the box is padded by the kernel reach, so adding offsets never wraps a column).
Convolution: for every kernel offset, gather the input rows, one GEMM with ``W[k]``, and
``index_add_`` into the output; backward is the same loop transposed, written by hand so no
per-offset gathers are kept alive between forward and backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tttkd.model.sparse.base import (
    SparseContext,
    SparseTensor,
    conv_output_stride,
    coords_key,
    kernel_offsets,
)

__all__ = ["KernelMap", "TorchBackend", "make_backend"]

KernelMap = list[tuple[int, Tensor | None, Tensor | None]]
"""Per non-empty offset ``k``: ``(k, in_rows, out_rows)``; ``None`` rows mean the identity."""


# Up to this many cells in the padded coordinate box, neighbour lookups use a dense table
# (one int32 per cell, 128 MiB at most, freed after the build): 6x faster than binary
# search here. Larger boxes (many scenes in a batch, outdoor extents) use binary search.
DENSE_TABLE_CELLS = 1 << 25


def _lookup(ctx: SparseContext, src: Tensor, dst: Tensor, offsets: Tensor, pad: int) -> KernelMap:
    """Pairs ``(i in src, o in dst, k)`` with ``src[i] == dst[o] + offsets[k]``."""
    if src.shape[0] == 0 or dst.shape[0] == 0:
        return []
    lo, extent = ctx.bounds(pad=pad)
    src_keys = coords_key(src, lo, extent)
    dst_keys = coords_key(dst, lo, extent)
    zero = torch.zeros((offsets.shape[0], 1), dtype=torch.int64, device=offsets.device)
    # key(c + d) = key(c) + key(d) - key(0) inside the padded box (no column wraps).
    deltas = coords_key(torch.cat([zero, offsets], 1), lo, extent) - coords_key(
        zero[:1].expand(1, 4), lo, extent
    )
    volume = int(torch.prod(extent))
    if volume <= DENSE_TABLE_CELLS:
        table = torch.full((volume,), -1, dtype=torch.int32, device=src.device)
        table[src_keys] = torch.arange(src.shape[0], dtype=torch.int32, device=src.device)
        hit = table[dst_keys[None, :] + deltas[:, None]]  # [K, N_dst], -1 = no neighbour
        del table
        found = hit >= 0
        k_idx, o_idx = found.nonzero(as_tuple=True)
        i_idx = hit[k_idx, o_idx].long()
    else:
        # binary search; sorted queries keep it cache-friendly (3x faster than unsorted)
        sorted_keys, order = torch.sort(src_keys)
        dst_sorted, dst_order = torch.sort(dst_keys)
        query = dst_sorted[None, :] + deltas[:, None]
        pos = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
        found = sorted_keys[pos] == query
        k_idx, o_sorted = found.nonzero(as_tuple=True)
        i_idx = order[pos[k_idx, o_sorted]]
        o_idx = dst_order[o_sorted]
    counts = found.sum(1).tolist()
    kmap: KernelMap = []
    start = 0
    for k, n in enumerate(counts):
        if n:
            kmap.append((k, i_idx[start : start + n], o_idx[start : start + n]))
        start += n
    return kmap


def _identity_center(kmap: KernelMap, n: int, center: int) -> KernelMap:
    """Put the centre offset of a submanifold map first, as identity: the output starts as
    ``x @ W[centre]`` with no gather, scatter or zero fill."""
    ident = [(k, None, None) for k, i, _ in kmap if k == center and i.numel() == n]
    return ident + [(k, i, o) for k, i, o in kmap if not (ident and k == center)]


def submanifold_map(ctx: SparseContext, stride: int, kernel_size: int) -> KernelMap:
    """Cached kernel map of a stride-1 conv on the set at ``stride``."""

    def build() -> KernelMap:
        coords = ctx.coords(stride)
        offs = kernel_offsets(kernel_size, device=ctx.device) * stride
        reach = stride * kernel_size
        kmap = _lookup(ctx, coords, coords, offs, pad=reach)
        center = (kernel_size**3) // 2 if kernel_size % 2 == 1 else -1
        return _identity_center(kmap, coords.shape[0], center)

    return ctx.cached(("torch", "subm", stride, kernel_size), build)


def down_map(ctx: SparseContext, stride: int, kernel_size: int) -> KernelMap:
    """Cached map of a stride-2 conv from the set at ``stride`` to the set at ``2 * stride``.

    Transposed convs from ``2 * stride`` back to ``stride`` use the same pairs, swapped.
    """

    def build() -> KernelMap:
        fine = ctx.coords(stride)
        coarse = ctx.coords(2 * stride)
        offs = kernel_offsets(kernel_size, device=ctx.device) * stride
        return _lookup(ctx, fine, coarse, offs, pad=2 * stride * (kernel_size + 1))

    return ctx.cached(("torch", "down", stride, kernel_size), build)


def _gemm_scatter(x: Tensor, weight: Tensor, kmap: KernelMap, n_out: int, swap: bool) -> Tensor:
    out = None
    for k, i, o in kmap:
        if swap:
            i, o = o, i
        if i is None:
            out = x @ weight[k] if out is None else out.add_(x @ weight[k])
            continue
        if out is None:
            out = x.new_zeros((n_out, weight.shape[2]))
        out.index_add_(0, o, x.index_select(0, i) @ weight[k])
    return x.new_zeros((n_out, weight.shape[2])) if out is None else out


class _SparseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, kmap: KernelMap, n_out: int, swap: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.kmap = kmap
        ctx.swap = swap
        # Under autocast the GEMMs would come out in bf16 while the scatter target keeps the
        # input dtype; run the whole op in the features' dtype instead (autocast off inside).
        with torch.autocast(x.device.type, enabled=False):
            return _gemm_scatter(x, weight.to(x.dtype), kmap, n_out, swap)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        weight = weight.to(x.dtype)
        grad_out = grad_out.contiguous().to(x.dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = None
        grad_w = torch.zeros_like(weight) if need_w else None
        for k, i, o in ctx.kmap:
            if ctx.swap:
                i, o = o, i
            g = grad_out if o is None else grad_out.index_select(0, o)
            if need_x:
                gx = g @ weight[k].t()
                if i is None and grad_x is None:
                    grad_x = gx
                elif i is None:
                    grad_x += gx
                else:
                    if grad_x is None:
                        grad_x = torch.zeros_like(x)
                    grad_x.index_add_(0, i, gx)
            if need_w:
                xi = x if i is None else x.index_select(0, i)
                grad_w[k] = xi.t() @ g
        if need_x and grad_x is None:
            grad_x = torch.zeros_like(x)
        if grad_w is not None:
            grad_w = grad_w.to(ctx.saved_tensors[1].dtype)
        return grad_x, grad_w, None, None, None


class TorchBackend:
    """Gather-GEMM-scatter on any device torch runs on; kernel maps cached in the context."""

    name = "torch"

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
        if not transposed:
            build = submanifold_map if stride == 1 else down_map
            kmap, swap = build(ctx, x.stride, kernel_size), False
        else:
            kmap, swap = down_map(ctx, out_stride, kernel_size), True
        n_out = ctx.coords(out_stride).shape[0]
        feats = _SparseConvFn.apply(x.feats, weight.to(x.feats.dtype), kmap, n_out, swap)
        return SparseTensor.from_context(feats, ctx, out_stride)


def make_backend() -> TorchBackend:
    """Entry point used by ``base.get_backend("torch")``."""
    return TorchBackend()
