"""Pure-PyTorch sparse convolution with neighbour tables: one gather and one GEMM per conv.

Why: the reference backend (``torch_backend``) runs a gather, a small GEMM and an
``index_add_`` per kernel offset, i.e. ~27 x 3 kernels per conv and atomics on a GPU, which
makes a MinkUNet step launch- and scatter-bound there (issue 10). Here each conv is:

* a neighbour table ``[N_out, K]`` (int32; a missing neighbour points at an appended zero
  row), built once per coordinate set and cached in the :class:`SparseContext`;
* forward: ``gather(x_pad, table) -> [N_out, K * C_in]``, then one GEMM with the weight
  viewed as ``[K * C_in, C_out]``; no atomics;
* backward: ``grad_W = gathered^T @ grad_out`` (the gather is redone, not saved) and
  ``grad_x`` = the same gather + GEMM over the TRANSPOSED table ``[N_in, K]`` (for a
  submanifold conv that is the table itself with the offsets mirrored, for a strided conv
  the table of the matching transposed conv, both cached).

Rows are processed in chunks of at most :data:`CHUNK_ELEMENTS` gathered values, so the peak
memory of a conv stays bounded on large scenes. Under autocast (bf16 / fp16) gathers and GEMMs
run in the autocast dtype, which is what makes low precision pay off on a GPU.
The results equal the reference backend's up to float summation order
(``tests/model/test_table_backend.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tttkd.model.sparse.base import (
    SparseContext,
    SparseTensor,
    conv_output_stride,
    kernel_offsets,
)
from tttkd.model.sparse.torch_backend import _lookup

__all__ = ["CHUNK_ELEMENTS", "NeighbourTables", "TableBackend", "make_backend", "tables"]

# Largest gathered block ([rows, K * C]) materialised at once: 2^24 values (64 MiB fp32).
CHUNK_ELEMENTS = 1 << 24


class NeighbourTables:
    """Forward and backward tables of one conv geometry (int32, missing = the zero row).

    ``fwd[o, k]``: input row feeding output ``o`` through offset ``k`` (``n_in`` if none).
    ``bwd[i, k]``: output row that input ``i`` feeds through offset ``k`` (``n_out`` if none).
    For submanifold convs with an odd kernel ``bwd`` is ``fwd`` with the offsets mirrored,
    so it is not stored (``mirrored=True``).
    """

    def __init__(self, fwd: Tensor, bwd: Tensor | None, n_in: int, n_out: int):
        self.fwd = fwd
        self._bwd = bwd
        self.n_in = n_in
        self.n_out = n_out

    @property
    def mirrored(self) -> bool:
        return self._bwd is None

    @property
    def bwd(self) -> Tensor:
        return self.fwd.flip(1) if self._bwd is None else self._bwd

    def swapped(self) -> NeighbourTables:
        """The tables of the transposed conv (input and output roles exchanged)."""
        return NeighbourTables(self.bwd, self.fwd, self.n_out, self.n_in)


def _table_from_pairs(
    n_rows: int, k: int, rows: Tensor, ks: Tensor, values: Tensor, missing: int, device
) -> Tensor:
    table = torch.full((n_rows * k,), missing, dtype=torch.int32, device=device)
    table[rows * k + ks] = values.to(torch.int32)
    return table.view(n_rows, k)


def _build(ctx: SparseContext, src: Tensor, dst: Tensor, offsets: Tensor, pad: int, sym: bool):
    """Tables of a conv reading ``src`` rows into ``dst`` rows (``src = dst + offset``)."""
    n_in, n_out, k = src.shape[0], dst.shape[0], offsets.shape[0]
    if max(n_in, n_out) >= 2**31 - 1:
        raise ValueError(f"{max(n_in, n_out)} voxels do not fit int32 neighbour tables")
    pairs = _lookup(ctx, src, dst, offsets, pad)
    device = ctx.device
    if pairs:
        ks = torch.cat([torch.full_like(i, kk) for kk, i, _ in pairs])
        ins = torch.cat([i for _, i, _ in pairs])
        outs = torch.cat([o for _, _, o in pairs])
    else:
        ks = ins = outs = torch.zeros(0, dtype=torch.int64, device=device)
    fwd = _table_from_pairs(n_out, k, outs, ks, ins, n_in, device)
    bwd = None if sym else _table_from_pairs(n_in, k, ins, ks, outs, n_out, device)
    return NeighbourTables(fwd, bwd, n_in, n_out)


def tables(ctx: SparseContext, kind: str, stride: int, kernel_size: int) -> NeighbourTables:
    """Cached tables: ``kind="subm"`` (stride-1 conv on the set at ``stride``) or ``"down"``
    (stride-2 conv from ``stride`` to ``2 * stride``; transposed convs use it swapped)."""

    def build() -> NeighbourTables:
        offs = kernel_offsets(kernel_size, device=ctx.device) * stride
        if kind == "subm":
            coords = ctx.coords(stride)
            return _build(ctx, coords, coords, offs, stride * kernel_size, kernel_size % 2 == 1)
        fine, coarse = ctx.coords(stride), ctx.coords(2 * stride)
        return _build(ctx, fine, coarse, offs, 2 * stride * (kernel_size + 1), False)

    if kind not in ("subm", "down"):
        raise ValueError(f"unknown table kind {kind!r}")
    return ctx.cached(("table", kind, stride, kernel_size), build)


def _gather_gemm(src: Tensor, table: Tensor, weight2d: Tensor) -> Tensor:
    """``gather(src_pad, table).view(N, K*C) @ weight2d``, chunked over rows."""
    n, k = table.shape
    c = src.shape[1]
    padded = torch.cat([src, src.new_zeros((1, c))])
    out = src.new_empty((n, weight2d.shape[1]))
    step = max(1, CHUNK_ELEMENTS // max(1, k * c))
    for start in range(0, n, step):
        idx = table[start : start + step].reshape(-1)
        g = padded.index_select(0, idx).view(-1, k * c)
        torch.mm(g, weight2d, out=out[start : start + step])
    return out


def _grad_weight(x: Tensor, table: Tensor, grad_out: Tensor) -> Tensor:
    """``sum over rows of gathered^T @ grad_out`` as ``[K * C_in, C_out]``, chunked.

    Chunks are summed in float32 (bf16 partial sums would lose the small ones).
    """
    n, k = table.shape
    c = x.shape[1]
    padded = torch.cat([x, x.new_zeros((1, c))])
    step = max(1, CHUNK_ELEMENTS // max(1, k * c))
    if step >= n:  # one chunk (the common case): no accumulator
        return padded.index_select(0, table.reshape(-1)).view(-1, k * c).t() @ grad_out
    acc = torch.zeros((k * c, grad_out.shape[1]), dtype=torch.float32, device=x.device)
    for start in range(0, n, step):
        idx = table[start : start + step].reshape(-1)
        g = padded.index_select(0, idx).view(-1, k * c)
        acc += (g.t() @ grad_out[start : start + step]).float()
    return acc.to(x.dtype)


class _TableConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, tabs: NeighbourTables) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tabs = tabs
        k, cin, cout = weight.shape
        with torch.autocast(x.device.type, enabled=False):
            return _gather_gemm(x, tabs.fwd, weight.reshape(k * cin, cout))

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        tabs: NeighbourTables = ctx.tabs
        k, cin, cout = weight.shape
        grad_out = grad_out.contiguous().to(x.dtype)
        grad_x = grad_w = None
        with torch.autocast(x.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                # grad_x[i] = sum_k grad_out[bwd[i, k]] @ W[k]^T
                wt = weight.transpose(1, 2).reshape(k * cout, cin)
                if tabs.mirrored:  # bwd = fwd.flip(1): flip the weights instead of the table
                    wt = weight.flip(0).transpose(1, 2).reshape(k * cout, cin)
                    grad_x = _gather_gemm(grad_out, tabs.fwd, wt)
                else:
                    grad_x = _gather_gemm(grad_out, tabs.bwd, wt)
            if ctx.needs_input_grad[1]:
                grad_w = _grad_weight(x, tabs.fwd, grad_out).view(k, cin, cout)
        return grad_x, grad_w, None


def _compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The autocast dtype when autocast is on for ``device`` (GEMM-friendly), else ``dtype``."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return dtype


class TableBackend:
    """Gather + one GEMM per conv over cached neighbour tables (module docstring)."""

    name = "table"

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
            kind = "subm" if stride == 1 else "down"
            tabs = tables(ctx, kind, x.stride, kernel_size)
        else:
            tabs = tables(ctx, "down", out_stride, kernel_size).swapped()
        dtype = _compute_dtype(x.feats.device, x.feats.dtype)
        feats = _TableConvFn.apply(x.feats.to(dtype), weight.to(dtype), tabs)
        return SparseTensor.from_context(feats, ctx, out_stride)


def make_backend() -> TableBackend:
    """Entry point used by ``base.get_backend("table")``."""
    return TableBackend()
