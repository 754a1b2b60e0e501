"""What the issue-14 baselines cost next to TTT-KD, at the demo's sizes (how the demo was sized).

    python benchmarks/bench_baselines.py [--source-scenes 4] [--target-scenes 2] [--steps 10]

On the synthetic shift benchmark (real prep, 10 cm voxels, ``minkunet_test``, batch 2, one
torch thread, as ``make demo``):
1. seconds per training epoch of L_Y + L_2D (the joint baseline), L_Y + L_2D + L_MAE (the
   joint model with the MAE head) and L_Y + L_MAE (the paper's TTT-MAE model), as ratios to
   the joint epoch of the same run;
2. ms per TTT step of ``ttt-mae`` vs ``ttt-kd``, and seconds per scene of ``adacontrast``.
Minimum over ``--repeats`` (interleaved): other processes may share these cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def _caches(tmp: Path, source: int, target: int) -> tuple[str, str]:
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.benchmark import write_shift_benchmark

    bench = write_shift_benchmark(tmp / "data", source_scenes=source, target_scenes=target)
    out = []
    for name, root in (("source", bench.source_root), ("target", bench.target_root)):
        cfg = PrepConfig(dataset="scannet", root=str(root), out=str(tmp / f"{name}.zarr"),
                         teacher="randconv-demo", voxel_size=0.1)  # fmt: skip
        if run_prep(cfg, SerialExecutor(), progress=False, echo=lambda *_: None).exit_code:
            raise RuntimeError(f"prep of {name} failed")
        out.append(cfg.out)
    return out[0], out[1]


def _epoch_seconds(cache: str, out: Path, sets: list[str]) -> float:
    """One training epoch (checkpoint write included), as ``make demo`` runs it."""
    from tttkd.model.config import load_config
    from tttkd.model.train import train

    cfg = load_config(overrides=[
        "model.arch=minkunet_test", "epochs=2", "data.batch_size=2", "data.max_images=4",
        "runtime.threads=1", "runtime.num_workers=0", "runtime.progress=false",
        "runtime.tensorboard=false", *sets,
    ])  # fmt: skip
    cfg = replace(cfg, data=replace(cfg.data, val_split=None))
    t0 = time.perf_counter()
    train(cfg, cache, out, stop_after_epochs=1, echo=lambda *_: None)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-scenes", type=int, default=8)
    ap.add_argument("--target-scenes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from tttkd.adapt.config import AdaptConfig
    from tttkd.adapt.runner import run_adaptation

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        source, target = _caches(tmp, args.source_scenes, args.target_scenes)
        mae = ["loss.ssl=mae", "loss.mae_patch_size=0.5"]
        recipes = {
            "L_Y + L_2D (joint)": ["loss.kd=true"],
            "L_Y + L_2D + L_MAE": ["loss.kd=true", *mae],
            "L_Y + L_MAE": ["loss.kd=false", *mae],
        }
        secs = dict.fromkeys(recipes, float("inf"))
        for r in range(args.repeats):  # interleaved, so a busy spell hits every recipe alike
            for i, (k, v) in enumerate(recipes.items()):
                secs[k] = min(secs[k], _epoch_seconds(source, tmp / f"run{i}" / str(r), v))
        base = secs["L_Y + L_2D (joint)"]
        for k, s in secs.items():
            print(f"train epoch, {k}: {s:.2f} s ({s / base:.2f}x joint)")
        ckpt = tmp / "run1" / "0" / "last.safetensors"  # the joint model with the MAE head
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            cfg = AdaptConfig(methods=("ttt-kd", "ttt-mae", "adacontrast"), steps=args.steps,
                              lr=0.3, threads=1)  # fmt: skip
            res = run_adaptation(cfg, target, ckpt, progress=False, echo=lambda *_: None)
            for m, r in res.to_dict()["methods"].items():
                t = r["timing"]
                value = t["ms_per_step"] if t["ms_per_step"] else t["seconds"]
                times.setdefault(m, []).append(value / (1 if t["ms_per_step"] else 1e-3))
        kd = min(times["ttt-kd"])
        print(f"ttt-kd: {kd:.1f} ms/step")
        print(f"ttt-mae: {min(times['ttt-mae']):.1f} ms/step ({min(times['ttt-mae']) / kd:.2f}x)")
        ac = min(times["adacontrast"]) / args.target_scenes
        print(f"adacontrast: {ac:.0f} ms/scene ({ac / kd:.1f} ttt-kd steps)")


if __name__ == "__main__":
    main()
