"""The Python API: a few thin functions over what ``tttkd-train`` and ``tttkd-adapt`` use.

Everything here delegates to the library (``model.checkpoint``, ``model.minkunet``,
``pipeline.cache``, ``adapt.scenes``, ``adapt.methods``, ``adapt.runner``), so a scene adapted
from a script gets the same predictions as the same scene in a ``tttkd-adapt`` run. Imports
are lazy: ``import tttkd`` stays cheap (no torch, no zarr).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tttkd._public import API_NAMES

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tttkd.adapt.methods.base import Method, SceneOutcome
    from tttkd.adapt.scenes import SceneData
    from tttkd.model.checkpoint import CheckpointInfo
    from tttkd.model.minkunet import MinkUNet
    from tttkd.model.network import SegKDNet
    from tttkd.pipeline.cache import Cache

__all__ = list(API_NAMES)


@dataclass(frozen=True)
class LoadedModel:
    """A trained network with its checkpoint metadata (label set, teacher, voxel size)."""

    net: SegKDNet
    info: CheckpointInfo
    path: Path

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)


def load_checkpoint(
    path: str | Path, *, backend: str | None = None, device: str = "cpu"
) -> LoadedModel:
    """A ``tttkd-train`` checkpoint, rebuilt and loaded strictly (weights are data only).

    ``backend``: the sparse backend to run on (``auto`` picks per device and checks it
    against the reference); None keeps the checkpoint's.
    """
    from tttkd.model.checkpoint import load_checkpoint as _load
    from tttkd.model.sparse.select import resolve_backend

    chosen = resolve_backend(backend, device) if backend is not None else None
    net, info = _load(path, backend=chosen, device=device)
    return LoadedModel(net=net, info=info, path=Path(path))


def create_backbone(
    name: str = "minkunet34c",
    *,
    in_channels: int = 3,
    backend: str = "auto",
    device: str = "cpu",
    stem_kernel: int | None = None,
    bn_momentum: float = 0.1,
) -> MinkUNet:
    """An untrained 3D backbone by name (``minkunet34c``, ``minkunet18a``, ...), like timm's
    ``create_model``; ``backend="auto"`` picks the fastest verified one for ``device``."""
    from tttkd.model.minkunet import build_backbone
    from tttkd.model.sparse.select import resolve_backend

    net = build_backbone(
        name,
        in_channels=in_channels,
        stem_kernel=stem_kernel,
        bn_momentum=bn_momentum,
        backend=resolve_backend(backend, device),
    )
    return net.to(device)


@dataclass(frozen=True)
class SceneRef:
    """One complete scene of an open cache; read when a method needs it (by
    :func:`adapt_scene`, at the network's voxel size and on its device)."""

    cache: Cache
    scene_id: str

    def info(self) -> dict:
        """The scene's attrs in the cache (split, counts, source files)."""
        return self.cache.scene_info(self.scene_id)


class CacheReader:
    """A cache opened read-only. ``scene_ids()`` lists complete scenes, ``scene(id)`` picks
    one; ``cache`` is the full :class:`~tttkd.pipeline.cache.store.Cache` (``read_scene``, ...)."""

    def __init__(self, cache: Cache):
        self.cache = cache

    def __repr__(self) -> str:
        return f"CacheReader({self.cache.url!r}, {len(self.scene_ids())} scenes)"

    @property
    def class_names(self) -> list[str]:
        return list(self.cache.meta.class_names)

    def scene_ids(self, split: str | None = None) -> list[str]:
        """Complete scenes (of ``split``, e.g. ``val``), sorted."""
        return self.cache.scene_ids(split)

    def scene(self, scene_id: str) -> SceneRef:
        """A complete scene by id; a missing or incomplete one is an error naming the cache."""
        from tttkd.adapt.config import AdaptConfig
        from tttkd.adapt.runner import select_scenes

        select_scenes(self.cache, AdaptConfig(scenes=(scene_id,)))  # same check as tttkd-adapt
        return SceneRef(self.cache, scene_id)


def open_cache(url: str, *, storage_options: dict | None = None) -> CacheReader:
    """A ``tttkd-prep`` cache (a local path or an fsspec URL), read-only."""
    from tttkd.pipeline.cache import Cache

    return CacheReader(Cache.open(url, read_only=True, storage_options=storage_options))


@dataclass
class AdaptedScene:
    """What :func:`adapt_scene` returns.

    ``logits``: float32 [N_cached, C], summed over the rotations, per cached point;
    ``predictions``: int64 per original point of the scene (-1 where a point has no voxel);
    ``outcome``: steps, losses, fallback, timing; ``method``: the method object, whose
    ``net`` holds the weights after the scene (offline methods such as ``ttt-kd`` reset to
    the trained weights after each scene, online ones carry theirs to the next call).
    """

    scene_id: str
    logits: torch.Tensor
    predictions: np.ndarray
    outcome: SceneOutcome
    method: Method
    scene: SceneData
    notes: list[str]


def adapt_scene(
    model: LoadedModel,
    scene: SceneRef,
    method: str = "ttt-kd",
    steps: int = 100,
    *,
    device: str = "cpu",
    backend: str | None = None,
    seed: int = 0,
    **options: Any,
) -> AdaptedScene:
    """Adapt ``model`` to one scene with ``method`` and predict it, exactly as ``tttkd-adapt``
    does for a run of that one scene.

    ``options``: any other :class:`~tttkd.adapt.config.AdaptConfig` field (``lr``,
    ``rotations``, ``rotation_protocol``, ``max_images``, ``bn_mode``, ...). ``backend``:
    None keeps the checkpoint's, ``auto`` picks per device. The model is not changed.
    """
    import torch

    from tttkd.adapt.config import AdaptConfig
    from tttkd.adapt.evaluation import full_resolution
    from tttkd.adapt.methods import METHODS, make_method
    from tttkd.adapt.runner import select_scenes
    from tttkd.adapt.scenes import load_scene
    from tttkd.model.sparse.select import resolve_backend

    cfg = AdaptConfig(
        methods=(method,),
        steps=steps,
        device=device,
        backend=backend,
        seed=seed,
        scenes=(scene.scene_id,),
        **options,
    )
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    select_scenes(scene.cache, cfg)  # here: its incomplete-cache warning points at this line
    teacher = METHODS[method].uses_teacher
    voxel_size, notes = _fit_notes(model.info, scene.cache, teacher)
    dev = torch.device(device)
    net = _net_on(model.net, dev)
    torch.manual_seed(cfg.seed)  # the runner seeds once per run, before its first scene
    chosen = resolve_backend(cfg.backend or model.info.backend, dev)
    data = load_scene(
        scene.cache,
        scene.scene_id,
        device=dev,
        backend=chosen,
        max_images=cfg.max_images,
        seed=cfg.seed,
        voxel_size=voxel_size,
        teacher=teacher,
    )
    runner = make_method(method, net, cfg)
    outcome = runner.process(data)
    pred = outcome.logits.argmax(1).numpy()
    return AdaptedScene(
        scene_id=scene.scene_id,
        logits=outcome.logits,
        predictions=full_resolution(pred, data.record.voxel_of_point),
        outcome=outcome,
        method=runner,
        scene=data,
        notes=notes,
    )


def _fit_notes(info: CheckpointInfo, cache: Cache, teacher: bool) -> tuple[float, list[str]]:
    """``tttkd-adapt``'s checks that checkpoint and cache fit (teacher when ``teacher``, voxel
    size): the voxel size to read scenes at, and notes on harmless differences."""
    from tttkd.adapt.runner import check_teacher, network_voxel_size

    notes = check_teacher(info, cache) if teacher else []
    voxel_size, voxel_notes = network_voxel_size(info, cache)
    return voxel_size, notes + voxel_notes


def _net_on(net: SegKDNet, device: torch.device) -> SegKDNet:
    """``net`` itself when it is on ``device``, else a copy moved there (the model stays)."""
    import copy

    on_dev = next(net.parameters()).device == device
    return net if on_dev else copy.deepcopy(net).to(device)
