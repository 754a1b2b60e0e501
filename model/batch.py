"""One explicit batch structure for the 3D network, and its collate.

A :class:`Sample` is one scene as the training / adaptation code reads it from the cache
(one row per voxel); :func:`collate` stacks samples into a :class:`Batch`, adding the batch
column to the coordinates and shifting every index (voxel rows, image numbers, full-point
maps) by the running offsets, so a batch is indexed exactly like one big scene.

Correspondence convention: pair ``m`` says voxel row ``corr_point[m]`` is seen by image
``corr_image[m]`` at ``corr_uv[m] = (x, y)`` in FEATURE-GRID coordinates of that image's
teacher map (cell at row ``j``, column ``i`` has its centre at ``(i, j)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

__all__ = ["Batch", "Sample", "collate"]


@dataclass
class Sample:
    """One scene: ``coords`` int32 ``[N, 3]`` voxel indices (no batch column), ``feats`` [N, C]."""

    coords: Tensor
    feats: Tensor
    labels: Tensor | None = None  # int64 [N], -1 = ignore
    point_to_voxel: Tensor | None = None  # int64 [P]: voxel row of each stored (fine) point
    corr_point: Tensor | None = None  # int64 [M]
    corr_image: Tensor | None = None  # int64 [M], index into teacher_maps
    corr_uv: Tensor | None = None  # float32 [M, 2], feature-grid (x, y)
    teacher_maps: list[Tensor] = field(default_factory=list)  # one [h, w, D] per image
    scene_id: str = ""

    def __post_init__(self) -> None:
        n = self.coords.shape[0]
        if self.coords.dim() != 2 or self.coords.shape[1] != 3:
            raise ValueError(f"Sample.coords must be [N, 3], got {tuple(self.coords.shape)}")
        if self.feats.shape[0] != n:
            raise ValueError(f"feats rows {self.feats.shape[0]} != coords rows {n}")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels must be [{n}], got {tuple(self.labels.shape)}")
        corr = (self.corr_point, self.corr_image, self.corr_uv)
        if any(c is not None for c in corr):
            if any(c is None for c in corr):
                raise ValueError("corr_point, corr_image and corr_uv go together")
            m = self.corr_point.shape[0]
            if self.corr_image.shape != (m,) or self.corr_uv.shape != (m, 2):
                raise ValueError("corr_point [M], corr_image [M], corr_uv [M, 2] disagree")
            if m and int(self.corr_image.max()) >= len(self.teacher_maps):
                raise ValueError(
                    f"corr_image refers to image {int(self.corr_image.max())} but the sample "
                    f"has {len(self.teacher_maps)} teacher maps"
                )


@dataclass
class Batch:
    """Several scenes as one: ``coords`` int32 ``[N, 4]`` = (batch, x, y, z)."""

    coords: Tensor
    feats: Tensor
    offsets: Tensor  # int64 [B+1]: voxel rows of scene b are offsets[b]:offsets[b+1]
    labels: Tensor | None = None
    point_to_voxel: Tensor | None = None  # int64 [P], rows into the batch's voxels
    point_offsets: Tensor | None = None  # int64 [B+1] over the stored (fine) points
    corr_point: Tensor | None = None
    corr_image: Tensor | None = None  # index into teacher_maps (all scenes' images in order)
    corr_uv: Tensor | None = None
    teacher_maps: list[Tensor] = field(default_factory=list)
    image_offsets: Tensor | None = None  # int64 [B+1] over teacher_maps
    scene_ids: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.offsets.numel() - 1

    @property
    def has_correspondences(self) -> bool:
        return self.corr_point is not None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor (teacher maps included) on ``device``."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                moved[f.name] = v.to(device, non_blocking=non_blocking)
            elif f.name == "teacher_maps":
                moved[f.name] = [m.to(device, non_blocking=non_blocking) for m in v]
        return replace(self, **moved)


def _offsets(sizes: Sequence[int]) -> Tensor:
    out = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    out[1:] = torch.tensor(list(sizes), dtype=torch.int64).cumsum(0)
    return out


def _all_or_none(samples: Sequence[Sample], name: str) -> bool:
    present = [getattr(s, name) is not None for s in samples]
    if any(present) and not all(present):
        raise ValueError(f"some samples have {name} and some do not; cannot collate")
    return all(present)


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack scenes into one :class:`Batch`, shifting every index by the running offsets."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    offsets = _offsets([s.coords.shape[0] for s in samples])
    coords = torch.cat(
        [
            torch.cat([torch.full((s.coords.shape[0], 1), b, dtype=torch.int32), s.coords.int()], 1)
            for b, s in enumerate(samples)
        ]
    )
    batch = Batch(
        coords=coords,
        feats=torch.cat([s.feats for s in samples]),
        offsets=offsets,
        scene_ids=[s.scene_id for s in samples],
    )
    if _all_or_none(samples, "labels"):
        batch.labels = torch.cat([s.labels.long() for s in samples])
    if _all_or_none(samples, "point_to_voxel"):
        batch.point_to_voxel = torch.cat(
            [s.point_to_voxel.long() + offsets[b] for b, s in enumerate(samples)]
        )
        batch.point_offsets = _offsets([s.point_to_voxel.shape[0] for s in samples])
    if _all_or_none(samples, "corr_point"):
        image_offsets = _offsets([len(s.teacher_maps) for s in samples])
        batch.corr_point = torch.cat(
            [s.corr_point.long() + offsets[b] for b, s in enumerate(samples)]
        )
        batch.corr_image = torch.cat(
            [s.corr_image.long() + image_offsets[b] for b, s in enumerate(samples)]
        )
        batch.corr_uv = torch.cat([s.corr_uv.float() for s in samples])
        batch.teacher_maps = [m for s in samples for m in s.teacher_maps]
        batch.image_offsets = image_offsets
    return batch
