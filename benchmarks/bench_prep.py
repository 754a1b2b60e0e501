"""Prep benchmarks, printed as ratios measured in one run (issue 3, "Performance").

1. Voxelize + correspond throughput (input points per second) of ``tttkd.pipeline`` against a
   straightforward numpy baseline (``np.unique(grid, axis=0)`` voxelization, then a per-image
   loop that projects every voxel point in float64 and tests the depth), on a synthetic room
   (``tttkd.pipeline.synthetic``) with ScanNet-like density, image and depth sizes.
2. Scaling from 1 to 2 Dask worker processes (scenes/s, peak RSS per worker) on exact-format
   synthetic ScanNet scenes with the tiny test teacher.

Run: ``python -m benchmarks.bench_prep`` (or ``python benchmarks/bench_prep.py``); default
runtime is about 1-2 minutes on 2 cores. ``--quick`` shrinks everything (smoke test).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


# ---- 1. voxelize + correspond ------------------------------------------------------------
def baseline_voxelize_correspond(xyz, voxel_size, views, abs_tol, rel_tol):
    """The reference a first implementation would write (kept deliberately plain)."""
    grid = np.floor(xyz.astype(np.float64) / voxel_size).astype(np.int64)
    _, keep, _ = np.unique(grid, axis=0, return_index=True, return_inverse=True)
    pts = xyz[keep].astype(np.float64)
    homo = np.concatenate([pts, np.ones((len(pts), 1))], axis=1)
    pairs = []
    for i, v in enumerate(views):
        cam = homo @ np.linalg.inv(v.c2w).T
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = v.K[0, 0] * cam[:, 0] / z + v.K[0, 2]
            w = v.K[1, 1] * cam[:, 1] / z + v.K[1, 2]
            ud = v.depth_K[0, 0] * cam[:, 0] / z + v.depth_K[0, 2]
            wd = v.depth_K[1, 1] * cam[:, 1] / z + v.depth_K[1, 2]
        iu, iv = np.round(u), np.round(w)
        ok = (z > 0) & (iu >= 0) & (iu < v.width) & (iv >= 0) & (iv < v.height)
        du, dv = np.round(ud), np.round(wd)
        hd, wd_ = v.depth.shape
        ok &= (du >= 0) & (du < wd_) & (dv >= 0) & (dv < hd)
        idx = np.flatnonzero(ok)
        d = v.depth[dv[idx].astype(int), du[idx].astype(int)]
        vis = (d > 0) & (np.abs(d - z[idx]) <= abs_tol + rel_tol * d)
        idx = idx[vis]
        pairs.append((idx, np.full(len(idx), i), np.stack([u[idx], w[idx]], 1)))
    return keep, pairs


def ours_voxelize_correspond(xyz, voxel_size, views, cfg):
    from tttkd.pipeline.correspond import correspond
    from tttkd.pipeline.voxelize import voxelize

    vox = voxelize(xyz, voxel_size)
    return vox.keep, correspond(xyz[vox.keep], views, cfg)


def make_room_views(n_views: int, spacing: float, color_wh, depth_wh, seed: int = 0):
    from tttkd.pipeline.correspond import View
    from tttkd.pipeline.scene import scale_intrinsics
    from tttkd.pipeline.synthetic.render import Camera, place_cameras, render
    from tttkd.pipeline.synthetic.room import make_room, sample_points

    room = make_room(seed, furniture=("bed", "bookshelf", "table", "chair", "cabinet"))
    xyz, _, _ = sample_points(room, spacing=spacing, seed=seed)
    cams = place_cameras(room, n_views, width=color_wh[0], height=color_wh[1], seed=seed)
    views = []
    for cam in cams:
        Kd = scale_intrinsics(cam.K, *color_wh, *depth_wh)
        _, depth, _ = render(room, Camera(Kd, cam.c2w, *depth_wh))
        views.append(View(cam.K, cam.c2w, color_wh[0], color_wh[1], depth=depth, depth_K=Kd))
    return xyz, views


def bench_geometry(quick: bool) -> dict:
    from tttkd.pipeline.correspond import CorrespondConfig

    spacing, n_views = (0.03, 6) if quick else (0.02, 20)
    color_wh, depth_wh = ((324, 242), (160, 120)) if quick else ((1296, 968), (640, 480))
    t0 = time.perf_counter()
    xyz, views = make_room_views(n_views, spacing, color_wh, depth_wh)
    print(
        f"scene: {len(xyz):,} points, {len(views)} views {color_wh} colour, {depth_wh} depth "
        f"(rendered in {time.perf_counter() - t0:.1f} s)"
    )
    cfg = CorrespondConfig()
    reps = 2 if quick else 5
    t_ours, t_base = [], []
    for _ in range(reps):  # interleaved, best of n: robust to other load on the machine
        t = time.perf_counter()
        keep, c = ours_voxelize_correspond(xyz, 0.04, views, cfg)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        keep_b, pairs = baseline_voxelize_correspond(
            xyz, 0.04, views, cfg.depth_abs_tol, cfg.depth_rel_tol
        )
        t_base.append(time.perf_counter() - t)
    n_pairs_base = sum(len(p[0]) for p in pairs)
    print(
        f"  voxels {len(keep):,}; pairs ours {c.num_pairs:,}, baseline {n_pairs_base:,} "
        f"(ours: nearest-centre point; baseline: first point; same voxels: "
        f"{len(keep) == len(keep_b)})"
    )
    ours, base = min(t_ours), min(t_base)
    print(
        f"  voxelize+correspond: ours {len(xyz) / ours / 1e6:.2f} M points/s ({ours:.3f} s), "
        f"baseline {len(xyz) / base / 1e6:.2f} M points/s ({base:.3f} s): {base / ours:.1f}x"
    )
    return {"points": len(xyz), "ours_s": ours, "baseline_s": base, "speedup": base / ours}


# ---- 2. worker scaling -------------------------------------------------------------------
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _warm(job) -> int:
    """Build this worker's teacher before timing (imports and weights are not scene work)."""
    import os

    from tttkd.pipeline.prep_scene import get_teacher

    get_teacher(job)
    return os.getpid()


