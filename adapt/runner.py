"""``tttkd-adapt``'s library entry: several methods over a stream of scenes, scored.

Three steps: :func:`prepare_run` opens the cache and checkpoint once and resolves what every
task needs; the tasks (``adapt.tasks``: one per scene for the offline methods, which read it
once and process it in turn; one per online method over the whole stream, in order) run in
this process or on a Dask cluster (``adapt.parallel``), optionally stored as they finish
(``adapt.resume``); :func:`summarize` merges their records in a fixed order, so where and in
which order tasks ran never changes a result. Scores are at full resolution on the cache's
labels.
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
from tttkd.adapt.evaluation import Evaluator, LabelMapping, label_mapping
from tttkd.adapt.methods import METHODS, SceneOutcome, make_method
from tttkd.adapt.tasks import RunSpec, load_network, longest_first, plan_tasks, scene_points
from tttkd.model.checkpoint import CheckpointError, CheckpointInfo
from tttkd.model.sparse.select import backend_line, resolve_backend
from tttkd.pipeline.cache import Cache

__all__ = [
    "AdaptResult",
    "RunSetup",
    "check_teacher",
    "network_voxel_size",
    "prepare_run",
    "run_adaptation",
    "select_scenes",
    "selection_overlap",
    "summarize",
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
    from tttkd.pipeline.cache import warn_incomplete

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


@dataclass
class RunSetup:
    """What the driver resolves once: the tasks' :class:`RunSpec` and the run's metadata."""

    spec: RunSpec
    info: CheckpointInfo
    cache: Cache
    scene_ids: list[str]
    online: set[str]  # methods whose scenes form one ordered stream (one task)
    reused: list[str]  # scored scenes that selected the checkpoint
    notes: list[str]

    def fingerprint(self) -> dict[str, Any]:
        """What stored outcomes depend on (``resume.OutcomeStore``)."""
        from tttkd.adapt.resume import file_sha256

        s = self.spec
        return {
            "config": s.cfg.to_dict(),
            "cache": s.cache_url,
            "checkpoint": s.checkpoint,
            "checkpoint_sha256": file_sha256(s.checkpoint),
            "scenes": self.scene_ids,
            "tttkd_version": tttkd.__version__,
        }


def prepare_run(
    cfg: AdaptConfig,
    cache_url: str,
    checkpoint: str | Path,
    out: str | Path | None,
    echo: Callable[[str], None],
) -> RunSetup:
    """Open the cache and checkpoint, check they fit, resolve backend and scenes."""
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cache = Cache.open(cache_url, read_only=True)
    # only methods that distil need the cache's teacher to be the checkpoint's (ttt-mae,
    # adacontrast, bn, tent and source also run on points-only caches)
    distils = any(METHODS[m].uses_teacher for m in cfg.methods)
    teacher_dim = (int(cache.meta.teacher.get("dim", 0)) or None) if distils else None
    net, info = load_network(str(checkpoint), cfg, teacher_dim)
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
    online = {m for m in cfg.methods if make_method(m, net, cfg).online}
    spec = RunSpec(
        cfg=cfg,
        cache_url=cache_url,
        checkpoint=str(checkpoint),
        teacher_dim=teacher_dim,
        backend=backend,
        voxel_size=voxel_size,
        teacher=any(METHODS[m].uses_teacher for m in cfg.methods),
        mapping=mapping,
        palette=_palette(info),
        out=str(out) if out is not None else None,
    )
    return RunSetup(spec, info, cache, scene_ids, online, reused, notes)


def run_adaptation(
    cfg: AdaptConfig,
    cache_url: str,
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    on_scene: Callable[[str, str, SceneOutcome], None] | None = None,
    executor: Any = None,
    resume: bool = False,
    overwrite: bool = False,
) -> AdaptResult:
    """Adapt and score every selected scene with every method of ``cfg``.

    ``executor``: a ``DaskExecutor`` to run the tasks on (default: this process).
    ``resume``: keep each finished (method, scene) in ``out/outcomes`` and skip those already
    there (the command line's behaviour); another config there is refused unless ``overwrite``.
    """
    for name in cfg.methods:
        if name not in METHODS:
            raise AdaptConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if resume and out is None:
        raise AdaptConfigError("resume needs an output folder (--out)")
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        t_run = time.perf_counter()
        setup = prepare_run(cfg, cache_url, checkpoint, out, echo)
        store = None
        if resume:
            from tttkd.adapt.resume import OutcomeStore

            store = OutcomeStore(out, setup.fingerprint(), overwrite=overwrite)
        records = _execute(setup, store, executor, progress, echo, on_scene)
        return summarize(setup, records, time.perf_counter() - t_run, executor, echo)
    finally:
        torch.set_num_threads(threads)


def _execute(
    setup: RunSetup,
    store: Any,
    executor: Any,
    progress: bool,
    echo: Callable[[str], None],
    on_scene: Callable[[str, str, SceneOutcome], None] | None,
) -> dict[tuple[str, str], dict]:
    """Every (method, scene) record: read back from ``store`` or computed (and stored)."""
    from tttkd.adapt.parallel import run_tasks

    methods, scenes = list(setup.spec.cfg.methods), setup.scene_ids
    done = store.done(methods, scenes) if store is not None else set()
    tasks = plan_tasks(methods, setup.online, scenes, done)
    if executor is not None:  # results merge in a fixed order: only the run time changes
        tasks = longest_first(tasks, lambda sid: scene_points(setup.cache, sid))
    records = {pair: store.read(*pair) for pair in done} if store is not None else {}
    if done:
        echo(f"resuming: {len(done)} (method, scene) outcome(s) found in {store.root}, "
             f"{len(tasks)} task(s) to run")  # fmt: skip
    bar = _bar(len(tasks), progress, echo)
    try:
        for _, got in run_tasks(setup.spec, tasks, executor, on_scene):
            for rec in got:
                if store is not None:
                    store.write(rec)
                records[rec["method"], rec["scene"]] = rec
                fb = rec["record"].get("fallback")
                if fb:
                    bar.write(
                        f"{rec['method']}: {rec['scene']} fell back to the unadapted prediction "
                        f"({fb['reason']})"
                    )
            bar.update(1)
    finally:
        bar.close()
    return records


def summarize(
    setup: RunSetup,
    records: dict[tuple[str, str], dict],
    total_s: float,
    executor: Any,
    echo: Callable[[str], None],
) -> AdaptResult:
    """Merge the records in a fixed order (methods, then scenes as selected)."""
    spec, info, cache = setup.spec, setup.info, setup.cache
    cfg, scene_ids = spec.cfg, setup.scene_ids
    results: dict[str, dict[str, Any]] = {}
    for name in cfg.methods:
        results[name] = _method_result(spec.mapping, [records[name, sid] for sid in scene_ids])
        fallbacks = results[name]["fallbacks"]
        if fallbacks:
            echo(
                f"{name}: {len(fallbacks)} scene(s) fell back to the unadapted prediction: "
                + ", ".join(f"{f['scene']} ({f['reason']})" for f in fallbacks)
            )
    return AdaptResult(
        config=cfg.to_dict(),
        cache={
            "url": cache.url,
            "dataset": cache.meta.dataset,
            "label_set": cache.meta.label_set,
            "voxel_size": cache.meta.voxel_size,
            "network_voxel_size": spec.voxel_size,
            "teacher": cache.meta.teacher,
            "feature_codec": cache.meta.feature_codec,
        },
        checkpoint={
            "path": spec.checkpoint,
            "label_set": info.label_set,
            "arch": info.arch.get("name"),
            "backend": spec.backend,
            "teacher": info.teacher_spec.get("name"),
            "selected_on": info.selected_on,
            "scored_scenes_that_selected_it": setup.reused,
        },
        evaluation=spec.mapping.to_dict(),
        scenes=scene_ids,
        methods=results,
        timing=_run_timing(list(records.values()), total_s, torch.device(cfg.device), executor),
        class_names=list(spec.mapping.class_names),
        notes=setup.notes,
    )


def _method_result(mapping: LabelMapping, mine: list[dict]) -> dict[str, Any]:
    """One method's overall scores (summed confusions), per-scene records, fallbacks, timing."""
    evaluator = Evaluator(mapping)
    for rec in mine:
        evaluator.confusion += np.asarray(rec["confusion"], dtype=np.int64)
    per_scene = {rec["scene"]: rec["record"] for rec in mine}
    fallbacks = [
        {"scene": sid, **rec["fallback"]} for sid, rec in per_scene.items() if rec.get("fallback")
    ]
    ms = [t for rec in mine for t in rec["step_ms"]]
    secs = sum(rec["record"]["seconds"] for rec in mine)
    return {
        "overall": evaluator.overall(),
        "scenes": per_scene,
        "fallbacks": fallbacks,
        "updates": sum(1 for r in per_scene.values() if r["updated"]),
        "timing": {
            "seconds": secs,
            "scenes_per_s": len(mine) / secs if secs > 0 else math.inf,
            "ms_per_step": float(np.mean(ms)) if ms else None,
            "steps": len(ms),
        },
    }


def _run_timing(
    everything: list[dict], total_s: float, device: torch.device, executor: Any
) -> dict[str, Any]:
    """The run's wall time, reading and view-building time, peak memory (driver and tasks)."""
    peak = _peak_memory_mb(device)
    peak["peak_rss_mb"] = max([peak["peak_rss_mb"]] + [r["peak_rss_mb"] for r in everything])
    return {
        "total_seconds": total_s,
        "read_seconds": sum(r["read_seconds"] for r in everything),
        "view_build_ms": sum(r["view_build_ms"] for r in everything),
        "device": str(device),
        "torch_threads": torch.get_num_threads() if executor is None else 1,
        "executor": "serial" if executor is None else "dask",
        **peak,
    }


def _palette(info: CheckpointInfo) -> np.ndarray:
    from tttkd.core import LABEL_SETS, get_label_set

    if info.label_set in LABEL_SETS:
        return get_label_set(info.label_set).palette()
    rng = np.random.default_rng(0)
    return np.vstack([rng.integers(0, 256, (info.num_classes, 3)), [[0, 0, 0]]]).astype(np.uint8)


def _bar(total: int, enabled: bool, echo: Callable[[str], None]) -> Any:
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, unit="task", desc="adapt", dynamic_ncols=True)

    class _Quiet:
        def update(self, n: int) -> None: ...
        def set_postfix(self, *a: Any, **kw: Any) -> None: ...
        def write(self, s: str) -> None:
            echo(s)

        def close(self) -> None: ...

    return _Quiet()
