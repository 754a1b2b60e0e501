"""Synthetic voxel scenes for tests and benchmarks of the sparse backends (no data needed)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mixed_scene", "random_coords", "rel_close", "room_coords", "run_conv_op"]


def random_coords(
    n: int, extent: int, *, batch_size: int = 1, seed: int = 0, low: int = 0
) -> Tensor:
    """Up to ``n`` distinct random voxels per scene in ``[low, low+extent)^3``, int32 ``[N, 4]``.

    Rows come shuffled (not sorted) so tests catch backends that assume an order.
    """
    g = torch.Generator().manual_seed(seed)
    parts = []
    for b in range(batch_size):
        xyz = torch.randint(low, low + extent, (n, 3), generator=g)
        xyz = torch.unique(xyz, dim=0)
        parts.append(torch.cat([torch.full((xyz.shape[0], 1), b), xyz], 1))
    coords = torch.cat(parts)
    return coords[torch.randperm(coords.shape[0], generator=g)].int()


def room_coords(n: int, *, seed: int = 0, thickness: int = 2) -> Tensor:
    """About ``n`` surface voxels of a box room with a few boxes in it (``[N, 4]``, batch 0).

    Scanned scenes are surfaces, so each voxel has ~9-15 of 26 neighbours; random points in
    a volume have almost none and make sparse convs look cheaper than they are.
    """
    g = torch.Generator().manual_seed(seed)
    # room side s, height s/2, walls and floor `thickness` voxels thick
    # surface voxels ~ thickness * (s^2 + 4 * s * s/2) = 3 * thickness * s^2
    s = max(8, int((n / (3.0 * thickness)) ** 0.5))
    h = s // 2
    axis = torch.arange(s)
    zs = torch.arange(h)
    pts = []
    for t in range(thickness):
        a, b = torch.meshgrid(axis, axis, indexing="ij")
        pts.append(torch.stack([a.flatten(), b.flatten(), torch.full_like(a.flatten(), t)], 1))
        a, z = torch.meshgrid(axis, zs, indexing="ij")
        for fixed in (t, s - 1 - t):
            f = torch.full_like(a.flatten(), fixed)
            pts.append(torch.stack([a.flatten(), f, z.flatten()], 1))
            pts.append(torch.stack([f, a.flatten(), z.flatten()], 1))
    for _ in range(6):  # furniture: hollow boxes standing on the floor
        lo = torch.randint(2, max(3, s - 12), (2,), generator=g)
        size = torch.randint(3, 10, (3,), generator=g)
        x, y, z = torch.meshgrid(
            torch.arange(size[0]), torch.arange(size[1]), torch.arange(size[2]), indexing="ij"
        )
        box = torch.stack([x.flatten(), y.flatten(), z.flatten()], 1)
        shell = (
            (box == 0).any(1)
            | (box[:, 0] == size[0] - 1)
            | (box[:, 1] == size[1] - 1)
            | (box[:, 2] == size[2] - 1)
        )
        box = box[shell] + torch.cat([lo, torch.tensor([thickness])])
        pts.append(box)
    xyz = torch.unique(torch.cat(pts), dim=0)
    xyz = xyz[torch.randperm(xyz.shape[0], generator=g)]
    return torch.cat([torch.zeros(xyz.shape[0], 1, dtype=torch.long), xyz], 1).int()


def mixed_scene(seed: int, n: int = 1500, grid: int = 24, batches: int = 2) -> Tensor:
    """About ``n`` shuffled unique voxels in ``batches`` scenes, with negative coordinates."""
    return random_coords(
        n // batches, grid + grid // 2, batch_size=batches, seed=seed, low=-grid // 2
    )


def rel_close(a: Tensor, b: Tensor, rtol: float = 2e-5) -> bool:
    """Max abs difference within ``rtol`` of ``a``'s largest magnitude (plus 1e-6)."""
    return bool((a - b).abs().max() <= rtol * a.abs().max() + 1e-6)


def run_conv_op(
    backend: str, coords: Tensor, feats: Tensor, weight: Tensor, op: tuple[int, int, bool]
) -> tuple[Tensor, Tensor, Tensor]:
    """One (kernel, stride, transposed) conv on a fresh context: (output, grad feats, grad W).

    A transposed op first goes down with a k2 conv (fixed weights) so a coarse set exists to
    come back from; the backward pass uses a fixed ramp so every output row matters.
    """
    from tttkd.model.sparse.base import SparseContext, SparseTensor

    k, s, tr = op
    ctx = SparseContext(coords, backend)
    x = feats.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    st = SparseTensor.from_context(x, ctx)
    if tr:
        down = torch.full((8, feats.shape[1], feats.shape[1]), 0.3)
        st = ctx.backend.conv(st, down, kernel_size=2, stride=2, transposed=False)
    y = ctx.backend.conv(st, w, kernel_size=k, stride=s, transposed=tr)
    ramp = torch.linspace(-1.0, 1.0, y.feats.numel()).reshape(y.feats.shape)
    (y.feats * ramp).sum().backward()
    return y.feats.detach(), x.grad, w.grad
