"""The teacher stage of prep: one teacher per process, and images encoded in large batches.

The teacher is built once per process (``_TEACHERS``, keyed by its arguments), never per
scene, and only where the teacher stage runs; ``_BUILDS`` counts the builds (reported with
every scene, and tested to stay 1 per worker).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tttkd.core import TttkdError
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.frames import select_frames
from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.scene_result import SceneFailure
from tttkd.pipeline.teacher import TeacherSpec

_TEACHERS: dict[tuple, Any] = {}
_BUILDS = {"teacher": 0}  # teachers built by this process (reported, and tested to stay 1)


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


def teacher_spec(job: SceneJob) -> TeacherSpec:
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


@dataclass(frozen=True)
class EncodedPiece:
    """Teacher features (fp16) for a run of one scene's images, and who encoded them."""

    features: np.ndarray  # (n, h, w, D) float16
    seconds: float
    pid: int
    builds: int


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
