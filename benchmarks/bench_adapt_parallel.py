"""Adaptation throughput with 1 and 2 Dask workers, measured in one run (issue 16).

Offline TTT-KD (CPU-bound: SGD steps on the sparse network) over N synthetic ScanNet rooms
prepared by the real ``tttkd-prep`` with the tiny test teacher, from a small MinkUNet
checkpoint (random weights: throughput does not depend on them). Each setting runs on its
own local cluster (``--workers 1`` and ``--workers 2``, one torch thread per worker), warmed
first (a one-scene run, every worker imports and loads the network), so the timed run holds
only reading and adapting scenes; the serial run (this process, one thread) is timed too.
Prints scenes/s per setting, the 2-vs-1-worker ratio (target >= 1.8 on two idle cores) and
whether every setting's merged results equal the serial ones (they must, timings aside).

``python -m benchmarks.bench_adapt_parallel [--scenes 8 --steps 20]``; ``--quick`` for a
fast look (4 scenes, 5 steps).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def build(root: Path, scenes: int) -> tuple[str, Path]:
    """A ScanNet-format root -> a real cache (tiny teacher) and a small checkpoint."""
    import torch

    from tttkd.model.checkpoint import save_checkpoint
    from tttkd.model.minkunet import minkunet_test
    from tttkd.model.network import KDHeadConfig, SegKDNet
    from tttkd.pipeline.cache import Cache
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    write_scannet_dataset(root / "scannet", scenes, frames=("25k",), splits=["val"] * scenes,
                          image_size=(96, 72), views=3, domain=Domain(spacing=0.05))  # fmt: skip
    url = str(root / "feats.zarr")
    cfg = PrepConfig(dataset="scannet", root=str(root / "scannet"), out=url,
                     teacher="test_vit_tiny", image_size=56, voxel_size=0.05,
                     reader_options={"frames": "25k"})  # fmt: skip
    report = run_prep(cfg, progress=False, echo=lambda s: None)
    if report.exit_code != 0:
        raise RuntimeError(f"prep failed: {report.failed}")
    cache = Cache.open(url, read_only=True)
    torch.manual_seed(0)
    net = SegKDNet(minkunet_test(in_channels=3), 20, int(cache.meta.teacher["dim"]),
                   KDHeadConfig(hidden=32))  # fmt: skip
    ckpt = root / "net.safetensors"
    meta = cache.meta
    save_checkpoint(ckpt, net.eval(), label_set="scannet20", class_names=meta.class_names,
                    teacher_spec=meta.teacher, config={"benchmark": "adapt_parallel"})  # fmt: skip
    return url, ckpt


def warm_worker(checkpoint: str, cfg, teacher_dim: int) -> int:
    """Import the adaptation code and load the network once in this worker process."""
    from tttkd.adapt.tasks import load_network

    load_network(checkpoint, cfg, teacher_dim)
    return os.getpid()


def timed(cfg, url: str, ckpt: Path, executor=None) -> tuple[float, dict]:
    from tttkd.adapt.runner import run_adaptation

    t0 = time.perf_counter()
    res = run_adaptation(cfg, url, ckpt, progress=False, echo=lambda s: None, executor=executor)
    return time.perf_counter() - t0, res.to_dict()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="4 scenes, 5 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.scenes, args.steps = 4, 5

    from tttkd.adapt.config import AdaptConfig
    from tttkd.adapt.report import without_timings
    from tttkd.pipeline.cache import Cache
    from tttkd.pipeline.executors import DaskExecutor

    with tempfile.TemporaryDirectory(prefix="bench_adapt_") as tmp:
        url, ckpt = build(Path(tmp), args.scenes)
        dim = int(Cache.open(url, read_only=True).meta.teacher["dim"])
        cfg = AdaptConfig(methods=("ttt-kd",), steps=args.steps, device="cpu", threads=1)
        warm = cfg.with_(steps=1, scenes=(), split=None)
        print(f"{args.scenes} scenes, ttt-kd {args.steps} steps, CPU, {os.cpu_count()} cores")
        secs, serial = timed(cfg, url, ckpt)
        rows = [("serial", secs, True)]
        for workers in (1, 2):
            with DaskExecutor(workers, memory_limit=None, cpu_teacher=False,
                              echo=lambda s: None) as ex:  # fmt: skip
                ex.client.wait_for_workers(workers, timeout=300)
                timed(warm.with_(scenes=(serial["scenes"][0],)), url, ckpt, ex)
                ex.client.run(warm_worker, str(ckpt), cfg, dim)  # every worker, not just one
                secs, res = timed(cfg, url, ckpt, ex)
            rows.append(
                (f"{workers} worker(s)", secs, without_timings(res) == without_timings(serial))
            )
        for name, secs, same in rows:
            print(f"  {name:12s} {args.scenes / secs:6.3f} scenes/s ({secs:.1f} s)"
                  f"{'' if same else '  RESULTS DIFFER FROM SERIAL'}")  # fmt: skip
        ratio = rows[1][1] / rows[2][1]
        print(f"  2 vs 1 worker: {ratio:.2f}x (target >= 1.8 on two idle cores; load now: "
              f"{os.getloadavg()[0]:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
