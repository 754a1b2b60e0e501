"""The prep stages of one scene: CPU (read -> voxelize -> select frames -> load images ->
correspond: ``prepare_scene``, built by ``pipeline.prep_cpu``), teacher (``encode_pieces``,
images of several scenes in large batches: ``pipeline.prep_teacher``) and write
(``write_prepared``); ``prep_scene`` chains all three in one process.

Executors decide where each stage runs (``pipeline.executors``). The write stage writes only
its own scene group (the cache marks it complete last); every failure comes back as a
``SceneResult`` with a reason instead of an exception (``pipeline.scene_result``), so one bad
scene never stops the run.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd.core import TttkdError
from tttkd.pipeline.cache import SceneRecord
from tttkd.pipeline.plan import SceneJob

# prepare_scene looks build_record up here, so a test may replace it in a worker process
from tttkd.pipeline.prep_cpu import build_record
from tttkd.pipeline.prep_teacher import (
    _TEACHERS,
    EncodedPiece,
    encode_pieces,
    get_teacher,
    sample_features,
)
from tttkd.pipeline.scene_result import SceneFailure, SceneResult, failure_reason
from tttkd.pipeline.scene_timeout import scene_deadline

__all__ = [  # the stages, and what callers of the stages use from the modules behind them
    "_TEACHERS",
    "EncodedPiece",
    "PreparedScene",
    "SceneFailure",
    "SceneResult",
    "build_record",
    "encode_pieces",
    "get_teacher",
    "images_of",
    "piece_of",
    "prep_scene",
    "prepare_scene",
    "sample_features",
    "write_prepared",
]


def _cache(job: SceneJob) -> Any:
    """Opened per scene (a few ms): a cache rebuilt with --overwrite is never seen stale."""
    from tttkd.pipeline.cache import Cache

    return Cache.open(job.config.out, storage_options=job.config.storage_options)


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


def _failed(job: SceneJob, e: BaseException, t_start: float) -> SceneResult:
    detail = "" if isinstance(e, (SceneFailure, TttkdError)) else traceback.format_exc(limit=8)
    return SceneResult(
        job.scene_id, "failed", failure_reason(e), seconds=_since(t_start), detail=detail
    )


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
