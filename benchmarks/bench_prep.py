"""Prep benchmarks, printed as ratios measured in one run (issue 3, "Performance").

1. Voxelize + correspond throughput (input points per second) of ``tttkd.pipeline`` against a
   straightforward numpy baseline (``np.unique(grid, axis=0)`` voxelization, then a per-image
   loop that projects every voxel point in float64 and tests the depth), on a synthetic room
   (``tttkd.synthetic``) with ScanNet-like density, image and depth sizes.
2. End to end (issue 12): N ScanNet-format rooms with full-size 1296x968 colour frames, the
   teacher built from random weights written to a local file first (as a user's weights
   are loaded); img/s and scenes/s of the whole prep (CPU stage, teacher, write) for each
   setting (``serial`` or WORKERSxGPUS), against the encoder alone (preprocessed batch) and
   ``Teacher.encode`` (uint8 in, fp16 out) measured in the same run.

Run on a GPU: ``python -m benchmarks.bench_prep --device cuda --teacher dinov2_vitl14
--skip-geometry`` (settings 1x1 8x1 15x1). On CPU: ``python -m benchmarks.bench_prep --quick``
(tiny teacher, 324x242 frames, ``serial`` and ``1x0``).
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
    from tttkd.core import scale_intrinsics
    from tttkd.pipeline.correspond import View
    from tttkd.synthetic.render import Camera, place_cameras, render
    from tttkd.synthetic.room import make_room, sample_points

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


# ---- 2. end to end: CPU workers feeding one teacher per GPU --------------------------------
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _warm(job) -> int:
    """Build this process's teacher before timing (imports and weights are not scene work)."""
    import os

    from tttkd.pipeline.prep_scene import get_teacher

    get_teacher(job)
    return os.getpid()


def write_random_weights(teacher: str, path: Path) -> Path:
    """Seeded random weights saved as a plain state dict, loaded back as a user's file is."""
    import torch

    from tttkd.pipeline.teacher import load_teacher

    t = load_teacher(teacher, random_init=True)
    torch.save(t.module.vit.state_dict(), path)
    return path


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_encoder(teacher, image_hw: tuple[int, int], batches: list[int], reps: int) -> dict:
    """Encoder alone (preprocessed input, bf16 on CUDA) and ``Teacher.encode`` (uint8 in,
    resize on the device, fp16 out) in img/s, per batch size."""
    import contextlib

    import numpy as np
    import torch

    dev = teacher.device
    h, w = teacher.input_size(*image_hw)
    cast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else contextlib.nullcontext()
    )
    out = {}
    rng = np.random.default_rng(0)
    for b in batches:
        x = torch.randn(b, 3, h, w, device=dev)
        images = [rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8) for _ in range(b)]
        old, teacher.batch_size = teacher.batch_size, b
        with torch.inference_mode(), cast:
            teacher.module(x)  # warm-up
            _sync(dev)
            t = time.perf_counter()
            for _ in range(reps):
                teacher.module(x)
            _sync(dev)
            raw = b * reps / (time.perf_counter() - t)
        teacher.encode(images, out_dtype=torch.float16)
        t = time.perf_counter()
        for _ in range(reps):
            teacher.encode(images, out_dtype=torch.float16)
        enc = b * reps / (time.perf_counter() - t)
        teacher.batch_size = old
        out[b] = {"encoder_img_s": raw, "encode_img_s": enc}
        print(f"  batch {b:>3}: encoder alone {raw:8.1f} img/s, Teacher.encode {enc:8.1f} img/s")
    return out


def _write_room(root: Path, i: int, wh: tuple[int, int], views: int) -> str:
    from tttkd.synthetic.room import make_room
    from tttkd.synthetic.scannet_writer import write_scannet_scene

    sid = f"scene{i:04d}_00"
    room = make_room(i, name=sid, furniture=("bed", "bookshelf", "table", "chair", "cabinet"))
    frames = ("exported",)
    write_scannet_scene(root, sid, room, seed=i, frames=frames, image_size=wh, views=views)
    return sid


