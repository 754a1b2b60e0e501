"""Which frames of a scene the teacher sees (METHOD.md, "Images").

ScanNet: every frame the reader gives (the 25k subset, ~every 100th frame). S3DIS,
Matterport3D: all frames, or ``max_images`` (default 50) chosen at random when there are more.
The draw is seeded per scene from ``(seed, crc32(scene_id))``, so it does not depend on the
order or the machine scenes are processed in, and the chosen names are recorded in the cache.
Frames with a non-finite or singular pose, or non-finite intrinsics, are dropped first (the
readers already skip them; this is the guard for any reader that does not).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from tttkd.core import Frame


@dataclass(frozen=True)
class ImagePolicy:
    """``max_images=None``: every valid frame; otherwise a seeded random subset of that size."""

    max_images: int | None = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None (all), got {self.max_images}")

    def to_dict(self) -> dict:
        return {
            "selection": "all" if self.max_images is None else "random",
            "max_images": self.max_images,
            "seed": self.seed,
        }


def resolve_image_policy(
    default_max_images: int | None, max_images: int | None, seed: int
) -> ImagePolicy:
    """CLI value -> policy: ``None`` = the dataset's default, ``0`` = all frames."""
    if max_images is None:
        max_images = default_max_images
    elif max_images == 0:
        max_images = None
    return ImagePolicy(max_images=max_images, seed=seed)


@dataclass(frozen=True)
class FrameSelection:
    frames: list[Frame]
    available: int  # frames the reader gave
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    scene_seed: list[int] | None = None  # the seed sequence of the random draw, if any

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    def to_dict(self) -> dict:
        return {
            "available": self.available,
            "selected": self.names,
            "dropped": [list(d) for d in self.dropped],
            "scene_seed": self.scene_seed,
        }


def frame_problem(frame: Frame) -> str | None:
    """Why a frame cannot be used for projection, or None."""
    c2w = np.asarray(frame.c2w, dtype=np.float64)
    K = np.asarray(frame.K, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        return "non-finite camera pose"
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] == 0 or K[1, 1] == 0:
        return "invalid intrinsics"
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-6:
        return "singular camera pose"
    if frame.width <= 0 or frame.height <= 0:
        return "empty image size"
    return None


def scene_seed(seed: int, scene_id: str) -> list[int]:
    return [int(seed), zlib.crc32(scene_id.encode("utf-8"))]


def select_frames(frames: list[Frame], policy: ImagePolicy, scene_id: str) -> FrameSelection:
    """Drop unusable frames, then apply the policy; the original frame order is kept."""
    dropped, valid = [], []
    for f in frames:
        problem = frame_problem(f)
        if problem is None:
            valid.append(f)
        else:
            dropped.append((f.name, problem))
    if policy.max_images is None or len(valid) <= policy.max_images:
        return FrameSelection(valid, len(frames), dropped)
    seq = scene_seed(policy.seed, scene_id)
    chosen = np.random.default_rng(seq).choice(len(valid), policy.max_images, replace=False)
    return FrameSelection([valid[i] for i in np.sort(chosen)], len(frames), dropped, seq)
