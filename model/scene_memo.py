"""Decoded scenes kept in memory by the training process, so each is read once per run.

Why: every epoch reads every scene again (Mix3D: about 1.5 times), and a read is Zarr I/O,
checksums and feature decoding, a large share of a CPU training step on small scenes. The
items do not change: the memo holds exactly what ``Cache.read_scene`` / ``read_points``
return, and :func:`image_subset` gives the arrays a read of an image subset returns (decoding
is per image, so a subset of the decoded scene equals the decoded subset, bit for bit).

Bounded by ``budget_bytes``: a scene is admitted when its size, estimated from its counts
before it is read, still fits; one that does not is read from the cache on every use, an
image subset at a time, as without the memo. Nothing is evicted: an epoch visits every
scene, so a least-recently-used memo smaller than the split would drop each scene just
before its next use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tttkd.pipeline.cache import SceneRecord

__all__ = ["SceneMemo", "estimated_bytes", "image_subset", "record_bytes", "without_full_points"]

MIB = 1 << 20


def record_bytes(rec: SceneRecord) -> int:
    """Bytes of a record's arrays (what keeping it costs)."""
    arrays = [
        rec.xyz, rec.rgb, rec.label, rec.voxel_of_point, rec.full_label, rec.K, rec.c2w,
        rec.image_size, rec.corr_point, rec.corr_image, rec.corr_uv, rec.corr_offsets,
    ]  # fmt: skip
    if rec.features is not None:
        arrays.append(rec.features)
    return int(sum(a.nbytes for a in arrays))


def estimated_bytes(counts: dict, *, features: bool, full_points: bool) -> int:
    """A record's bytes from its scene's ``counts`` attribute (no array is read)."""
    points = int(counts.get("points", 0))
    corr = int(counts.get("correspondences", 0))
    images = int(counts.get("images", 0))
    total = points * (12 + 3 + 2) + corr * (4 + 2 + 8) + images * (36 + 64 + 8 + 8)
    if full_points:
        total += int(counts.get("full_points", 0)) * (4 + 2)
    if features:
        h, w = counts.get("feature_grid", (0, 0))
        total += images * int(h) * int(w) * int(counts.get("feature_dim", 0)) * 2  # float16
    return total


def image_subset(rec: SceneRecord, images: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(corr_point, corr_image, corr_uv)`` of ``images`` (in that order), re-indexed to
    ``0..len(images)-1``: what ``Cache.read_scene(images=...)`` returns, from a full record."""
    idx = np.asarray(images, dtype=np.int64).reshape(-1)
    offsets = rec.corr_offsets
    starts, ends = offsets[idx], offsets[idx + 1]
    corr_image = np.repeat(np.arange(len(idx)), ends - starts).astype(np.int16)
    if len(idx) == rec.num_images and np.array_equal(idx, np.arange(len(idx))):
        return rec.corr_point, corr_image, rec.corr_uv  # every image, in order
    if not (ends - starts).sum():
        return rec.corr_point[:0], corr_image, rec.corr_uv[:0]
    take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    return rec.corr_point[take], corr_image, rec.corr_uv[take]


class SceneMemo:
    """``(kind, scene id) -> SceneRecord`` for records that fit in ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self.used_bytes = 0
        self.reads = 0  # records read from the cache through the memo
        self._records: dict[tuple[str, str], SceneRecord] = {}
        self._refused: set[tuple[str, str]] = set()

    @classmethod
    def from_mb(cls, budget_mb: float) -> SceneMemo | None:
        """A memo of ``budget_mb`` MiB; ``None`` (no memo) for 0."""
        return cls(int(budget_mb * MIB)) if budget_mb > 0 else None

    def __len__(self) -> int:
        return len(self._records)

    def admits(self, key: tuple[str, str], estimate: Callable[[], int]) -> bool:
        """Whether ``key`` is held or will be on its first read (``estimate``: its bytes,
        asked once per key)."""
        if key in self._records:
            return True
        if key in self._refused:
            return False
        if self.used_bytes + estimate() <= self.budget_bytes:
            return True
        self._refused.add(key)
        return False

    def get(self, key: tuple[str, str], read: Callable[[], SceneRecord]) -> SceneRecord:
        """The held record of ``key``, or ``read()``'s, kept when it still fits."""
        rec = self._records.get(key)
        if rec is not None:
            return rec
        rec = read()
        self.reads += 1
        size = record_bytes(rec)
        if self.used_bytes + size <= self.budget_bytes:
            self._records[key] = rec
            self.used_bytes += size
        else:
            self._refused.add(key)
        return rec


def without_full_points(rec: SceneRecord) -> SceneRecord:
    """``rec`` without its full-resolution map (training items never use it)."""
    return replace(
        rec,
        voxel_of_point=rec.voxel_of_point[:0],
        full_label=rec.full_label[:0],
    )