def write_rooms(root: Path, n: int, wh: tuple[int, int], views: int) -> list[str]:
    """n ScanNet-format rooms (exported frames: colour at full size), rendered in parallel
    processes (rendering full-size frames is the slow part), plus the label map and splits."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tttkd.synthetic.scannet_writer import write_tsv

    root.mkdir(parents=True, exist_ok=True)
    procs = max(1, min(n, (os.cpu_count() or 1)))
    with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
        ids = list(pool.map(_write_room, [root] * n, range(n), [wh] * n, [views] * n))
    write_tsv(root)
    (root / "scannetv2_train.txt").write_text("".join(f"{s}\n" for s in ids))
    return ids


def _setting(text: str) -> tuple[int | None, int]:
    if text == "serial":
        return None, 0
    workers, _, gpus = text.partition("x")
    return int(workers), int(gpus or 0)


def bench_end_to_end(args, workdir: Path) -> dict:
    from tttkd.pipeline.executors import DaskExecutor, SerialExecutor
    from tttkd.pipeline.plan import PrepConfig, make_plan
    from tttkd.pipeline.prep_scene import _TEACHERS, get_teacher
    from tttkd.pipeline.run import build_meta, open_cache, task_images, teacher_record

    wh = tuple(int(v) for v in args.image_wh.split("x"))
    root = workdir / "scannet"
    t0 = time.perf_counter()
    write_rooms(root, args.scenes, wh, args.views)
    print(
        f"\nend to end: {args.scenes} ScanNet-format rooms, {args.views} frames each at "
        f"{wh[0]}x{wh[1]} (written in {time.perf_counter() - t0:.1f} s); teacher "
        f"{args.teacher} on {args.device}, random weights from a local file"
    )
    weights = None
    if args.teacher != "test_vit_tiny":
        weights = str(write_random_weights(args.teacher, workdir / f"{args.teacher}.pth"))
    base = dict(
        dataset="scannet", root=str(root), teacher=args.teacher, teacher_weights=weights,
        image_size=args.image_size, device=args.device, batch_size=args.batch_size,
        images_per_task=args.images_per_task, reader_options={"frames": "exported"},
        compile_teacher=args.compile,
    )  # fmt: skip
    probe = get_teacher(make_plan(PrepConfig(out=str(workdir / "p.zarr"), **base), ["x"]).jobs[0])
    print(f"  teacher input {probe.input_size(wh[1], wh[0])} for {wh[0]}x{wh[1]} frames")
    enc = bench_encoder(probe, (wh[1], wh[0]), args.encoder_batches, args.reps)
    _TEACHERS.clear()
    del probe
    out: dict = {"encoder": enc, "settings": {}}
    for text in args.settings:
        workers, gpus = _setting(text)
        config = PrepConfig(out=str(workdir / f"{text}.zarr"), **base)
        teacher = teacher_record(config)
        cache = open_cache(config, build_meta(config, teacher))
        scenes = sorted(p.name for p in (root / "scans").iterdir())
        jobs = make_plan(config, scenes, set(), teacher_spec=teacher, run_id=text).jobs
        if workers is None:
            ex = SerialExecutor()
        else:
            _TEACHERS.clear()
            ex = DaskExecutor(workers, gpus=gpus, memory_limit=args.memory_limit, echo=print)
        with ex:
            if workers is None:
                _warm(jobs[0])
            else:
                ex.client.submit(_warm, jobs[0], resources=ex.resources.teacher).result()
            t = time.perf_counter()
            results = list(ex.prep(jobs, task_images(config, ex)))
            dt = time.perf_counter() - t
            rss = {0: _peak_rss_mb()} if workers is None else ex.client.run(_peak_rss_mb)
        bad = [r for r in results if r.status != "done"]
        assert not bad, bad
        assert len(cache.scene_ids()) == args.scenes
        n_img = sum(r.images for r in results)
        out["settings"][text] = {
            "seconds": dt,
            "images": n_img,
            "img_s": n_img / dt,
            "scenes_s": args.scenes / dt,
            "teacher_processes": len({r.teacher_pid for r in results}),
            "peak_rss_mb": sorted(rss.values()),
        }
        print(
            f"  {text:>7}: {n_img / dt:8.2f} img/s, {args.scenes / dt:6.3f} scenes/s "
            f"({dt:.1f} s, {n_img} images); teacher processes: "
            f"{out['settings'][text]['teacher_processes']}; peak RSS per process "
            f"{', '.join(f'{m:.0f}' for m in out['settings'][text]['peak_rss_mb'])} MiB"
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test on CPU)")
    p.add_argument("--skip-geometry", action="store_true")
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument("--device", default="cpu", help="teacher device: cpu or cuda")
    p.add_argument("--teacher", default=None, help="default: dinov2_vitl14 (test_vit_tiny quick)")
    p.add_argument("--image-size", type=int, default=None, help="teacher short side (448)")
    p.add_argument("--image-wh", default=None, help="colour frames WxH (default 1296x968)")
    p.add_argument("--scenes", type=int, default=None, help="rooms (default 16, quick 4)")
    p.add_argument("--views", type=int, default=None, help="frames per room (default 16)")
    p.add_argument("--batch-size", type=int, default=None, help="default: from free memory")
    p.add_argument("--images-per-task", type=int, default=64)
    p.add_argument("--compile", action="store_true", help="torch.compile the teacher")
    p.add_argument("--encoder-batches", type=int, nargs="+", default=None, help="8 32")
    p.add_argument("--reps", type=int, default=None, help="encoder timing repeats")
    p.add_argument("--memory-limit", default="auto")
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        help="serial and/or WORKERSxGPUS, e.g. serial 4x0 (default on cuda: 1x1 8x1 15x1)",
    )
    args = p.parse_args(argv)
    quick, cuda = args.quick, args.device.startswith("cuda")
    args.teacher = args.teacher or ("test_vit_tiny" if quick else "dinov2_vitl14")
    args.image_wh = args.image_wh or ("324x242" if quick else "1296x968")
    args.scenes = args.scenes or (4 if quick else 16)
    args.views = args.views or (3 if quick else 16)
    args.encoder_batches = args.encoder_batches or ([2] if quick else [8, 32])
    args.reps = args.reps or (2 if quick else 10)
    args.settings = args.settings or (
        ["1x1", "8x1", "15x1"] if cuda else (["serial", "1x0"] if quick else ["serial", "2x0"])
    )
    if args.batch_size is None and not cuda:
        args.batch_size = 8
    import os

    print(f"bench_prep: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    res: dict = {}
    if not args.skip_geometry:
        res["geometry"] = bench_geometry(quick)
    if not args.skip_end_to_end:
        with tempfile.TemporaryDirectory() as d:
            res["end_to_end"] = bench_end_to_end(args, Path(d))
    parts = []
    if "geometry" in res:
        parts.append(f"voxelize+correspond {res['geometry']['speedup']:.1f}x the numpy baseline")
    if "end_to_end" in res:
        e = res["end_to_end"]
        best_enc = max(v["encoder_img_s"] for v in e["encoder"].values())
        for k, v in e["settings"].items():
            parts.append(
                f"{k}: {v['img_s']:.1f} img/s = {v['img_s'] / best_enc:.2f}x the encoder alone"
            )
    print(f"\nsummary: {'; '.join(parts)} ({time.perf_counter() - t0:.0f} s)")
    return res


if __name__ == "__main__":
    main()
