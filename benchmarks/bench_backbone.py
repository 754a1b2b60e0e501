"""MinkUNet34C on the pure-torch backend: step time, kernel-map share, what reuse saves.

    python benchmarks/bench_backbone.py [--voxels 60000] [--arch minkunet34c] [--repeats 2]
                                        [--backend torch|table]

Test-time training runs ~100 forward+backward passes on one scene's coordinates, so the
figure that matters is a step with the context (kernel maps) reused; the first step also
builds the maps. Both are measured in the same run, so the ratios hold on any machine.
Peak memory is the process's peak RSS growth over model-free baseline (CPU). Times are the
minimum over repeats (other processes share the cores).
``benchmarks/bench_backends.py`` compares the backends with each other.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from tttkd.model.minkunet import build_backbone
from tttkd.model.sparse import table_backend, torch_backend
from tttkd.model.sparse.base import SparseContext, SparseTensor
from tttkd.model.sparse.testing import room_coords


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _step(net: torch.nn.Module, ctx: SparseContext, feats: torch.Tensor) -> None:
    net.zero_grad(set_to_none=True)
    net(SparseTensor.from_context(feats, ctx)).feats.square().mean().backward()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voxels", type=int, default=60000)
    p.add_argument("--arch", default="minkunet34c")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--backend", default="torch", choices=("torch", "table"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    coords = room_coords(args.voxels, thickness=1)
    feats = torch.randn(coords.shape[0], 3)
    net = build_backbone(args.arch, in_channels=3)
    n = coords.shape[0]
    rss0 = _peak_rss_mib()
    be = args.backend
    _step(net, SparseContext(coords, be), feats)  # warm-up: allocator, threads

    fresh, reused, build, cpu = [], [], [], []
    for _ in range(args.repeats):
        fresh.append(_timed(lambda: _step(net, SparseContext(coords, be), feats)))
        ctx = SparseContext(coords, be)
        build.append(_timed(lambda ctx=ctx: _build_all_maps(ctx, net.arch["stem_kernel"], be)))
        c0 = time.process_time()
        reused.append(_timed(lambda ctx=ctx: _step(net, ctx, feats)))
        cpu.append((time.process_time() - c0) * 1e3)
    ctx = SparseContext(coords, be)
    with torch.no_grad():
        fwd = _timed(lambda: net(SparseTensor.from_context(feats, ctx)))
        fwd_reused = _timed(lambda: net(SparseTensor.from_context(feats, ctx)))
    peak = _peak_rss_mib() - rss0
    kmap = torch_backend.submanifold_map(ctx, 1, 3)
    pairs = sum(n if i is None else i.numel() for _, i, _ in kmap) / n

    # minimum over repeats: the least disturbed run (other processes share these cores)
    f, r, b = min(fresh), min(reused), min(build)
    print(
        f"{args.arch} {be} fwd+bwd {n / 1000:.0f}k voxels: {r:.0f} ms; "
        f"kernel-map build: {b:.0f} ms ({100 * b / f:.0f}% of step); "
        f"reuse speedup: {f / r:.2f}x"
    )
    print(
        f"  forward only: {fwd_reused:.0f} ms (first, with maps: {fwd:.0f} ms); "
        f"step with fresh maps: {f:.0f} ms; {pairs:.1f} k3 neighbours per voxel; "
        f"peak RSS growth {peak:.0f} MiB; {args.threads} threads, "
        f"CPU time of a reused step {min(cpu):.0f} ms"
    )
    return {
        "step_ms": r,
        "fresh_ms": f,
        "build_ms": b,
        "fwd_ms": fwd_reused,
        "peak_mib": peak,
        "cpu_ms": min(cpu),
    }


def _build_all_maps(ctx: SparseContext, stem_kernel: int, backend: str = "torch") -> None:
    """The kernel maps (or neighbour tables) a MinkUNet forward builds, outside any conv."""
    if backend == "table":
        for s in (1, 2, 4, 8):
            table_backend.tables(ctx, "down", s, 2)
        table_backend.tables(ctx, "subm", 1, stem_kernel)
        for s in (1, 2, 4, 8, 16):
            table_backend.tables(ctx, "subm", s, 3)
        return
    for s in (1, 2, 4, 8):
        torch_backend.down_map(ctx, s, 2)
    torch_backend.submanifold_map(ctx, 1, stem_kernel)
    for s in (1, 2, 4, 8, 16):
        torch_backend.submanifold_map(ctx, s, 3)


if __name__ == "__main__":
    main()
