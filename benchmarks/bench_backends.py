"""Forward+backward time of MinkUNet34C per sparse backend on one ~60k-voxel scene.

    python benchmarks/bench_backends.py [--backends torch,spconv,minkowski] [--repeats 3]

Reports, per installed backend: forward+backward ms with cached kernel maps (what test-time
training repeats ~100 times), its ratio to the pure-torch backend, and the kernel-map build
time (a pass on a fresh context minus one on a context whose maps are cached). Same weights
and scene on every backend; outputs are compared, so a fast wrong backend cannot look good.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tttkd.model.minkunet import minkunet34c
from tttkd.model.sparse.base import (
    BACKEND_NAMES,
    BackendUnavailableError,
    SparseContext,
    SparseTensor,
    get_backend,
)
from tttkd.model.sparse.testing import room_coords


def _pass(net: torch.nn.Module, ctx: SparseContext, feats: torch.Tensor) -> torch.Tensor:
    out = net(SparseTensor.from_context(feats, ctx)).feats
    out.square().mean().backward()
    return out.detach()


def bench_backend(
    name: str, net: torch.nn.Module, coords: torch.Tensor, feats: torch.Tensor, repeats: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Median ms of a step with fresh kernel maps and with reused ones, and the output."""
    out = _pass(net, SparseContext(coords, name), feats)  # warm-up: allocator, threads
    fresh, reused = [], []
    for _ in range(repeats):
        ctx = SparseContext(coords, name)
        for times in (fresh, reused):  # the first pass on ctx builds its maps
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            _pass(net, ctx, feats)
            times.append(time.perf_counter() - t0)
    f, r = statistics.median(fresh), statistics.median(reused)
    return {"fwd_bwd_ms": 1e3 * r, "map_build_ms": 1e3 * max(f - r, 0.0)}, out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(BACKEND_NAMES))
    p.add_argument("--voxels", type=int, default=60_000, help="approximate scene size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    coords = room_coords(args.voxels, thickness=1)  # as bench_backbone.py
    feats = torch.rand(coords.shape[0], 3)
    net = minkunet34c(in_channels=3).eval()  # eval: BN uses running stats, so runs are equal
    print(f"MinkUNet34C, {coords.shape[0]} voxels, {args.threads} threads, CPU")
    results: dict[str, dict[str, float]] = {}
    ref = None
    for name in args.backends.split(","):
        try:
            get_backend(name)
        except BackendUnavailableError as err:
            print(f"{name:>10}: skipped ({err})")
            continue
        res, out = bench_backend(name, net, coords, feats, args.repeats)
        if ref is None:
            ref = out
        res["max_rel_err_vs_first"] = float((out - ref).abs().max() / ref.abs().max())
        results[name] = res
    base = results.get("torch", next(iter(results.values()), None))
    for name, res in results.items():
        res["ratio_vs_torch"] = res["fwd_bwd_ms"] / base["fwd_bwd_ms"] if base else float("nan")
        print(
            f"{name:>10}: fwd+bwd {res['fwd_bwd_ms']:8.1f} ms  (x{res['ratio_vs_torch']:.2f} "
            f"of torch)   kernel maps {res['map_build_ms']:7.1f} ms   "
            f"max rel err {res['max_rel_err_vs_first']:.1e}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"voxels": int(coords.shape[0]), "threads": args.threads,
                       "results": results}, f, indent=2)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
