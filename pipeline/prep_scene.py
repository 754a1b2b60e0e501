"""The per-scene task: read -> voxelize -> select frames -> correspond -> teacher -> write.

One call per scene, in whatever process the executor picks. The teacher is built once per
process (``_TEACHERS``, keyed by its arguments), never per scene. The task writes only its
own scene group (the cache marks it complete last); every failure comes back as a
``SceneResult`` with a reason instead of an exception, so one bad scene never stops the run.

Frames: each selected frame's colour and depth are read, its correspondences computed, and
only frames that see at least one point are encoded by the teacher (a frame that sees
nothing, or whose files are unreadable, is dropped and recorded with its reason; no other
frame is drawn in its place, so the recorded selection stays the policy's draw). Images
of a size other than the scene's first frame are resized to it before encoding: the
teacher's grid covers the whole image either way, so ``uv`` (mapped with each image's own
size) stays exact.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd.pipeline.cache_records import SceneRecord
from tttkd.pipeline.correspond import View, frame_correspondences, pixel_to_grid
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.errors import TttkdError
from tttkd.pipeline.frames import select_frames
from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.voxelize import voxelize

_TEACHERS: dict[tuple, Any] = {}
_BUILDS = {"teacher": 0}  # teachers built by this process (reported, and tested to stay 1)


_BLIND = "sees no point of the scene"


class SceneFailure(Exception):
    """A scene that cannot be prepared, with the reason shown in the failures list."""


@dataclass(frozen=True)
class SceneResult:
    scene_id: str
    status: str  # "done" | "failed" | "skipped" (complete already, e.g. a retried task)
    reason: str = ""
    points: int = 0
    images: int = 0
    pairs: int = 0
    seconds: float = 0.0
    detail: str = ""  # traceback of an unexpected error (a bug, not bad data)
    timing: dict = field(default_factory=dict)
    pid: int = field(default_factory=os.getpid)
    teacher_builds: int = 0  # teachers this process has built so far


def teacher_key(job: SceneJob) -> tuple:
    c = job.config
    return (c.teacher, c.teacher_weights, c.image_size, c.device, c.batch_size)


def get_teacher(job: SceneJob) -> Any:
    """This process's teacher for ``job`` (built on first use, then reused)."""
    key = teacher_key(job)
    if key not in _TEACHERS:
        from tttkd.pipeline.teacher import load_teacher

        c = job.config
        _TEACHERS[key] = load_teacher(
            c.teacher, c.teacher_weights, c.image_size, c.device, batch_size=c.batch_size
        )
        _BUILDS["teacher"] += 1
    return _TEACHERS[key]


def _cache(job: SceneJob) -> Any:
    """Opened per scene (a few ms): a cache rebuilt with --overwrite is never seen stale."""
    from tttkd.pipeline.cache import Cache

    return Cache.open(job.config.out, storage_options=job.config.storage_options)


def _check_teacher(job: SceneJob, teacher: Any) -> None:
    if job.teacher_spec is None:
        return
    from tttkd.pipeline.teacher import TeacherSpec

    if not TeacherSpec.from_dict(job.teacher_spec).compatible_with(teacher.spec):
        raise SceneFailure(
            f"the teacher built on {socket.gethostname()} differs from the driver's "
            f"({teacher.spec.to_dict()} vs {job.teacher_spec}); give every worker the same "
            "weights file"
        )


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), Image.BILINEAR))


