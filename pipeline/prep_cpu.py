"""The CPU stage of one scene: read -> voxelize -> select frames -> load images -> correspond,
giving the scene's cache record without teacher features, and the images to encode.

Frames: each selected frame's colour and depth are read, its correspondences computed, and
only frames that see at least one point are encoded by the teacher (a frame that sees
nothing, or whose files are unreadable, is dropped and recorded with its reason; no other
frame is drawn in its place, so the recorded selection stays the policy's draw). Images
of a size other than the scene's first frame are resized to it before encoding: the
teacher's grid covers the whole image either way, so ``uv`` (mapped with each image's own
size) stays exact.
"""

from __future__ import annotations

import time
import warnings as warnings_module
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd.core import TttkdError
from tttkd.pipeline.cache import SceneRecord, no_views
from tttkd.pipeline.correspond import (
    CorrespondConfig,
    View,
    frame_correspondences,
    pixel_to_grid,
)
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.frames import FrameSelection, select_frames
from tttkd.pipeline.plan import PrepConfig, SceneJob
from tttkd.pipeline.prep_teacher import teacher_spec
from tttkd.pipeline.scene_result import SceneFailure
from tttkd.pipeline.scene_warnings import check_labels, dropped_frames_warning
from tttkd.pipeline.teacher import TeacherSpec, grid_size
from tttkd.pipeline.voxelize import voxelize

_BLIND = "sees no point of the scene"


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
        spec=teacher_spec(job),
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
        **no_views(),
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
