"""The prep stages of one scene: CPU (read -> voxelize -> select frames -> load images ->
correspond: ``prepare_scene``), teacher (``encode_pieces``, images of several scenes in large
batches) and write (``write_prepared``); ``prep_scene`` chains all three in one process.

Executors decide where each stage runs (``pipeline.executors``). The teacher is built once per
process (``_TEACHERS``, keyed by its arguments), never per scene, and only where the teacher
stage runs. The write stage writes only its own scene group (the cache marks it complete
last); every failure comes back as a ``SceneResult`` with a reason instead of an exception,
so one bad scene never stops the run.

Frames: each selected frame's colour and depth are read, its correspondences computed, and
only frames that see at least one point are encoded by the teacher (a frame that sees
nothing, or whose files are unreadable, is dropped and recorded with its reason; no other
frame is drawn in its place, so the recorded selection stays the policy's draw). Images
of a size other than the scene's first frame are resized to it before encoding: the
teacher's grid covers the whole image either way, so ``uv`` (mapped with each image's own
size) stays exact.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
import warnings as warnings_module
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd.core import TttkdError
from tttkd.pipeline.cache import SceneRecord
from tttkd.pipeline.correspond import (
    CorrespondConfig,
    View,
    frame_correspondences,
    pixel_to_grid,
)
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.frames import FrameSelection, select_frames
from tttkd.pipeline.plan import PrepConfig, SceneJob
from tttkd.pipeline.scene_timeout import scene_deadline
from tttkd.pipeline.scene_warnings import check_labels, dropped_frames_warning
from tttkd.pipeline.teacher import TeacherSpec, grid_size
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
    teacher_builds: int = 0  # teachers built so far by the process that encoded the scene
    teacher_pid: int = 0  # that process (0: no images)
    warnings: tuple[str, ...] = ()  # what the scene lost (labels, frames): pipeline/scene_warnings


def teacher_key(job: SceneJob) -> tuple:
    c = job.config
    return (c.teacher, c.teacher_weights, c.image_size, c.device, c.batch_size, c.compile_teacher)


def get_teacher(job: SceneJob) -> Any:
    """This process's teacher for ``job`` (built on first use, then reused)."""
    key = teacher_key(job)
    if key not in _TEACHERS:
        from tttkd.pipeline.teacher import load_teacher

        c = job.config
        _TEACHERS[key] = load_teacher(
            c.teacher,
            c.teacher_weights,
            c.image_size,
            c.device,
            batch_size=c.batch_size,
            compile=c.compile_teacher,
        )
        _BUILDS["teacher"] += 1
    return _TEACHERS[key]


def _cache(job: SceneJob) -> Any:
    """Opened per scene (a few ms): a cache rebuilt with --overwrite is never seen stale."""
    from tttkd.pipeline.cache import Cache

    return Cache.open(job.config.out, storage_options=job.config.storage_options)


def _teacher_spec(job: SceneJob) -> TeacherSpec:
    """The driver's teacher spec (the CPU stage needs only its grid, never the model)."""
    if job.teacher_spec is not None:
        return TeacherSpec.from_dict(job.teacher_spec)
    return get_teacher(job).spec


