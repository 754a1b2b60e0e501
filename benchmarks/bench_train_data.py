"""Training's data path with and without the in-memory scene memo (``runtime.scene_cache_mb``).

    python -m benchmarks.bench_train_data [--cache URL] [--scenes 8] [--epochs 3] [--repeats 1]

At the demo's sizes (synthetic shift benchmark rooms, real prep with the ``randconv-demo``
teacher, 10 cm voxels on a 5 cm point grid, ``minkunet_test``, batch 2, 4 images per scene,
one torch thread, ``runtime.num_workers=0``), on ``--cache`` when given:

1. the data side alone, per epoch: every item of the training split (read, decode, augment,
   voxelize), collated in batches of 2, and the KD targets (``unit_sums``), without the memo
   and with it (its first epoch reads every scene; later epochs read none);
2. whole trainings (``tttkd-train``'s ``train``) of ``--epochs`` epochs without and with the
   memo: seconds per epoch and per step after the first epoch, wall and CPU (user + sys of
   this process), and whether the two runs end with bit-identical weights.

Wall times move with whatever else runs on the machine; the CPU times and the ratios of
the same run say more. ``--repeats`` interleaves the variants and keeps each one's minimum.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

SETS = [
    "model.arch=minkunet_test",
    "data.batch_size=2",
    "data.max_images=4",
    "runtime.threads=1",
    "runtime.num_workers=0",
    "runtime.progress=false",
    "runtime.tensorboard=false",
]


def _cache(tmp: Path, scenes: int) -> str:
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.benchmark import write_shift_benchmark

    bench = write_shift_benchmark(tmp / "data", source_scenes=scenes, target_scenes=1)
    cfg = PrepConfig(
        dataset="scannet",
        root=str(bench.source_root),
        out=str(tmp / "source.zarr"),
        teacher="randconv-demo",
        voxel_size=0.1,
        point_voxel_size=0.05,
    )
    if run_prep(cfg, SerialExecutor(), progress=False, echo=lambda *_: None).exit_code:
        raise RuntimeError("prep of the benchmark rooms failed")
    return cfg.out


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _data_epochs(cache: str, memo_mb: int, epochs: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each epoch of the data side alone."""
    from tttkd.model.config import AugmentConfig
    from tttkd.model.data import CacheSceneDataset, collate_items
    from tttkd.model.scene_memo import SceneMemo
    from tttkd.model.teacher_sums import unit_sums
    from tttkd.pipeline.cache import Cache

    dim = int(Cache.open(cache, read_only=True).meta.teacher["dim"])
    ds = CacheSceneDataset(
        cache,
        "train",
        voxel_size=0.1,
        train=True,
        max_images=4,
        augment_cfg=AugmentConfig(),
        memo=SceneMemo.from_mb(memo_mb),
    )
    out = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        w0, c0 = _clock()
        for i in range(0, len(ds) - 1, 2):
            b = collate_items([ds[i], ds[i + 1]]).batch
            unit_sums(b.teacher_maps, b.corr_point, b.corr_image, b.corr_uv, dim)
        w1, c1 = _clock()
        out.append((w1 - w0, c1 - c0))
    return out


def _train(cache: str, out: Path, memo_mb: int, epochs: int) -> tuple[list, list, dict]:
    """(per-epoch (wall, CPU) seconds, epoch records, final weights) of one training."""
    from safetensors.torch import load_file

    from tttkd.model.config import load_config
    from tttkd.model.train import train

    cfg = load_config(overrides=[*SETS, f"epochs={epochs}", f"runtime.scene_cache_mb={memo_mb}"])
    cfg = replace(cfg, data=replace(cfg.data, val_split=None))
    marks = []  # train echoes once before the first epoch and once after each
    res = train(cfg, cache, out, echo=lambda *_: marks.append(_clock()))
    per_epoch = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    return per_epoch, res.history, load_file(str(out / "last.safetensors"))


def _mean(xs: list[tuple[float, float]]) -> tuple[float, float]:
    return sum(x[0] for x in xs) / len(xs), sum(x[1] for x in xs) / len(xs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="a teacher cache with a train split [default: build one]")
    ap.add_argument("--scenes", type=int, default=8, help="rooms of the built cache")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per training (>= 2)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats (minimum kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cache = args.cache or _cache(tmp, args.scenes)
        from tttkd.pipeline.cache import Cache

        scenes = len(Cache.open(cache, read_only=True).scene_ids("train"))
        steps = -(-scenes // 2)
        print(
            f"cache {cache}: {scenes} training scenes, {steps} steps per epoch; "
            f"{args.epochs} epochs; wall / CPU seconds"
        )
        data = {0: [], 2048: []}
        runs = {0: [], 2048: []}
        weights = {}
        for r in range(args.repeats):
            for mb in (0, 2048):
                data[mb].append(_data_epochs(cache, mb, args.epochs))
                per_epoch, _, weights[mb] = _train(cache, tmp / f"run{r}_{mb}", mb, args.epochs)
                runs[mb].append(per_epoch)
        _report(data, runs, steps)
        same = sorted(weights[0]) == sorted(weights[2048]) and all(
            torch.equal(weights[0][k], weights[2048][k]) for k in weights[0]
        )
        print(f"bit-identical weights with and without the memo: {'yes' if same else 'NO'}")


def _report(data: dict, runs: dict, steps: int) -> None:
    def best(reps: list[list[tuple[float, float]]]) -> tuple[tuple, tuple]:
        first = min((rep[0] for rep in reps), key=lambda x: x[1])
        later = min((_mean(rep[1:]) for rep in reps), key=lambda x: x[1])
        return first, later

    rows = {}
    for name, table in (("data side per epoch", data), ("training epoch", runs)):
        for mb in (0, 2048):
            rows[name, mb] = best(table[mb])
        (f0, l0), (f1, l1) = rows[name, 0], rows[name, 2048]
        print(
            f"{name}: without memo first {f0[0]:.2f} / {f0[1]:.2f}, later {l0[0]:.2f} / "
            f"{l0[1]:.2f}; with memo first {f1[0]:.2f} / {f1[1]:.2f}, later {l1[0]:.2f} / "
            f"{l1[1]:.2f}; later epochs x{l0[1] / l1[1]:.2f} CPU, x{l0[0] / l1[0]:.2f} wall"
        )
    (_, l0), (_, l1) = rows["training epoch", 0], rows["training epoch", 2048]
    print(
        f"training step (later epochs): without memo {l0[0] / steps:.3f} / "
        f"{l0[1] / steps:.3f} s, with memo {l1[0] / steps:.3f} / {l1[1] / steps:.3f} s"
    )
    dl0 = rows["data side per epoch", 0][1][1]
    print(f"data side share of a training epoch without the memo (CPU): {dl0 / l0[1]:.0%}")


if __name__ == "__main__":
    main()
