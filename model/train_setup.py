"""Everything ``train`` builds before its first step: resolved config, device and backend,
run folder checks, network, data loaders, optimizer and schedule.

Kept apart from the loop so each piece is testable and the loop reads top to bottom.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from tttkd.model.config import ConfigError, TrainConfig, config_diff
from tttkd.model.data import IN_CHANNELS, CacheSceneDataset, collate_items
from tttkd.model.distributed import DistInfo
from tttkd.model.mae import MAEConfig
from tttkd.model.minkunet import build_backbone
from tttkd.model.network import KDHeadConfig, SegKDNet
from tttkd.model.scene_memo import SceneMemo
from tttkd.model.sparse.base import BackendUnavailableError
from tttkd.model.sparse.select import resolve_backend as select_backend

__all__ = [
    "CONFIG_FILE",
    "STATE_FILE",
    "build_network",
    "make_datasets",
    "make_optimizer",
    "prepare_out",
    "resolve_backend",
    "resolve_config",
    "resolve_device",
    "seed_all",
    "train_loader",
    "val_loader",
]

CONFIG_FILE = "config.yaml"
STATE_FILE = "train_state.pt"


def resolve_config(cfg: TrainConfig, meta) -> TrainConfig:
    """Fill what the cache decides (voxel size) and check the recipe fits the cache."""
    voxel = cfg.data.voxel_size if cfg.data.voxel_size is not None else meta.voxel_size
    if voxel < meta.voxel_size * (1 - 1e-6):
        raise ConfigError(
            f"data.voxel_size {voxel} is finer than the cache's {meta.voxel_size}: the cache "
            "holds one point per cache voxel, so there is nothing finer to train on; rebuild "
            f"the cache with tttkd-prep --voxel-size {voxel}"
        )
    if cfg.loss.kd and meta.image_policy.get("no_images"):
        raise ConfigError(
            "the cache was built without images (tttkd-prep --no-images), so there is nothing "
            "to distil: train Source-Only with --no-kd, or rebuild the cache with images"
        )
    return replace(cfg, data=replace(cfg.data, voxel_size=float(voxel)))


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """``auto``: this process's CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("runtime.device is cuda but torch sees no CUDA device")
        return torch.device("cuda", info.local_rank)
    return torch.device(name)


def resolve_backend(name: str, device: torch.device) -> str:
    """``auto``: the preferred backend for the device that passes its start-up check
    (``model/sparse/select.py``); a named one must import and pass the check."""
    try:
        return select_backend(name, device)
    except (BackendUnavailableError, ValueError) as err:  # not installed, unknown, refused
        raise ConfigError(f"runtime.backend: {err}") from err


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator third-party code may use)
    torch.manual_seed(seed)


def prepare_out(out: Path, cfg: TrainConfig, resume: bool) -> None:
    """A new run needs a folder without a run; a resumed one the same recipe (runtime aside)."""
    saved = out / CONFIG_FILE
    if not resume:
        if saved.exists() or (out / STATE_FILE).exists():
            raise ConfigError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        return
    import yaml

    from tttkd.model.config import config_from_dict

    if not saved.is_file() or not (out / STATE_FILE).is_file():
        raise ConfigError(
            f"{out} holds no run to resume ({CONFIG_FILE} / {STATE_FILE} missing); start "
            "without --resume"
        )
    diffs = config_diff(
        config_from_dict(yaml.safe_load(saved.read_text())), cfg, ignore=("runtime",)
    )
    if diffs:
        raise ConfigError(
            "--resume continues the saved recipe, but the config differs:\n    "
            + "\n    ".join(diffs)
            + "\n  fix: drop those overrides (runtime.* may change), or train into a new --out"
        )


def build_network(cfg: TrainConfig, num_classes: int, teacher_dim: int, backend: str) -> SegKDNet:
    m = cfg.model
    backbone = build_backbone(
        m.arch,
        in_channels=IN_CHANNELS,
        stem_kernel=m.stem_kernel,
        bn_momentum=m.bn_momentum,
        backend=backend,
    )
    mae = None
    if cfg.loss.ssl == "mae":
        mae = MAEConfig(cfg.loss.mae_mask_ratio, cfg.loss.mae_patch_size, m.kd_hidden, m.kd_norm)
    return SegKDNet(
        backbone, num_classes, teacher_dim, KDHeadConfig(m.kd_hidden, m.kd_norm), mae=mae
    )


def make_datasets(
    cfg: TrainConfig, cache_url: str, storage_options: dict | None
) -> tuple[CacheSceneDataset, CacheSceneDataset | None]:
    d = cfg.data
    # one memo for both sets, one budget; DataLoader workers restart every epoch, so a memo
    # pays only in the main process
    memo = SceneMemo.from_mb(cfg.runtime.scene_cache_mb) if cfg.runtime.num_workers == 0 else None
    train_ids = val_ids = None
    if d.val_fraction > 0:  # validate on held-out training scenes (model/selection.py)
        from tttkd.model.selection import held_out_scenes
        from tttkd.pipeline.cache import Cache

        cache = Cache.open(cache_url, read_only=True, storage_options=storage_options)
        every = cache.scene_ids(d.train_split)
        val_ids = held_out_scenes(every, d.val_fraction, cfg.seed) if every else None
        train_ids = [s for s in every if s not in set(val_ids or ())] or None
    train_set = CacheSceneDataset(
        cache_url,
        d.train_split,
        voxel_size=d.voxel_size,
        train=True,
        augment_cfg=cfg.augment,
        max_images=d.max_images,
        with_images=cfg.loss.kd,  # Source-Only reads no image at all
        seed=cfg.seed,
        scene_ids=train_ids,
        storage_options=storage_options,
        memo=memo,
    )
    if d.val_split is None and val_ids is None:
        return train_set, None
    val_set = CacheSceneDataset(
        cache_url,
        d.val_split or d.train_split,
        voxel_size=d.voxel_size,
        train=False,
        full_resolution=d.val_full_resolution,
        scene_ids=val_ids,
        storage_options=storage_options,
        memo=memo,
    )
    return train_set, val_set


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers read and augment; the main process computes


def train_loader(
    ds: CacheSceneDataset, cfg: TrainConfig, info: DistInfo, device: torch.device
) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled by (seed, epoch) through a DistributedSampler, also for a single process."""
    sampler = DistributedSampler(
        ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    loader = DataLoader(
        ds,
        batch_size=cfg.data.batch_size,
        sampler=sampler,
        num_workers=cfg.runtime.num_workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init,
    )
    return loader, sampler


def val_loader(ds: CacheSceneDataset, cfg: TrainConfig, info: DistInfo) -> DataLoader:
    """Each scene exactly once over all ranks (no padding: the confusion sums stay exact)."""
    return DataLoader(
        ds,
        batch_size=cfg.data.batch_size,
        sampler=list(range(info.rank, len(ds), info.world_size)),
        num_workers=cfg.runtime.num_workers,
        collate_fn=collate_items,
        worker_init_fn=_worker_init,
    )


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW + OneCycleLR over the whole run (one scheduler step per optimizer step)."""
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=o.lr,
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=o.pct_start,
        anneal_strategy=o.anneal_strategy,
        div_factor=o.div_factor,
        final_div_factor=o.final_div_factor,
        cycle_momentum=o.cycle_momentum,
        base_momentum=o.base_momentum,
        max_momentum=o.max_momentum,
    )
    return optimizer, scheduler