def _check_teacher(job: SceneJob, teacher: Any) -> None:
    if job.teacher_spec is None:
        return
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
    """Select, load and correspond (CPU only); returns the SceneRecord image/corr fields with
    ``features=None`` and the kept images, resized to the first kept one's size, as
    ``images`` (I, H, W, 3) uint8 for the teacher stage."""
    cfg = job.config
    sel = _select(scene, cfg)
    dropped = list(sel.dropped)
    views = _correspond(
        sel.frames,
        xyz,
        spec=_teacher_spec(job),
        ccfg=cfg.correspond_config(),
        dropped=dropped,
        timing=timing,
    )
    _require_a_view(views, n_selected=len(sel.frames), dropped=dropped)
    counts = np.array([len(p) for p in views.points], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    kept = views.frames
    frames_info = sel.to_dict()
    frames_info.update(selected=[f.name for f in kept], dropped=[list(d) for d in dropped])
    ref_hw, grid_hw = views.ref_hw, views.grid_hw
    return dict(
        features=None,
        images=np.stack(views.images),
        K=np.stack([np.asarray(f.K) for f in kept]).astype(np.float32),
        c2w=np.stack([np.asarray(f.c2w) for f in kept]).astype(np.float32),
        image_size=np.array([[f.width, f.height] for f in kept], dtype=np.int32),
        image_names=[f.name for f in kept],
        corr_point=np.concatenate(views.points).astype(np.int32),
        corr_image=np.repeat(np.arange(len(kept), dtype=np.int16), counts),
        corr_uv=np.concatenate(views.uvs).astype(np.float32),
        corr_offsets=offsets,
        frames_info=frames_info,
        grid=list(grid_hw),
        reference_size=[int(ref_hw[1]), int(ref_hw[0])],
    )


def _select(scene: Any, cfg: PrepConfig) -> FrameSelection:
    """The frames the image policy picks; none at all is a scene failure."""
    if not scene.frames:
        raise SceneFailure(
            "no image: the reader found no frames for this scene (KD needs posed images; "
            "check the image folders, or pass --no-images for a points-only cache)"
        )
    sel = select_frames(scene.frames, cfg.image_policy(), scene.id)
    if not sel.frames:
        raise SceneFailure(
            f"no valid frame: all {sel.available} frames were dropped "
            f"({'; '.join(f'{n}: {r}' for n, r in list(sel.dropped)[:3])})"
        )
    return sel


@dataclass
class _Views:
    """The selected frames kept for the teacher: images at one size, their correspondences."""

    frames: list = field(default_factory=list)
    points: list = field(default_factory=list)  # per frame: indices of the points it sees
    uvs: list = field(default_factory=list)  # per frame: their teacher-grid coordinates
    images: list = field(default_factory=list)  # colour, resized to ref_hw
    ref_hw: tuple | None = None  # the first kept frame's colour size
    grid_hw: tuple | None = None  # the teacher's feature grid at that size


def _correspond(
    frames: list,
    xyz: np.ndarray,
    *,
    spec: TeacherSpec,
    ccfg: CorrespondConfig,
    dropped: list,
    timing: dict,
) -> _Views:
    """Load each frame and find the points it sees; an unreadable frame or one that sees no
    point is appended to ``dropped`` with the reason (never skipped quietly)."""
    views = _Views()
    t_load = t_corr = 0.0
    for f in frames:
        t0 = time.perf_counter()
        try:
            color = f.load_color()
            depth = f.load_depth()
        except TttkdError as e:
            where = getattr(e, "file", None)
            problem = getattr(e, "problem", e)
            dropped.append((f.name, f"unreadable: {where}: {problem}" if where else problem))
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
        if views.ref_hw is None:
            views.ref_hw = color.shape[:2]
            views.grid_hw = grid_size(spec, *views.ref_hw)
        if color.shape[:2] != views.ref_hw:
            color = _resize(color, views.ref_hw)
        grid_hw = views.grid_hw
        views.images.append(color)
        views.frames.append(f)
        views.points.append(idx)
        views.uvs.append(pixel_to_grid(uv, (f.width, f.height), (grid_hw[1], grid_hw[0])))
    timing.update(load_images=t_load, correspond=t_corr)
    return views


def _require_a_view(views: _Views, *, n_selected: int, dropped: list) -> None:
    """A scene none of whose selected frames is usable fails, saying why."""
    if views.frames:
        return
    blind = [n for n, r in dropped if r == _BLIND]
    if len(blind) == n_selected:
        raise SceneFailure(
            f"zero correspondences: none of the {n_selected} selected frames sees a point "
            "of the scene (wrong poses, or points and poses in different frames: check the "
            "reader's alignment options)"
        )
    raise SceneFailure(
        f"no valid frame: none of the {n_selected} selected frames could be used "
        f"({'; '.join(f'{n}: {r}' for n, r in dropped[:3])})"
    )


def _no_images_part() -> dict:
    return dict(
        images=None,
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


def build_record(job: SceneJob) -> tuple[SceneRecord, dict, np.ndarray | None]:
    """The scene's cache record without teacher features (``features`` is None when there are
    images), its timings, and the images for the teacher; raises SceneFailure / DatasetError."""
    cfg = job.config
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    with warnings_module.catch_warnings(record=True) as reader_warnings:
        warnings_module.simplefilter("always")  # a reader's warnings become the scene's
        scene = registry.load_scene(cfg.dataset, cfg.root, job.scene_id, **cfg.load_options())
    timing["read"] = time.perf_counter() - t0
    if scene.num_points == 0:
        raise SceneFailure("the scene has no points")
    split = scene.split if scene.split is not None else cfg.split
    labels, warnings = check_labels(scene.label, split, job.scene_id)  # all lost: an error
    warnings = [str(w.message) for w in reader_warnings] + warnings
    t0 = time.perf_counter()
    # stored points: one per cell of the fine point grid (consumers voxelize at voxel_size)
    vox = voxelize(scene.xyz, cfg.point_grid, label=scene.label, label_mode=cfg.label_mode)
    xyz = scene.xyz[vox.keep]
    timing["voxelize"] = time.perf_counter() - t0
    part = _no_images_part() if cfg.no_images else _images_part(job, scene, xyz, timing)
    images = part.pop("images")
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
        "labels": labels,
        "warnings": warnings,
    }
    warnings += dropped_frames_warning(attrs["frames"], ignore=(_BLIND,))
    rec = SceneRecord(
        scene_id=job.scene_id,
        split=split,
        xyz=np.ascontiguousarray(xyz, dtype=np.float32),
        rgb=np.ascontiguousarray(scene.rgb[vox.keep]),
        label=vox.label,
        voxel_of_point=vox.voxel_of_point,
        full_label=scene.label,
        attrs=attrs,
        **part,
    )
    return rec, timing, images


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (SceneFailure, TttkdError)):
        return text
    return f"{type(e).__name__}: {text}"