def _images_part(job: SceneJob, scene: Any, xyz: np.ndarray, timing: dict) -> dict:
    """Select, load, correspond and encode; returns the SceneRecord image/corr fields."""
    cfg = job.config
    if not scene.frames:
        raise SceneFailure(
            "no image: the reader found no frames for this scene (KD needs posed images; "
            "check the image folders, or pass --no-images for a points-only cache)"
        )
    sel = select_frames(scene.frames, cfg.image_policy(), scene.id)
    dropped = list(sel.dropped)
    if not sel.frames:
        raise SceneFailure(
            f"no valid frame: all {sel.available} frames were dropped "
            f"({'; '.join(f'{n}: {r}' for n, r in dropped[:3])})"
        )
    teacher = get_teacher(job)
    _check_teacher(job, teacher)
    ccfg = cfg.correspond_config()
    kept, points, uvs = [], [], []
    features = None
    ref_hw = grid_hw = None
    t_load = t_corr = t_teach = 0.0
    for start in range(0, len(sel.frames), teacher.batch_size):
        batch = []
        for f in sel.frames[start : start + teacher.batch_size]:
            t0 = time.perf_counter()
            try:
                color = f.load_color()
                depth = f.load_depth()
            except TttkdError as e:
                dropped.append((f.name, f"unreadable: {getattr(e, 'problem', e)}"))
                continue
            t_load += time.perf_counter() - t0
            t0 = time.perf_counter()
            depth_K = None if depth is None else f.depth_intrinsics(depth.shape[1], depth.shape[0])
            view = View(f.K, f.c2w, f.width, f.height, depth=depth, depth_K=depth_K)
            idx, uv = frame_correspondences(xyz, view, ccfg)
            t_corr += time.perf_counter() - t0
            if len(idx) == 0:
                dropped.append((f.name, _BLIND))
                continue
            if ref_hw is None:
                ref_hw = color.shape[:2]
                grid_hw = teacher.grid_size(*ref_hw)
                shape = (len(sel.frames), *grid_hw, teacher.spec.dim)
                features = np.empty(shape, dtype=np.float16)
            if color.shape[:2] != ref_hw:
                color = _resize(color, ref_hw)
            batch.append(color)
            kept.append(f)
            points.append(idx)
            uvs.append(pixel_to_grid(uv, (f.width, f.height), (grid_hw[1], grid_hw[0])))
        if batch:
            t0 = time.perf_counter()
            out = teacher.encode(batch).numpy()
            n0 = len(kept) - len(batch)
            features[n0 : len(kept)] = out.astype(np.float16)
            t_teach += time.perf_counter() - t0
    timing.update(load_images=t_load, correspond=t_corr, teacher=t_teach)
    blind = [n for n, r in dropped if r == _BLIND]
    if not kept and len(blind) == len(sel.frames):
        raise SceneFailure(
            f"zero correspondences: none of the {len(sel.frames)} selected frames sees a point "
            "of the scene (wrong poses, or points and poses in different frames: check the "
            "reader's alignment options)"
        )
    if not kept:
        raise SceneFailure(
            f"no valid frame: none of the {len(sel.frames)} selected frames could be used "
            f"({'; '.join(f'{n}: {r}' for n, r in dropped[:3])})"
        )
    counts = np.array([len(p) for p in points], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    frames_info = sel.to_dict()
    frames_info.update(selected=[f.name for f in kept], dropped=[list(d) for d in dropped])
    return dict(
        features=features[: len(kept)],
        K=np.stack([np.asarray(f.K) for f in kept]).astype(np.float32),
        c2w=np.stack([np.asarray(f.c2w) for f in kept]).astype(np.float32),
        image_size=np.array([[f.width, f.height] for f in kept], dtype=np.int32),
        image_names=[f.name for f in kept],
        corr_point=np.concatenate(points).astype(np.int32),
        corr_image=np.repeat(np.arange(len(kept), dtype=np.int16), counts),
        corr_uv=np.concatenate(uvs).astype(np.float32),
        corr_offsets=offsets,
        frames_info=frames_info,
        grid=list(grid_hw),
        reference_size=[int(ref_hw[1]), int(ref_hw[0])],
    )


def _no_images_part() -> dict:
    return dict(
        features=np.zeros((0, 0, 0, 0), dtype=np.float16),
        K=np.zeros((0, 3, 3), np.float32),
        c2w=np.zeros((0, 4, 4), np.float32),
        image_size=np.zeros((0, 2), np.int32),
        image_names=[],
        corr_point=np.zeros(0, np.int32),
        corr_image=np.zeros(0, np.int16),
        corr_uv=np.zeros((0, 2), np.float32),
        corr_offsets=np.zeros(1, np.int64),
        frames_info={"available": 0, "selected": [], "dropped": [], "scene_seed": None},
        grid=[0, 0],
        reference_size=[0, 0],
    )


def build_record(job: SceneJob) -> tuple[SceneRecord, dict]:
    """The scene's cache record (nothing written); raises SceneFailure / DatasetError."""
    cfg = job.config
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    scene = registry.load_scene(cfg.dataset, cfg.root, job.scene_id, **cfg.load_options())
    timing["read"] = time.perf_counter() - t0
    if scene.num_points == 0:
        raise SceneFailure("the scene has no points")
    t0 = time.perf_counter()
    # stored points: one per cell of the fine point grid (consumers voxelize at voxel_size)
    vox = voxelize(scene.xyz, cfg.point_grid, label=scene.label, label_mode=cfg.label_mode)
    xyz = scene.xyz[vox.keep]
    timing["voxelize"] = time.perf_counter() - t0
    part = _no_images_part() if cfg.no_images else _images_part(job, scene, xyz, timing)
    attrs = {
        "dataset": cfg.dataset,
        "source_files": [str(s) for s in scene.source_files],
        "frames": part.pop("frames_info"),
        "feature_grid": part.pop("grid"),
        "reference_size": part.pop("reference_size"),
        "voxel": {
            "size": cfg.voxel_size,
            "point_size": cfg.point_grid,
            "representative": "nearest_centre",
            "label_mode": cfg.label_mode,
        },
        "reader_options": {k: str(v) for k, v in cfg.reader_options.items()},
    }
    rec = SceneRecord(
        scene_id=job.scene_id,
        split=scene.split if scene.split is not None else cfg.split,
        xyz=np.ascontiguousarray(xyz, dtype=np.float32),
        rgb=np.ascontiguousarray(scene.rgb[vox.keep]),
        label=vox.label,
        voxel_of_point=vox.voxel_of_point,
        full_label=scene.label,
        attrs=attrs,
        **part,
    )
    return rec, timing


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (SceneFailure, TttkdError)):
        return text
    return f"{type(e).__name__}: {text}"


