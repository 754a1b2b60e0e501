"""``tttkd-adapt``'s library entry: several methods over one stream of scenes, scored.

Each scene is read from the cache once (points, a seeded image subset, teacher targets
sampled once on the device); its views (one per rotation: voxel coordinates, sparse context,
kernel maps) are built once and warmed by one forward pass, and then every method processes
it in turn. Methods keep their own weights, so online methods see the stream in order while
offline ones reset per scene. Scores are at full resolution on the cache's labels.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tttkd
from tttkd.adapt.config import AdaptConfig, AdaptConfigError
from tttkd.adapt.evaluation import Evaluator, LabelMapping, full_resolution, label_mapping
from tttkd.adapt.methods import METHODS, Method, SceneOutcome, make_method
from tttkd.adapt.rotations import rotation_angles
from tttkd.adapt.scenes import SceneData, load_scene
from tttkd.adapt.ttt import synchronize
from tttkd.model.checkpoint import CheckpointError, CheckpointInfo, load_checkpoint
from tttkd.model.network import SegKDNet
from tttkd.model.sparse.select import backend_line, resolve_backend
from tttkd.pipeline.cache import Cache

__all__ = [
    "AdaptResult",
    "check_teacher",
    "network_voxel_size",
    "run_adaptation",
    "select_scenes",
    "selection_overlap",
]

_TEACHER_KEYS = ("name", "arch", "weights_sha256", "dim", "tokens")


@dataclass
class AdaptResult:
    """Everything ``results.json`` holds; ``methods[name]`` has overall, scenes, timing."""

    config: dict[str, Any]
    cache: dict[str, Any]
    checkpoint: dict[str, Any]
    evaluation: dict[str, Any]
    scenes: list[str]
    methods: dict[str, dict[str, Any]]
    timing: dict[str, Any]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    tttkd_version: str = tttkd.__version__

    def to_dict(self) -> dict[str, Any]:
        return {
            "tttkd_version": self.tttkd_version,
            "config": self.config,
            "cache": self.cache,
            "checkpoint": self.checkpoint,
            "evaluation": self.evaluation,
            "class_names": self.class_names,
            "scenes": self.scenes,
            "methods": self.methods,
            "timing": self.timing,
            "notes": self.notes,
        }


def check_teacher(info: CheckpointInfo, cache: Cache) -> list[str]:
    """Refuse a cache made by another teacher than the one ``rho_2D`` was trained on.

    Returns notes on harmless differences (e.g. another input resolution).
    """
    mine, theirs = info.teacher_spec, cache.meta.teacher
    diffs = [k for k in _TEACHER_KEYS if k in mine and k in theirs and mine[k] != theirs[k]]
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {mine[k]!r} vs cache {theirs[k]!r}" for k in diffs)
        raise CheckpointError(
            f"the checkpoint's distillation head was trained on another teacher than the one "
            f"that made the cache {cache.url} ({detail}); rebuild the cache with the "
            "checkpoint's teacher (tttkd-prep --teacher ...) or use a checkpoint trained on "
            "this cache's teacher"
        )
    notes = []
    if mine.get("image_size") != theirs.get("image_size"):
        notes.append(
            f"teacher input size differs: checkpoint {mine.get('image_size')}, cache "
            f"{theirs.get('image_size')}"
        )
    return notes


def network_voxel_size(info: CheckpointInfo, cache: Cache) -> tuple[float, list[str]]:
    """The voxel size the network was trained at (its resolved config), else the cache's."""
    trained = (info.config.get("data") or {}).get("voxel_size")
    size = float(trained) if trained else float(cache.meta.voxel_size)
    if size < cache.meta.voxel_size * (1 - 1e-6):
        raise AdaptConfigError(
            f"the network was trained at {size} m voxels but the cache {cache.url} holds "
            f"{cache.meta.voxel_size} m voxels; rebuild the cache with tttkd-prep "
            f"--voxel-size {size}"
        )
    notes = []
    if abs(size - cache.meta.voxel_size) > 1e-9:
        notes.append(
            f"scenes re-voxelized at the network's {size} m (cache: {cache.meta.voxel_size} m)"
        )
    return size, notes


def selection_overlap(info: CheckpointInfo, scene_ids: list[str]) -> list[str]:
    """The scenes to score that chose the checkpoint (its ``selected_on``), in stream order."""
    chosen = set(info.selected_on or ())
    return [s for s in scene_ids if s in chosen]


