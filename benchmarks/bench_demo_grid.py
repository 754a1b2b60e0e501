"""The demo cache's point grid, voxel/2 against the product's voxel/4 (how the demo was sized).

    python -m benchmarks.bench_demo_grid [--views 16] [--train-scenes 0] [--epochs 2]

On the demo's development rooms (seed 0, so the rooms ``make demo`` chooses its lrs on, never
its reported target rooms), prepared at the demo's 10 cm voxel with both point grids:
1. stored points and point-pixel pairs per room;
2. coverage: voxels of ``--views`` random training views per room (rotation about +Z and scale
   drawn as the training augmentation draws them) from the voxel/2 points, as a fraction of
   the voxels of the same view from the voxel/4 points; and whether the unrotated view (TTT,
   evaluation) has exactly the same voxels;
3. with ``--train-scenes N``: CPU seconds (``process_time``, robust to other processes on
   shared cores) of ``--epochs`` joint-training epochs on N source rooms at each grid.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

GRIDS = {"voxel/4": 0.025, "voxel/2": 0.05}
VOXEL = 0.1


def _prep(root: Path, out: Path, point_voxel_size: float) -> str:
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep

    cfg = PrepConfig(dataset="scannet", root=str(root), out=str(out), teacher="randconv-demo",
                     voxel_size=VOXEL, point_voxel_size=point_voxel_size)  # fmt: skip
    if run_prep(cfg, SerialExecutor(), progress=False, echo=lambda *_: None).exit_code:
        raise RuntimeError(f"prep of {root} failed")
    return cfg.out


def _coverage(caches: dict[str, str], views: int) -> None:
    from tttkd.model.augment import PointSet, centre, rotate_z, scale
    from tttkd.model.config import AugmentConfig
    from tttkd.pipeline.cache import Cache
    from tttkd.pipeline.voxelize import voxelize

    aug = AugmentConfig()
    fine, coarse = (Cache.open(caches[k], read_only=True) for k in GRIDS)
    rng = np.random.default_rng(0)
    ratios = []
    for sid in fine.scene_ids():
        recs = [c.read_scene(sid, features=False) for c in (fine, coarse)]
        pts, pairs = [len(r.xyz) for r in recs], [len(r.corr_point) for r in recs]
        print(f"{sid}: points {pts[0]} -> {pts[1]}, pairs {pairs[0]} -> {pairs[1]} (voxel/4 -> 2)")
        sets = [PointSet.points_only(r.xyz, r.rgb, r.label) for r in recs]
        for _ in range(views):
            angle = np.deg2rad(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
            factor = rng.uniform(*aug.scale)
            n = [len(voxelize(scale(rotate_z(centre(ps), angle), factor).xyz, VOXEL).keep)
                 for ps in sets]  # fmt: skip
            ratios.append(n[1] / n[0])
        same = [voxelize(r.xyz, VOXEL).grid_coord for r in recs]
        keys = [np.unique(g.astype(np.int64) @ np.array([1 << 40, 1 << 20, 1])) for g in same]
        print(f"  unrotated view: {len(keys[0])} voxels, the same set at both grids: "
              f"{np.array_equal(*keys)}")  # fmt: skip
    r = np.array(ratios)
    print(f"training-view voxels, voxel/2 / voxel/4: mean {r.mean():.4f}, min {r.min():.4f}, "
          f"max {r.max():.4f} ({len(r)} views)")  # fmt: skip


def _train_cpu(cache: str, out: Path, epochs: int) -> float:
    from tttkd.model.config import load_config
    from tttkd.model.train import train

    cfg = load_config(overrides=[
        "model.arch=minkunet_test", f"epochs={epochs}", "data.batch_size=2", "data.max_images=4",
        "runtime.threads=1", "runtime.num_workers=0", "runtime.progress=false",
    ])  # fmt: skip
    cfg = replace(cfg, data=replace(cfg.data, val_split=None))
    t0 = time.process_time()
    train(cfg, cache, out, echo=lambda *_: None)
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> None:
    import torch

    from tttkd.synthetic.benchmark import write_shift_benchmark

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=16, help="random training views per room")
    p.add_argument("--train-scenes", type=int, default=0, help="source rooms to train on (0: no)")
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench = write_shift_benchmark(tmp / "data", source_scenes=max(1, a.train_scenes),
                                      target_scenes=1, dev_scenes=2)  # fmt: skip
        dev = {k: _prep(bench.dev_root, tmp / f"dev_{k[-1]}.zarr", g) for k, g in GRIDS.items()}
        _coverage(dev, a.views)
        if a.train_scenes:
            for k, g in GRIDS.items():
                src = _prep(bench.source_root, tmp / f"src_{k[-1]}.zarr", g)
                cpu = _train_cpu(src, tmp / f"run_{k[-1]}", a.epochs)
                print(f"{k}: {a.epochs} joint epochs on {a.train_scenes} rooms: {cpu:.1f} CPU s")


if __name__ == "__main__":
    main()
