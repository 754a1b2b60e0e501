"""One adaptation task: some methods over some scenes, from plain inputs to plain records.

Offline methods (their scenes are independent) share one task per scene, so the scene is
read once for all of them; an online method is one task over the whole stream, in order.
A task needs only its :class:`RunSpec` (config, checkpoint path, cache URL, what the driver
resolved) and returns one small JSON-able record per (method, scene): scores, the
confusion to merge, the method's summary, step timings. Scene seeds derive from the scene id,
so a task gives the same record in any process and any order (tested bitwise on CPU).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.evaluation import Evaluator, LabelMapping, full_resolution
from tttkd.adapt.methods import SceneOutcome, make_method
from tttkd.adapt.rotations import rotation_angles
from tttkd.adapt.scenes import SceneData, load_scene
from tttkd.adapt.ttt import synchronize
from tttkd.model.checkpoint import CheckpointInfo, load_checkpoint
from tttkd.model.network import SegKDNet
from tttkd.pipeline.cache import Cache

__all__ = [
    "RunSpec",
    "Task",
    "load_network",
    "longest_first",
    "plan_tasks",
    "run_task",
    "scene_points",
]

OnScene = Callable[[str, str, SceneOutcome], None]


@dataclass(frozen=True)
class RunSpec:
    """What every task of a run needs; small and picklable (no network, no cache handle)."""

    cfg: AdaptConfig
    cache_url: str
    checkpoint: str
    teacher_dim: int | None  # the cache's feature size when a method distils, else None
    backend: str  # resolved once by the driver
    voxel_size: float
    teacher: bool  # read teacher targets with the scenes
    mapping: LabelMapping
    palette: np.ndarray
    out: str | None  # predictions go to out/predictions (cfg.save_predictions)


@dataclass(frozen=True)
class Task:
    """``methods`` over ``scenes`` in order: one scene (offline) or the stream (online)."""

    methods: tuple[str, ...]
    scenes: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{'+'.join(self.methods)}@{self.scenes[0] if len(self.scenes) == 1 else 'stream'}"


def plan_tasks(
    methods: list[str], online: set[str], scenes: list[str], done: set[tuple[str, str]]
) -> list[Task]:
    """Online streams first (the longest tasks), then one task per scene for the offline
    methods; (method, scene) pairs in ``done`` are left out, an unfinished stream redone."""
    tasks = [
        Task((m,), tuple(scenes))
        for m in methods
        if m in online and any((m, s) not in done for s in scenes)
    ]
    for sid in scenes:
        todo = tuple(m for m in methods if m not in online and (m, sid) not in done)
        if todo:
            tasks.append(Task(todo, (sid,)))
    return tasks


def longest_first(tasks: Sequence[Task], points: Callable[[str], int]) -> list[Task]:
    """The order a cluster should start ``tasks`` in: most points first (a stream counts all
    its scenes), ties in plan order. In plan order a large scene may start last and run
    alone while the other workers idle; largest first leaves the short tasks for the end
    (longest-processing-time-first). ``points(scene_id)``: its cached points."""
    return sorted(tasks, key=lambda t: -sum(points(s) for s in t.scenes))


def scene_points(cache: Cache, scene_id: str) -> int:
    """A scene's cached points (its ``counts``; 0 where the cache does not record them)."""
    return int((cache.scene_info(scene_id).get("counts") or {}).get("points", 0))


def _file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=1)
def _cached_network(
    path: str, stamp: tuple[int, int], backend: str | None, device: str, teacher_dim: int | None
) -> tuple[SegKDNet, CheckpointInfo]:
    return load_checkpoint(
        path, backend=backend, device=torch.device(device), expect_teacher_dim=teacher_dim
    )


def load_network(
    checkpoint: str, cfg: AdaptConfig, teacher_dim: int | None
) -> tuple[SegKDNet, CheckpointInfo]:
    """The checkpoint's network, loaded once per process (a worker keeps it across tasks).

    Methods adapt their own deep copy, so sharing it is safe."""
    backend = None if cfg.backend == "auto" else cfg.backend
    path = str(checkpoint)
    return _cached_network(path, _file_stamp(path), backend, cfg.device, teacher_dim)


def _warm_views(net: SegKDNet, scene: SceneData, angles: list[float]) -> float:
    """Build every view's context and kernel maps (one no-grad forward); returns ms."""
    synchronize(scene.device)
    t0 = time.perf_counter()
    was = net.training
    net.eval()
    with torch.no_grad():
        for a in angles:
            view = scene.view(a)
            net.features(view.feats, view.context)
    net.train(was)
    synchronize(scene.device)
    return (time.perf_counter() - t0) * 1e3


def run_task(spec: RunSpec, task: Task, on_scene: OnScene | None = None) -> list[dict[str, Any]]:
    """Run ``task``; one record per (method, scene), in task order (see module doc)."""
    cfg = spec.cfg
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    net, _ = load_network(spec.checkpoint, cfg, spec.teacher_dim)
    cache = Cache.open(spec.cache_url, read_only=True)
    methods = {m: make_method(m, net, cfg) for m in task.methods}
    angles = rotation_angles(cfg.rotations)
    records = []
    for sid in task.scenes:
        scene = load_scene(
            cache,
            sid,
            device=device,
            backend=spec.backend,
            max_images=cfg.max_images,
            seed=cfg.seed,
            voxel_size=spec.voxel_size,
            teacher=spec.teacher,
        )
        load = {
            "read_seconds": scene.read_seconds,
            "view_build_ms": _warm_views(net, scene, angles),
        }
        target = scene.record.full_label
        for name, method in methods.items():
            synchronize(device)
            outcome = method.process(scene)
            synchronize(device)
            pred_full = full_resolution(
                outcome.logits.argmax(1).numpy(), scene.record.voxel_of_point
            )
            evaluator = Evaluator(spec.mapping)
            scores = evaluator.add(pred_full, target)
            if spec.out is not None and cfg.save_predictions:
                from tttkd.adapt.export import save_prediction

                save_prediction(
                    Path(spec.out), name, scene, pred_full, ply=cfg.save_ply, palette=spec.palette
                )
            if on_scene is not None:
                on_scene(name, sid, outcome)
            records.append(
                {
                    "method": name,
                    "scene": sid,
                    "record": {**scores, **outcome.summary()},
                    "confusion": evaluator.confusion.tolist(),
                    "step_ms": list(outcome.step_ms),
                    **load,
                    "pid": os.getpid(),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                }
            )
            load = {"read_seconds": 0.0, "view_build_ms": 0.0}  # counted once per scene read
        scene.drop_views()
    return records
