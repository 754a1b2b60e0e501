"""Training and validation items read from the teacher cache.

One item = one scene (two under Mix3D): its points, labels and, for the distillation loss, a
random subset of at most ``max_images`` of its images with their correspondences; only those
images' feature chunks are read, never every image of the scene. The cache keeps the points
on a grid finer than the network voxel (schema 2, ``point_voxel_size``); only after
augmentation are they voxelized at the network's ``voxel_size`` (:func:`to_sample`, the one
function every consumer uses: training, validation, TTT views, DUA passes), so a rotated and
scaled view has the voxels the dense scan would give, not the holes of a re-binned lattice.
Every point keeps its voxel row (``Sample.point_to_voxel``), so both losses are per point: the
segmentation loss gathers the voxel logits of each point, and each pair's point is mapped to
its voxel row.

Randomness: an item is a pure function of ``(seed, epoch, index)`` (one numpy Generator per
item), so DataLoader workers, their number and a resumed run all see the same data.
The cache is opened lazily, once per worker process. With a :class:`SceneMemo` (training in
the main process, ``runtime.scene_cache_mb``) each scene is read and decoded once and its image
subsets are cut in memory; the items are bit-identical to those read from the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tttkd.core import DatasetError
from tttkd.model.augment import PointSet, augment, mix3d
from tttkd.model.batch import Batch, Sample, collate
from tttkd.model.config import AugmentConfig
from tttkd.model.scene_memo import SceneMemo, estimated_bytes, image_subset, without_full_points

if TYPE_CHECKING:
    from tttkd.pipeline.cache import SceneRecord

__all__ = ["CacheSceneDataset", "Item", "TrainBatch", "collate_items", "rgb_to_features"]

IN_CHANNELS = 3  # network input: RGB


def rgb_to_features(rgb: np.ndarray) -> Tensor:
    """float32 [N, 3] in [-1, 1] from 0..255 colours (the network's input features)."""
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0)


@dataclass
class Item:
    """One dataset item: ``sample.point_to_voxel[p]`` is the voxel row of point ``p``."""

    sample: Sample
    point_labels: Tensor  # int64 [P]
    full_point: Tensor | None = None  # int64 [F]: point row of each full-resolution point
    full_labels: Tensor | None = None  # int64 [F]


@dataclass
class TrainBatch:
    """``batch`` (voxels; pairs already on voxel rows) + per-point labels and the full map."""

    batch: Batch
    point_labels: Tensor
    full_point: Tensor | None = None  # rows into batch.point_to_voxel
    full_labels: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainBatch:
        out = {"batch": self.batch.to(device, non_blocking)}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = v.to(device, non_blocking=non_blocking)
        return replace(self, **out)


def collate_items(items: Sequence[Item]) -> TrainBatch:
    """Stack items; point rows and full-resolution maps shift by the running point counts."""
    batch = collate([it.sample for it in items])
    labels = torch.cat([it.point_labels for it in items])
    full_point = full_labels = None
    if all(it.full_point is not None for it in items):
        starts = batch.point_offsets[:-1]
        full_point = torch.cat([it.full_point + starts[b] for b, it in enumerate(items)])
        full_labels = torch.cat([it.full_labels for it in items])
    return TrainBatch(batch, labels, full_point, full_labels)


def to_sample(ps: PointSet, voxel_size: float, *, with_corr: bool) -> tuple[Sample, Tensor]:
    """Voxelize ``ps`` at the network's ``voxel_size`` and map every point and pair to it.

    Call it after any geometric augmentation. A voxel's input features are the colour of its
    representative point (the one nearest the voxel centre, ``pipeline.voxelize``), not a
    mean: a real measurement, and the same rule at training and test time; its label is that
    point's label too (``Sample.labels``; losses and scores use the per-point labels).
    """
    from tttkd.pipeline.voxelize import voxelize

    vox = voxelize(ps.xyz, voxel_size, label=ps.label)
    p2v = vox.voxel_of_point.astype(np.int64)
    sample = Sample(
        coords=torch.from_numpy(vox.grid_coord.astype(np.int32)),
        feats=rgb_to_features(ps.rgb[vox.keep]),
        labels=torch.from_numpy(vox.label.astype(np.int64)),
        point_to_voxel=torch.from_numpy(p2v),
        scene_id=ps.scene_id,
    )
    if with_corr:
        sample.teacher_maps = [torch.from_numpy(np.ascontiguousarray(m)) for m in ps.maps]
        sample.corr_point = torch.from_numpy(p2v[ps.corr_point])
        sample.corr_image = torch.from_numpy(ps.corr_image.astype(np.int64))
        sample.corr_uv = torch.from_numpy(ps.corr_uv.astype(np.float32))
        sample.__post_init__()  # check the pairs against the maps
    return sample, torch.from_numpy(ps.label.astype(np.int64))