def bench_scaling(quick: bool, workdir: Path) -> dict:
    from tttkd.pipeline.executors import DaskExecutor
    from tttkd.pipeline.plan import PrepConfig, make_plan
    from tttkd.pipeline.prep_scene import prep_scene
    from tttkd.pipeline.run import build_meta, open_cache, teacher_record
    from tttkd.pipeline.synthetic.scannet_writer import write_scannet_dataset

    n_scenes = 4 if quick else 12
    root = workdir / "scannet"
    t0 = time.perf_counter()
    write_scannet_dataset(
        root, n_scenes, frames=("exported",), splits=["train"] * n_scenes,
        image_size=(240, 180), views_per_scene=5,
    )  # fmt: skip
    print(
        f"\nscaling: {n_scenes} synthetic ScanNet scenes written in "
        f"{time.perf_counter() - t0:.1f} s (240x180 colour, 5 views, tiny ViT teacher at 448)"
    )
    out = {}
    for n in (1, 2):
        config = PrepConfig(
            dataset="scannet", root=str(root), out=str(workdir / f"w{n}.zarr"),
            teacher="test_vit_tiny", image_size=448, reader_options={"frames": "exported"},
        )  # fmt: skip
        cache = open_cache(config, build_meta(config, teacher_record(config)))
        jobs = make_plan(config, sorted(p.name for p in (root / "scans").iterdir())).jobs
        with DaskExecutor(n, memory_limit="3GB", echo=lambda s: None) as ex:
            ex.client.run(_warm, jobs[0])
            t = time.perf_counter()
            futures = ex.client.map(prep_scene, jobs, pure=False)
            results = ex.client.gather(futures)
            dt = time.perf_counter() - t
            rss = ex.client.run(_peak_rss_mb)
        bad = [r for r in results if r.status != "done"]
        assert not bad, bad
        assert len(cache.scene_ids()) == n_scenes
        out[n] = {"seconds": dt, "scenes_s": n_scenes / dt, "rss_mb": sorted(rss.values())}
        print(
            f"  {n} worker(s): {n_scenes / dt:.2f} scenes/s ({dt:.1f} s); peak RSS per "
            f"worker: {', '.join(f'{m:.0f} MiB' for m in out[n]['rss_mb'])}"
        )
    ratio = out[2]["scenes_s"] / out[1]["scenes_s"]
    print(f"  scaling 1 -> 2 workers: {ratio:.2f}x scenes/s")
    out["ratio"] = ratio
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--skip-scaling", action="store_true")
    args = p.parse_args(argv)
    import os

    print(f"bench_prep: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    res = {"geometry": bench_geometry(args.quick)}
    if not args.skip_scaling:
        with tempfile.TemporaryDirectory() as d:
            res["scaling"] = bench_scaling(args.quick, Path(d))
    print(
        f"\nsummary: voxelize+correspond {res['geometry']['speedup']:.1f}x the numpy baseline"
        + (
            f"; 1 -> 2 Dask workers {res['scaling']['ratio']:.2f}x scenes/s"
            if "scaling" in res
            else ""
        )
        + f" ({time.perf_counter() - t0:.0f} s)"
    )
    return res


if __name__ == "__main__":
    main()
