"""One test scene as every method sees it: read once, teacher sampled once, views per rotation.

The runner loads a scene once and hands the same :class:`SceneData` to every method. What
depends only on the scene (teacher targets at the correspondences, full-resolution labels) is
computed at load; what depends on the rotation (voxel coordinates, input features, the
sparse context with its kernel maps) is a :class:`View`, built once per rotation and reused by
every method and every TTT step. Contexts hold no autograd state, so sharing them is safe.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from tttkd.adapt.kd_targets import unit_target_sums
from tttkd.adapt.rotations import rotate_about_up
from tttkd.model.sparse.base import SparseContext
from tttkd.pipeline.cache import Cache, SceneRecord

__all__ = [
    "SceneData",
    "View",
    "image_subset",
    "load_scene",
    "network_input",
    "scene_seed",
]


def scene_seed(seed: int, scene_id: str, purpose: str = "") -> int:
    """A seed from the run seed and the scene id alone, so results never depend on order."""
    digest = hashlib.sha256(f"{seed}/{scene_id}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_subset(num_images: int, max_images: int | None, seed: int, scene_id: str) -> list[int]:
    """Sorted indices of the images to read: all, or a seeded subset of ``max_images``."""
    if max_images is None or num_images <= max_images:
        return list(range(num_images))
    rng = np.random.default_rng(scene_seed(seed, scene_id, "images"))
    return sorted(rng.choice(num_images, size=max_images, replace=False).tolist())


def network_input(
    rec: SceneRecord, xyz: np.ndarray, voxel_size: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(coords int32 [N, 3], feats [N, C], row_of_point int64 [N_cached])`` for the cached
    points placed at ``xyz``: exactly training's input path (``model.data.to_sample``)."""
    from tttkd.model.augment import PointSet
    from tttkd.model.data import to_sample

    ps = PointSet.points_only(xyz, rec.rgb, rec.label, scene_id=rec.scene_id)
    sample, _ = to_sample(ps, voxel_size, with_corr=False)
    return sample.coords, sample.feats, sample.point_to_voxel


@dataclass
class View:
    """The network input of a scene under one rotation (rows = voxels of that view)."""

    angle: float
    coords: Tensor  # int32 [N, 4] (batch 0, x, y, z)
    feats: Tensor  # float32 [N, C]
    context: SparseContext
    row_of_point: Tensor  # int64 [N_cached]: voxel row of each cached point
    kd_rows: Tensor  # int64 [R]: rows seen by at least one image
    kd_targets: Tensor  # float32 [R, D]: sum of the unit teacher vectors of each row's pairs

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])


@dataclass
class SceneData:
    """One scene, loaded once and shared by every method of a run.

    Teacher targets are kept per cached point, not per pair: the cosine loss over pairs
    ``sum_j (1 - cos(a_p, t_j))`` equals ``n_p - a_p/|a_p| . sum_j t_j/|t_j|``, so each
    point needs only the sum of its pairs' unit targets (``unit_sums``). Memory and the
    cost per TTT step then scale with points, not with (point, image) pairs.
    """

    scene_id: str
    record: SceneRecord  # points, labels, cameras (features dropped after sampling)
    images: list[int]  # which cached images were read
    seen_points: Tensor  # int64 [S]: cached points with at least one pair (on device)
    unit_sums: Tensor  # float32 [S, D]: sum over each point's pairs of unit teacher vectors
    num_pairs: int  # M, the number of (point, image) pairs: the loss is a mean over them
    device: torch.device
    voxel_size: float
    backend: str
    read_seconds: float = 0.0
    _views: dict[float, View] = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return self.record.num_points

    def view(self, angle: float) -> View:
        """The view at ``angle`` (radians about +Z), built on first use and then reused."""
        if angle not in self._views:
            self._views[angle] = self._build_view(angle)
        return self._views[angle]

    def drop_views(self) -> None:
        """Free the contexts (kernel maps) once every method is done with the scene."""
        self._views.clear()

    def _build_view(self, angle: float) -> View:
        xyz = rotate_about_up(self.record.xyz, angle)
        coords, feats, row_of_point = network_input(self.record, xyz, self.voxel_size)
        coords4 = torch.cat([torch.zeros((coords.shape[0], 1), dtype=torch.int32), coords], 1)
        coords4 = coords4.to(self.device)
        row_of_point = row_of_point.to(self.device)
        rows = row_of_point[self.seen_points]
        kd_rows, inverse = torch.unique(rows, sorted=True, return_inverse=True)
        if kd_rows.numel() == rows.numel():  # no two seen points share a voxel: a permutation
            kd_targets = torch.empty_like(self.unit_sums)
            kd_targets[inverse] = self.unit_sums
        else:
            kd_targets = self.unit_sums.new_zeros((kd_rows.numel(), self.unit_sums.shape[1]))
            kd_targets.index_add_(0, inverse, self.unit_sums)
        return View(
            angle=angle,
            coords=coords4,
            feats=feats.to(self.device),
            context=SparseContext(coords4, self.backend),
            row_of_point=row_of_point,
            kd_rows=kd_rows,
            kd_targets=kd_targets,
        )


def load_scene(
    cache: Cache,
    scene_id: str,
    *,
    device: torch.device | str,
    backend: str,
    max_images: int | None,
    seed: int,
    voxel_size: float | None = None,
    teacher: bool = True,
) -> SceneData:
    """Read a scene (points, a seeded image subset) and sample its teacher targets once.

    ``voxel_size``: the network's (from its checkpoint); default the cache's.
    ``teacher=False``: points only (no method of the run distils), nothing else is read.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    dim = int(cache.meta.teacher.get("dim", 0))
    if teacher:
        counts = cache.scene_info(scene_id).get("counts", {})
        n_img = int(counts.get("images", 0))
        images = image_subset(n_img, max_images, seed, scene_id)
        subset = None if len(images) == n_img else images
        rec = cache.read_scene(scene_id, images=subset, features=True)
        dim = int(rec.features.shape[-1]) if rec.num_images else dim
    else:
        images, rec = [], cache.read_points(scene_id)
    seen, sums = unit_target_sums(rec, device, dim)
    num_pairs = rec.num_corr
    rec.features = None  # the maps are no longer needed: the sums hold what TTT reads
    return SceneData(
        scene_id=scene_id,
        record=rec,
        images=images,
        seen_points=seen,
        unit_sums=sums,
        num_pairs=num_pairs,
        device=device,
        voxel_size=float(voxel_size or cache.meta.voxel_size),
        backend=backend,
        read_seconds=time.perf_counter() - t0,
    )