def select_scenes(cache: Cache, cfg: AdaptConfig) -> list[str]:
    """The scenes to adapt on, in stream order: ``cfg.scenes`` as given, else a split, sorted."""
    from tttkd.pipeline.cache_integrity import warn_incomplete

    warn_incomplete(cache)  # skipped scenes are counted, never silent
    available = cache.scene_ids()
    if cfg.scenes:
        missing = [s for s in cfg.scenes if s not in set(available)]
        if missing:
            raise AdaptConfigError(
                f"scene(s) {missing} are not complete in the cache {cache.url}; "
                f"it has {len(available)} scenes (list them with tttkd-prep inspect)"
            )
        return list(cfg.scenes)
    ids = cache.scene_ids(cfg.split) if cfg.split else available
    if not ids:
        splits = sorted({str(cache.scene_info(s).get("split")) for s in available})
        raise AdaptConfigError(
            f"no scene of split {cfg.split!r} in the cache {cache.url}; its splits: {splits}"
        )
    return ids


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


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


def _save_prediction(
    out: Path, method: str, scene: SceneData, pred: np.ndarray, ply: bool, palette: np.ndarray
) -> None:
    from tttkd.adapt.export import save_prediction

    save_prediction(out, method, scene, pred, ply=ply, palette=palette)


def run_adaptation(
    cfg: AdaptConfig,
    cache_url: str,
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    on_scene: Callable[[str, str, SceneOutcome], None] | None = None,
) -> AdaptResult:
    """Adapt and score every selected scene with every method of ``cfg``."""
    for name in cfg.methods:
        if name not in METHODS:
            raise AdaptConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, cache_url, checkpoint, out, echo, progress, on_scene)
    finally:
        torch.set_num_threads(threads)