class CacheSceneDataset(Dataset):
    """The scenes of one split of a cache.

    ``train=True``: augmentation, Mix3D and a random image subset per item (``with_images``).
    ``train=False``: the points as stored (no images), plus the full-resolution map when
    ``full_resolution``.
    """

    def __init__(
        self,
        url: str,
        split: str,
        *,
        voxel_size: float,
        train: bool,
        augment_cfg: AugmentConfig | None = None,
        max_images: int = 8,
        with_images: bool = True,
        full_resolution: bool = False,
        seed: int = 0,
        scene_ids: Sequence[str] | None = None,
        storage_options: dict | None = None,
        memo: SceneMemo | None = None,
    ) -> None:
        from tttkd.pipeline.cache import Cache, warn_incomplete

        self.url = url
        self.split = split
        self.voxel_size = float(voxel_size)
        self.train = train
        self.augment_cfg = augment_cfg if train else None
        self.max_images = max_images
        self.with_images = with_images and train
        self.full_resolution = full_resolution
        self.seed = seed
        self.epoch = 0
        self.storage_options = storage_options
        self.memo = memo  # decoded scenes kept in this process (None: read every time)
        cache = Cache.open(url, read_only=True, storage_options=storage_options)
        if scene_ids is None:
            warn_incomplete(cache)  # skipped scenes are counted, never silent
        self.scene_ids = list(scene_ids) if scene_ids is not None else cache.scene_ids(split)
        if not self.scene_ids:
            splits = sorted({str(cache.scene_info(s).get("split")) for s in cache.scene_ids()})
            raise DatasetError(
                f"the cache has no complete scene in split {split!r} (it has: {splits})",
                file=url,
                fix="pick one of those splits (--set data.train_split=... / data.val_split=...)",
            )
        self._cache = None

    def __getstate__(self) -> dict:  # workers reopen the cache themselves
        state = dict(self.__dict__)
        state["_cache"] = None
        state["memo"] = None  # a worker's memo would die with it at the end of the epoch
        return state

    @property
    def cache(self):
        if self._cache is None:
            from tttkd.pipeline.cache import Cache

            self._cache = Cache.open(self.url, read_only=True, storage_options=self.storage_options)
        return self._cache

    def __len__(self) -> int:
        return len(self.scene_ids)

    def set_epoch(self, epoch: int) -> None:
        """Items of ``epoch`` differ from other epochs' (call before iterating)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def read(self, index: int, rng: np.random.Generator) -> PointSet:
        """Scene ``index`` as a PointSet, with a random image subset when training with images."""
        sid = self.scene_ids[index]
        if not self.with_images:
            rec = self._points(sid)
            pairs = (rec.corr_point, rec.corr_image, rec.corr_uv)
            maps: list[np.ndarray] = []
        elif self._memo_admits("scene", sid):
            rec = self.memo.get(("scene", sid), lambda: self._read_whole_scene(sid))
            chosen = self._choose_images(rec.num_images, rng)
            pairs = image_subset(rec, np.asarray(chosen, dtype=np.int64))
            maps = [rec.features[i] for i in chosen]
        else:
            chosen = self._choose_images(int(self.cache.scene_info(sid)["counts"]["images"]), rng)
            rec = self.cache.read_scene(sid, images=chosen, features=True)
            pairs = (rec.corr_point, rec.corr_image, rec.corr_uv)
            maps = [rec.features[i] for i in range(len(rec.features))]
        corr_point, corr_image, corr_uv = pairs
        return PointSet(
            xyz=rec.xyz.astype(np.float64),
            rgb=rec.rgb.astype(np.float32),
            label=rec.label.astype(np.int64),
            corr_point=corr_point.astype(np.int64),
            corr_image=corr_image.astype(np.int64),
            corr_uv=corr_uv.astype(np.float32),
            maps=maps,
            scene_id=sid,
        )

    def _choose_images(self, n_img: int, rng: np.random.Generator) -> np.ndarray | list:
        """The sorted random subset of at most ``max_images`` of ``n_img`` images."""
        k = n_img if self.max_images == 0 else min(self.max_images, n_img)
        return np.sort(rng.choice(n_img, size=k, replace=False)) if k else []

    def _memo_admits(self, kind: str, sid: str) -> bool:
        """Whether the memo holds (or will keep) ``sid``'s record of ``kind``: ``scene``
        (every image, decoded), ``points`` or ``points+full`` (with the full-resolution map)."""
        if self.memo is None:
            return False
        return self.memo.admits(
            (kind, sid),
            lambda: estimated_bytes(
                self.cache.scene_info(sid)["counts"],
                features=kind == "scene",
                full_points=kind == "points+full",
            ),
        )

    def _read_whole_scene(self, sid: str) -> SceneRecord:
        return without_full_points(self.cache.read_scene(sid, features=True))

    def _points(self, sid: str) -> SceneRecord:
        """``read_points`` of ``sid``, through the memo when it admits the scene."""
        kind = "points+full" if self.full_resolution else "points"
        if not self._memo_admits(kind, sid):
            return self.cache.read_points(sid)
        if self.full_resolution:
            return self.memo.get((kind, sid), lambda: self.cache.read_points(sid))
        return self.memo.get((kind, sid), lambda: without_full_points(self.cache.read_points(sid)))

    def __getitem__(self, index: int) -> Item:
        if not self.train:
            return self._val_item(index)
        rng = self.rng(index)
        ps = self.read(index, rng)
        cfg = self.augment_cfg
        if cfg is not None and cfg.enabled:
            ps = augment(ps, rng, cfg)
            if len(self) > 1 and rng.random() < cfg.mix3d_p:
                other = int(rng.integers(len(self) - 1))
                other += other >= index  # any scene but this one
                ps = mix3d(ps, augment(self.read(other, rng), rng, cfg))
        sample, labels = to_sample(ps, self.voxel_size, with_corr=self.with_images)
        return Item(sample, labels)

    def _val_item(self, index: int) -> Item:
        sid = self.scene_ids[index]
        rec = self._points(sid)
        ps = PointSet.points_only(rec.xyz, rec.rgb, rec.label, scene_id=sid)
        sample, labels = to_sample(ps, self.voxel_size, with_corr=False)
        item = Item(sample, labels)
        if self.full_resolution:
            item.full_point = torch.from_numpy(rec.voxel_of_point.astype(np.int64))
            item.full_labels = torch.from_numpy(rec.full_label.astype(np.int64))
        return item
