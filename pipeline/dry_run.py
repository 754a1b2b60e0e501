"""``tttkd-prep --dry-run``: scene count, estimated cache size and expected hours, measured on
a few scenes run through the CPU stage here (nothing is written).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd.pipeline.plan import PrepConfig, SceneJob, estimate_scene_bytes
from tttkd.pipeline.prep_cpu import build_record
from tttkd.pipeline.prep_teacher import get_teacher
from tttkd.pipeline.run_setup import check_images, complete_scenes, list_and_plan


@dataclass
class _Sample:
    """What the dry run measured on the scenes it ran through the CPU stage."""

    bytes: list[int] = field(default_factory=list)  # estimated cache bytes per scene
    cpu_s: list[float] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)  # up to 8 images for the teacher


def _sample_scene(job: SceneJob, teacher: Any, sample: _Sample, echo: Callable) -> None:
    """Run one scene through the CPU stage and add its size and time to ``sample`` (a scene
    that fails is reported and left out)."""
    t0 = time.perf_counter()
    try:
        rec, _, imgs = build_record(job)  # the CPU stage of prep, exactly
    except Exception as e:
        echo(f"  {job.scene_id}: cannot be prepared ({_one_line(e)}); not sampled")
        return
    sample.cpu_s.append(time.perf_counter() - t0)
    n_img = 0 if imgs is None else len(imgs)
    sample.images.append(n_img)
    if imgs is not None:
        sample.pixels.extend(imgs[: max(0, 8 - len(sample.pixels))])
    grid = tuple(rec.attrs["feature_grid"])
    b = estimate_scene_bytes(
        full_points=len(rec.full_label),
        voxels=rec.num_points,
        images=n_img,
        pairs=rec.num_corr,
        grid_hw=grid,
        dim=0 if teacher is None else teacher.spec.dim,
    )
    sample.bytes.append(b)
    echo(
        f"  {job.scene_id}: {len(rec.full_label)} points -> {rec.num_points} stored, "
        f"{n_img} images at grid {grid[0]}x{grid[1]}, {rec.num_corr} pairs: {_mb(b)}; "
        f"CPU stage {sample.cpu_s[-1]:.2f} s"
    )


def dry_run(
    config: PrepConfig,
    echo: Callable[[str], None] = print,
    sample: int = 2,
    workers: int = 1,
) -> dict:
    """Scene count, an estimated (uncompressed) cache size and the expected hours with
    ``workers`` CPU workers, from ``sample`` scenes run through the CPU stage here."""
    check_images(config)
    complete = complete_scenes(config)
    plan = list_and_plan(config, complete if not config.overwrite else set(), None, "")
    n = len(plan.jobs)
    echo(
        f"{config.dataset}: {n + len(plan.skipped)} scenes, {len(plan.skipped)} complete "
        f"already, {n} to prepare"
    )
    if n == 0:
        return {"scenes": 0, "skipped": len(plan.skipped), "bytes": 0}
    teacher = None if config.no_images else get_teacher(SceneJob("", config))
    spec = None if teacher is None else teacher.spec.to_dict()
    measured = _Sample()
    for i in sorted({int(i) for i in np.linspace(0, n - 1, min(sample, n))}):
        job = SceneJob(plan.jobs[i].scene_id, config, teacher_spec=spec)
        _sample_scene(job, teacher, measured, echo)
    if not measured.bytes:
        echo("no sampled scene could be prepared: no estimate (see the reasons above)")
        return {"scenes": n, "skipped": len(plan.skipped), "bytes": 0}
    est = int(np.mean(measured.bytes) * n)
    echo(
        f"estimated cache size: {_mb(est)} uncompressed for {n} scenes "
        f"({_mb(int(np.mean(measured.bytes)))} per scene; zstd typically saves 10-30% on "
        "features)"
    )
    speed = estimate_hours(
        n,
        float(np.mean(measured.images)) * n,
        float(np.mean(measured.cpu_s)),
        teacher,
        measured.pixels,
        workers,
    )
    echo(speed.pop("text"))
    return {"scenes": n, "skipped": len(plan.skipped), "bytes": est, **speed}


def estimate_hours(
    scenes: int,
    images: float,
    cpu_s_per_scene: float,
    teacher: Any,
    sample: list[np.ndarray],
    workers: int,
) -> dict:
    """Expected prep time from speeds measured here: the CPU stage per scene (one worker, on
    the sampled scenes) and the teacher's img/s on the sampled images (after one warm-up
    call). CPU workers run in parallel; the teacher (one per device) runs beside them, so
    the slower of the two bounds the run. Writing is not included."""
    img_s = float("inf")
    if teacher is not None and sample:
        import torch

        shape = sample[0].shape
        batch = [im for im in sample if im.shape == shape]
        teacher.encode(batch[:1], out_dtype=torch.float16)  # warm-up (kernels, allocator)
        t0 = time.perf_counter()
        teacher.encode(batch, out_dtype=torch.float16)
        img_s = len(batch) / (time.perf_counter() - t0)
    scenes_s = workers / max(cpu_s_per_scene, 1e-9)
    cpu_h, teacher_h = scenes / scenes_s / 3600, images / img_s / 3600
    hours = max(cpu_h, teacher_h)
    bound = "the teacher" if teacher_h >= cpu_h else f"the CPU stage ({workers} worker(s))"
    text = (
        f"measured here: CPU stage {scenes_s:.3f} scenes/s with {workers} worker(s), teacher "
        f"{img_s:.1f} img/s ({'no images' if teacher is None else teacher.device}); expected "
        f"{hours:.2f} h for {scenes} scenes and ~{images:.0f} images, bound by {bound} "
        "(writing not included)"
    )
    return {"scenes_per_s": scenes_s, "images_per_s": img_s, "hours": hours, "text": text}


def _one_line(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0]


def _mb(b: int) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"