def _run(
    cfg: AdaptConfig,
    cache_url: str,
    checkpoint: str | Path,
    out: str | Path | None,
    echo: Callable[[str], None],
    progress: bool,
    on_scene: Callable[[str, str, SceneOutcome], None] | None,
) -> AdaptResult:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cache = Cache.open(cache_url, read_only=True)
    # only methods that distil need the cache's teacher to be the checkpoint's (ttt-mae,
    # adacontrast, bn, tent and source also run on points-only caches)
    distils = any(METHODS[m].uses_teacher for m in cfg.methods)
    teacher_dim = (int(cache.meta.teacher.get("dim", 0)) or None) if distils else None
    net, info = load_checkpoint(
        checkpoint,
        backend=None if cfg.backend == "auto" else cfg.backend,
        device=device,
        expect_teacher_dim=teacher_dim,
    )
    notes = check_teacher(info, cache) if distils else []
    voxel_size, voxel_notes = network_voxel_size(info, cache)
    notes += voxel_notes
    mapping: LabelMapping = label_mapping(
        info.label_set, info.class_names, cache.meta.label_set, cache.meta.class_names
    )
    # "auto" picks per device; any backend but the reference must pass its start-up probe
    backend = resolve_backend(cfg.backend or info.backend, device)
    echo(backend_line(backend, cfg.backend, device, "fp32"))
    scene_ids = select_scenes(cache, cfg)
    reused = selection_overlap(info, scene_ids)
    if reused:
        warning = (
            f"warning: {len(reused)} of the {len(scene_ids)} scored scene(s) chose this "
            f"checkpoint (its best validation score): {', '.join(reused[:5])}"
            f"{', ...' if len(reused) > 5 else ''}; scores on them are optimistic. Use a "
            "checkpoint selected on held-out training scenes (tttkd-train --val-fraction) "
            "or last.safetensors"
        )
        echo(warning)
        notes.append(warning)
    methods: dict[str, Method] = {m: make_method(m, net, cfg) for m in cfg.methods}
    evaluators = {m: Evaluator(mapping) for m in cfg.methods}
    per_scene: dict[str, dict[str, dict]] = {m: {} for m in cfg.methods}
    method_seconds = dict.fromkeys(cfg.methods, 0.0)
    step_ms: dict[str, list[float]] = {m: [] for m in cfg.methods}
    angles = rotation_angles(cfg.rotations)
    palette = _palette(info)
    out_dir = Path(out) if out is not None else None
    load_s = warm_ms = 0.0
    t_run = time.perf_counter()
    bar = _bar(len(scene_ids), progress, echo)
    try:
        for sid in scene_ids:
            scene = load_scene(
                cache,
                sid,
                device=device,
                backend=backend,
                max_images=cfg.max_images,
                seed=cfg.seed,
                voxel_size=voxel_size,
                teacher=any(m.uses_teacher for m in methods.values()),
            )
            load_s += scene.read_seconds
            warm_ms += _warm_views(net, scene, angles)
            target = scene.record.full_label
            for name, method in methods.items():
                synchronize(device)
                outcome = method.process(scene)
                synchronize(device)
                method_seconds[name] += outcome.seconds
                step_ms[name].extend(outcome.step_ms)
                pred = outcome.logits.argmax(1).numpy()
                pred_full = full_resolution(pred, scene.record.voxel_of_point)
                scores = evaluators[name].add(pred_full, target)
                per_scene[name][sid] = {**scores, **outcome.summary()}
                if outcome.fallback is not None:
                    bar.write(
                        f"{name}: {sid} fell back to the unadapted prediction "
                        f"({outcome.fallback.reason})"
                    )
                if out_dir is not None and cfg.save_predictions:
                    _save_prediction(out_dir, name, scene, pred_full, cfg.save_ply, palette)
                if on_scene is not None:
                    on_scene(name, sid, outcome)
            scene.drop_views()
            bar.update(1)
            bar.set_postfix(
                {m: f"{evaluators[m].overall()['miou'] * 100:.1f}" for m in cfg.methods}
            )
    finally:
        bar.close()
    total_s = time.perf_counter() - t_run
    n = len(scene_ids)
    results: dict[str, dict[str, Any]] = {}
    for name in methods:
        fallbacks = [
            {"scene": sid, **rec["fallback"]}
            for sid, rec in per_scene[name].items()
            if rec.get("fallback")
        ]
        ms = step_ms[name]
        secs = method_seconds[name]
        results[name] = {
            "overall": evaluators[name].overall(),
            "scenes": per_scene[name],
            "fallbacks": fallbacks,
            "updates": sum(1 for r in per_scene[name].values() if r["updated"]),
            "timing": {
                "seconds": secs,
                "scenes_per_s": n / secs if secs > 0 else math.inf,
                "ms_per_step": float(np.mean(ms)) if ms else None,
                "steps": len(ms),
            },
        }
        if fallbacks:
            echo(
                f"{name}: {len(fallbacks)} scene(s) fell back to the unadapted prediction: "
                + ", ".join(f"{f['scene']} ({f['reason']})" for f in fallbacks)
            )
    timing = {
        "total_seconds": total_s,
        "read_seconds": load_s,
        "view_build_ms": warm_ms,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        **_peak_memory_mb(device),
    }
    return AdaptResult(
        config=cfg.to_dict(),
        cache={
            "url": cache.url,
            "dataset": cache.meta.dataset,
            "label_set": cache.meta.label_set,
            "voxel_size": cache.meta.voxel_size,
            "network_voxel_size": voxel_size,
            "teacher": cache.meta.teacher,
            "feature_codec": cache.meta.feature_codec,
        },
        checkpoint={
            "path": str(checkpoint),
            "label_set": info.label_set,
            "arch": info.arch.get("name"),
            "backend": backend,
            "teacher": info.teacher_spec.get("name"),
            "selected_on": info.selected_on,
            "scored_scenes_that_selected_it": reused,
        },
        evaluation=mapping.to_dict(),
        scenes=scene_ids,
        methods=results,
        timing=timing,
        class_names=list(mapping.class_names),
        notes=notes,
    )


def _palette(info: CheckpointInfo) -> np.ndarray:
    from tttkd.pipeline.labels import LABEL_SETS, get_label_set

    if info.label_set in LABEL_SETS:
        return get_label_set(info.label_set).palette()
    rng = np.random.default_rng(0)
    return np.vstack([rng.integers(0, 256, (info.num_classes, 3)), [[0, 0, 0]]]).astype(np.uint8)


def _bar(total: int, enabled: bool, echo: Callable[[str], None]) -> Any:
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, unit="scene", desc="adapt", dynamic_ncols=True)

    class _Quiet:
        def update(self, n: int) -> None: ...
        def set_postfix(self, *a: Any, **kw: Any) -> None: ...
        def write(self, s: str) -> None:
            echo(s)

        def close(self) -> None: ...

    return _Quiet()