@dataclass
class PreparedScene:
    """The CPU stage's output: the record without features, and the images to encode.

    ``result`` is set instead when the scene failed or is complete already."""

    job: SceneJob
    record: SceneRecord | None = None
    images: np.ndarray | None = None  # (I, H, W, 3) uint8, one size per scene
    timing: dict = field(default_factory=dict)
    seconds: float = 0.0
    result: SceneResult | None = None

    @property
    def num_images(self) -> int:
        return 0 if self.images is None else len(self.images)

    def summary(self) -> tuple[SceneResult | None, int, tuple[int, ...]]:
        """What the driver needs to batch this scene's images (small; no arrays)."""
        shape = () if self.images is None else tuple(self.images.shape[1:])
        return self.result, self.num_images, shape


@dataclass(frozen=True)
class EncodedPiece:
    """Teacher features (fp16) for a run of one scene's images, and who encoded them."""

    features: np.ndarray  # (n, h, w, D) float16
    seconds: float
    pid: int
    builds: int


def _failed(job: SceneJob, e: BaseException, t_start: float) -> SceneResult:
    detail = "" if isinstance(e, (SceneFailure, TttkdError)) else traceback.format_exc(limit=8)
    return SceneResult(job.scene_id, "failed", _reason(e), seconds=_since(t_start), detail=detail)


