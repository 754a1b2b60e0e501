"""The demo's pictures: a top-down render of one target room (ground truth, Source-Only,
TTT-KD), the per-class IoU, and TTT-KD's mIoU against its number of steps (its sweep runs as
soon as the joint model is adapted, while other models may still train)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tttkd.adapt.config import AdaptConfig
    from tttkd.demo import DemoSettings
    from tttkd.demo_report import TargetRuns

__all__ = ["make_pictures", "steps_sweep"]


def make_pictures(out: Path, runs: TargetRuns, caches: dict[str, str]) -> dict[str, Path | None]:
    """The pictures by name (the steps sweep's figure was drawn by :func:`steps_sweep`)."""
    return {
        "topdown": _topdown(out, caches["target"], runs.joint),
        "class_iou": out / "adapt" / "joint" / "class_iou.png",
        "miou_vs_steps": next(iter(sorted((out / "sweep").glob("*.png"))), None),
    }


def steps_sweep(
    out: Path,
    s: DemoSettings,
    base: AdaptConfig,
    joint: dict,
    target_cache: str,
    checkpoint: Path,
    executor: Any = None,
) -> list:
    """TTT-KD's mIoU on the target rooms at each of ``s.sweep_steps`` (``SweepPoint`` rows,
    CSV and figure under ``out/sweep``); ``joint`` is the stage-5 result of ``base``."""
    from tttkd.adapt.sweep import run_sweeps

    # the point at s.steps is the TTT-KD run of stage 5 (same config, seeds and scenes): reused
    rows = run_sweeps(
        replace(base, methods=("ttt-kd",), save_predictions=False),
        target_cache,
        str(checkpoint),
        out / "sweep",
        ["steps"],
        values={"steps": [v for v in s.sweep_steps if v != s.steps]},
        echo=lambda *_: None,
        executor=executor,
    )
    if s.steps in s.sweep_steps:
        rows = _with_point(rows, joint, s.steps, out / "sweep")
    return rows


def _with_point(rows: list, joint: dict, steps: int, out: Path) -> list:
    """The steps sweep plus its ``steps`` point taken from the stage-5 TTT-KD run; CSV and
    figure rewritten."""
    from tttkd.adapt.sweep import SweepPoint, plot_sweeps, write_sweep_csv

    res = joint["methods"]["ttt-kd"]
    t = res["timing"]
    point = SweepPoint(
        "steps", float(steps), "ttt-kd", res["overall"]["miou"], res["overall"]["accuracy"],
        t["scenes_per_s"], t["ms_per_step"], joint["config"]["momentum"], steps,
    )  # fmt: skip
    rows = sorted(rows + [point], key=lambda r: (r.sweep != "source", float(r.steps or 0)))
    write_sweep_csv(rows, out / "sweep.csv")
    plot_sweeps(rows, out)
    return rows


def _topdown(out: Path, cache_url: str, joint: dict) -> Path:
    from tttkd.adapt.export import prediction_path
    from tttkd.adapt.topdown import plot_topdown
    from tttkd.core import get_label_set
    from tttkd.pipeline.cache import Cache

    cache = Cache.open(cache_url, read_only=True)
    scene = joint["scenes"][0]
    rec = cache.read_points(scene)
    xyz = rec.xyz[rec.voxel_of_point]
    labels = get_label_set(cache.meta.label_set)
    src_pred = np.load(prediction_path(out / "adapt" / "source_only", "source", scene))
    ttt_pred = np.load(prediction_path(out / "adapt" / "joint", "ttt-kd", scene))
    ignore = rec.full_label < 0  # the ceiling is not a ScanNet class: hide it everywhere
    panels = [
        ("ground truth", rec.full_label),
        ("source-only", np.where(ignore, -1, src_pred)),
        ("TTT-KD", np.where(ignore, -1, ttt_pred)),
    ]
    return plot_topdown(
        xyz, panels, labels.palette(), out / "topdown.png", class_names=labels.class_names
    )
