"""Adaptation throughput with 1 and 2 Dask workers, measured in one run (issue 16).

Offline TTT-KD (CPU-bound: SGD steps on the sparse network) over N synthetic ScanNet rooms
prepared by the real ``tttkd-prep`` with the tiny test teacher, from a small MinkUNet
checkpoint (random weights: throughput does not depend on them). Each setting runs on its
own local cluster (``--workers 1`` and ``--workers 2``, one torch thread per worker), warmed
first (a one-scene run, every worker imports and loads the network), so the timed run holds
only reading and adapting scenes; the serial run (this process, one thread) is timed too.
Prints scenes/s per setting with the CPU seconds (user + sys) of the driver (on Dask also
client, scheduler and the nannies, which a local cluster runs in this process) and of the
workers, the 2-vs-1-worker ratio (target >= 1.8 on two idle cores) and whether every
setting's merged results equal the serial ones (they must, timings aside).

Steps default to ``tttkd-adapt``'s (100): a 10-step task is 10x shorter than a real one,
so what does not scale with workers (the driver's setup and merge, each task's round trip
through the scheduler, the last task's tail) weighs up to 10x more than in real use.
``--repeat N`` keeps each setting's fastest of N runs (for a shared machine).

``python -m benchmarks.bench_adapt_parallel [--scenes 8 --steps 100 --repeat 1]``;
``--quick`` for a fast look (4 scenes, 5 steps).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import dataclass
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


def cpu_seconds() -> float:
    """This process's CPU time (user + sys); run on the driver and on the workers."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def timed(cfg, url: str, ckpt: Path, executor=None) -> tuple[float, dict]:
    from tttkd.adapt.runner import run_adaptation

    t0 = time.perf_counter()
    res = run_adaptation(cfg, url, ckpt, progress=False, echo=lambda s: None, executor=executor)
    return time.perf_counter() - t0, res.to_dict()


@dataclass
class Row:
    """One setting's fastest timed run and where its CPU time went."""

    name: str
    seconds: float
    same: bool
    driver_cpu: float  # this process: on Dask also client, scheduler and the nannies
    worker_cpu: float = 0.0  # all worker processes together

    def line(self, scenes: int) -> str:
        cpu = f"CPU s: driver {self.driver_cpu:.1f}"
        if self.name != "serial":
            cpu += f", workers {self.worker_cpu:.1f}"
        return (f"  {self.name:12s} {scenes / self.seconds:6.3f} scenes/s ({self.seconds:.1f} s; "
                f"{cpu}){'' if self.same else '  RESULTS DIFFER FROM SERIAL'}")  # fmt: skip


def cluster_cpu(client) -> tuple[float, float]:
    """CPU seconds so far of this process (a local cluster's nannies run in it too) and of
    all worker processes."""
    return cpu_seconds(), sum(client.run(cpu_seconds).values())


def serial_row(cfg, url: str, ckpt: Path, repeat: int) -> tuple[Row, dict]:
    best = None
    for _ in range(repeat):
        c0 = cpu_seconds()
        secs, res = timed(cfg, url, ckpt)
        row = Row("serial", secs, True, cpu_seconds() - c0)
        best = row if best is None or row.seconds < best.seconds else best
    return best, res


def cluster_row(workers: int, cfg, url: str, ckpt: Path, serial: dict, repeat: int) -> Row:
    """``workers`` local workers, warmed (every worker imports and loads the network), then
    the run timed ``repeat`` times; the fastest is kept."""
    from tttkd.adapt.report import without_timings
    from tttkd.pipeline.cache import Cache
    from tttkd.pipeline.executors import DaskExecutor

    dim = int(Cache.open(url, read_only=True).meta.teacher["dim"])
    warm = cfg.with_(steps=1, scenes=(serial["scenes"][0],), split=None)
    best = None
    with DaskExecutor(workers, memory_limit=None, cpu_teacher=False,
                      echo=lambda s: None) as ex:  # fmt: skip
        client = ex.client
        client.wait_for_workers(workers, timeout=300)
        timed(warm, url, ckpt, ex)
        client.run(warm_worker, str(ckpt), cfg, dim)  # every worker, not just one
        for _ in range(repeat):
            before = cluster_cpu(client)
            secs, res = timed(cfg, url, ckpt, ex)
            spent = [b - a for a, b in zip(before, cluster_cpu(client))]
            same = without_timings(res) == without_timings(serial)
            row = Row(f"{workers} worker(s)", secs, same, *spent)
            best = row if best is None or row.seconds < best.seconds else best
    return best


def main(argv: list[str] | None = None) -> None:
    from tttkd.adapt.config import AdaptConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--steps", type=int, default=AdaptConfig().steps)
    p.add_argument("--repeat", type=int, default=1, help="timed runs per setting (fastest kept)")
    p.add_argument("--quick", action="store_true", help="4 scenes, 5 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.scenes, args.steps = 4, 5

    with tempfile.TemporaryDirectory(prefix="bench_adapt_") as tmp:
        url, ckpt = build(Path(tmp), args.scenes)
        cfg = AdaptConfig(methods=("ttt-kd",), steps=args.steps, device="cpu", threads=1)
        load = os.getloadavg()[0]
        print(f"{args.scenes} scenes, ttt-kd {args.steps} steps, CPU, {os.cpu_count()} cores, "
              f"fastest of {args.repeat} run(s) per setting; load {load:.1f}")  # fmt: skip
        first, serial = serial_row(cfg, url, ckpt, args.repeat)
        rows = [first] + [cluster_row(w, cfg, url, ckpt, serial, args.repeat) for w in (1, 2)]
        for row in rows:
            print(row.line(args.scenes))
        ratio = rows[1].seconds / rows[2].seconds
        print(f"  2 vs 1 worker: {ratio:.2f}x (target >= 1.8 on two idle cores; load "
              f"{load:.1f} before, {os.getloadavg()[0]:.1f} now)")  # fmt: skip


if __name__ == "__main__":
    main()