def prep_scene(job: SceneJob) -> SceneResult:
    """Run one job end to end and write its scene; never raises for a bad scene."""
    t_start = time.perf_counter()
    try:
        cache = _cache(job)
        if cache.is_complete(job.scene_id):  # e.g. Dask re-ran a task whose worker died late
            return SceneResult(job.scene_id, "skipped", "complete already")
        rec, timing = build_record(job)
        rec.attrs["run"] = {
            "run_id": job.run_id,
            "written_at": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        rec.attrs["timing_s"] = {k: round(v, 4) for k, v in timing.items()}
        t0 = time.perf_counter()
        cache.write_scene(rec)
        timing["write"] = time.perf_counter() - t0
    except (SceneFailure, TttkdError) as e:
        return SceneResult(job.scene_id, "failed", _reason(e), seconds=_since(t_start))
    except Exception as e:  # a bug or an unexpected library error: keep the traceback
        return SceneResult(
            job.scene_id,
            "failed",
            _reason(e),
            seconds=_since(t_start),
            detail=traceback.format_exc(limit=8),
        )
    return SceneResult(
        job.scene_id,
        "done",
        points=rec.num_points,
        images=rec.num_images,
        pairs=rec.num_corr,
        seconds=_since(t_start),
        timing={k: round(v, 4) for k, v in timing.items()},
        teacher_builds=_BUILDS["teacher"],
    )


def _since(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)


def sample_features(job: SceneJob, max_images: int = 4) -> np.ndarray:
    """Teacher features of up to ``max_images`` frames of one scene (to fit a PCA basis)."""
    cfg = job.config
    scene = registry.load_scene(cfg.dataset, cfg.root, job.scene_id, **cfg.load_options())
    sel = select_frames(scene.frames, cfg.image_policy(), scene.id)
    teacher = get_teacher(job)
    out = []
    for f in sel.frames[:max_images]:
        try:
            out.append(teacher.encode([f.load_color()]).numpy())
        except TttkdError:
            continue
    if not out:
        return np.zeros((0, teacher.spec.dim), dtype=np.float32)
    return np.concatenate([o.reshape(-1, o.shape[-1]) for o in out])