def prepare_scene(job: SceneJob) -> PreparedScene:
    """CPU stage: read, voxelize, select frames, load images, correspond; never raises."""
    t_start = time.perf_counter()
    try:
        if _cache(job).is_complete(job.scene_id):  # e.g. Dask re-ran a task after a restart
            return PreparedScene(
                job, result=SceneResult(job.scene_id, "skipped", "complete already")
            )
        with scene_deadline(job.config.scene_timeout, job.scene_id):  # fails the scene only
            rec, timing, images = build_record(job)
    except Exception as e:  # a bad scene (reason) or a bug (reason + traceback)
        return PreparedScene(job, result=_failed(job, e, t_start))
    return PreparedScene(job, rec, images, timing, seconds=_since(t_start))


def images_of(prep: PreparedScene) -> np.ndarray | None:
    """Only the images (a separate Dask task, so the teacher fetches no points)."""
    return prep.images


def encode_pieces(job: SceneJob, pieces: list[np.ndarray]) -> list[EncodedPiece]:
    """Teacher stage: encode runs of images from one or several scenes in large batches.

    Pieces of one image size are encoded together (fp16 out, as the cache stores them); an
    image's features do not depend on its batch-mates (tests), so the cache is the same
    however pieces were grouped. Raises SceneFailure when this process's teacher differs
    from the driver's.
    """
    if not pieces:  # nothing to encode: no teacher to build
        return []
    teacher = get_teacher(job)
    _check_teacher(job, teacher)
    import torch

    out: list[EncodedPiece | None] = [None] * len(pieces)
    by_shape: dict[tuple, list[int]] = {}
    for i, p in enumerate(pieces):
        by_shape.setdefault(tuple(p.shape[1:]), []).append(i)
    for idx in by_shape.values():
        t0 = time.perf_counter()
        images = [im for i in idx for im in pieces[i]]
        feats = teacher.encode(images, out_dtype=torch.float16).numpy()
        dt = time.perf_counter() - t0
        n0 = 0
        for i in idx:
            n = len(pieces[i])
            share = dt * n / len(images)
            out[i] = EncodedPiece(feats[n0 : n0 + n], share, os.getpid(), _BUILDS["teacher"])
            n0 += n
    return out  # type: ignore[return-value]


def piece_of(encoded: list[EncodedPiece], k: int) -> EncodedPiece:
    """One piece of a teacher task's output (runs where that output lies)."""
    return encoded[k]


def write_prepared(prep: PreparedScene, pieces: list[EncodedPiece]) -> SceneResult:
    """Last stage: join the features to the record and write the scene (marked complete last)."""
    if prep.result is not None:
        return prep.result
    job, rec, timing = prep.job, prep.record, dict(prep.timing)
    t_start = time.perf_counter() - prep.seconds
    try:
        cache = _cache(job)
        if cache.is_complete(job.scene_id):  # a write re-run after its worker died late
            return SceneResult(job.scene_id, "skipped", "complete already")
        if prep.images is not None:
            got = sum(len(p.features) for p in pieces)
            if got != prep.num_images:
                raise SceneFailure(f"the teacher returned {got} of {prep.num_images} images")
            feats = np.concatenate([p.features for p in pieces])
            rec = dataclasses.replace(rec, features=feats)
            timing["teacher"] = sum(p.seconds for p in pieces)
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
    except Exception as e:
        return _failed(job, e, t_start)
    return SceneResult(
        job.scene_id,
        "done",
        points=rec.num_points,
        images=rec.num_images,
        pairs=rec.num_corr,
        seconds=_since(t_start),
        timing={k: round(v, 4) for k, v in timing.items()},
        teacher_builds=pieces[0].builds if pieces else 0,
        teacher_pid=pieces[0].pid if pieces else 0,
        warnings=tuple(rec.attrs.get("warnings", ())),
    )


def prep_scene(job: SceneJob) -> SceneResult:
    """One scene end to end in this process (all three stages; never raises for a bad scene)."""
    prep = prepare_scene(job)
    if prep.result is not None or prep.images is None:
        return write_prepared(prep, [])
    try:
        pieces = encode_pieces(job, [prep.images])
    except Exception as e:
        return _failed(job, e, time.perf_counter() - prep.seconds)
    return write_prepared(prep, pieces)


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
