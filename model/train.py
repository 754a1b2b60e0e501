"""Joint training of ``psi_3D`` + ``rho_Y`` + ``rho_2D`` from the teacher cache (``tttkd-train``).

``L = L_Y + kd_weight * L_2D`` per point (``--no-kd``: ``L_Y`` only, the Source-Only model
with the same recipe; ``--ssl mae`` adds ``ssl_weight * L_MAE``, model/mae.py); AdamW +
OneCycleLR (one scheduler step per optimizer step); bf16 autocast on CUDA; a checkpoint every
epoch (``last.safetensors``, plus ``best.safetensors`` by validation mIoU) and
``train_state.pt`` so that ``resume=True`` continues exactly (weights, optimizer, scheduler,
RNG states, epoch). Under torchrun the same function runs DDP: a DistributedSampler shards
the scenes, validation confusion matrices are summed over ranks, and only rank 0 writes files.

This module sets a run up (process, run folder, network, data, optimizer) and hands it to
``TrainLoop`` (model/train_loop.py), which runs the epochs.

Run folder::

    config.yaml  log.jsonl  last.safetensors  best.safetensors  train_state.pt
    selection.json (the scenes best.safetensors is chosen on, model/selection.py)
    epoch_NNNN.safetensors (runtime.keep_every > 0)  tensorboard/ (when installed)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from tttkd.model.config import ConfigError, TrainConfig, save_config
from tttkd.model.distributed import DistInfo, convert_sparse_sync_bn, init_distributed
from tttkd.model.network import SegKDNet
from tttkd.model.runlog import RunLog
from tttkd.model.selection import write_selection
from tttkd.model.sparse.select import backend_line
from tttkd.model.train_loop import TrainLoop, autocast_for
from tttkd.model.train_setup import (
    CONFIG_FILE,
    STATE_FILE,
    build_network,
    make_datasets,
    make_optimizer,
    prepare_out,
    resolve_backend,
    resolve_config,
    resolve_device,
    seed_all,
    train_loader,
)
from tttkd.model.train_state import load_train_state

if TYPE_CHECKING:
    from tttkd.pipeline.cache import CacheMeta

__all__ = ["CONFIG_FILE", "TrainResult", "build_network", "resolve_config", "train"]


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    history: list[dict] = field(default_factory=list)  # the epoch records of this call
    best: dict = field(default_factory=dict)


def train(
    cfg: TrainConfig,
    cache_url: str,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_after_epochs: int | None = None,
    storage_options: dict | None = None,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume) into ``out_dir``; ``stop_after_epochs`` ends this call early (the
    schedule still spans ``cfg.epochs``; a later ``resume=True`` call continues it)."""
    from tttkd.pipeline.cache import Cache

    out = Path(out_dir)
    info, device = _start_process(cfg)
    meta = Cache.open(cache_url, read_only=True, storage_options=storage_options).meta
    cfg = resolve_config(cfg, meta)
    backend = resolve_backend(cfg.runtime.backend, device)
    log = _open_run(out, cfg, resume=resume, info=info, device=device, backend=backend, echo=echo)
    loop, state = _build_loop(
        cfg, meta, out, cache_url=cache_url, storage_options=storage_options, resume=resume,
        info=info, device=device, backend=backend, log=log, echo=echo,
    )  # fmt: skip
    start_epoch = loop.restore(state) if state is not None else 0
    loop.log_start(resume, start_epoch)
    end = (
        cfg.epochs
        if stop_after_epochs is None
        else min(cfg.epochs, start_epoch + stop_after_epochs)
    )
    history = [loop.epoch(epoch) for epoch in range(start_epoch, end)]
    log.close()
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(out_dir=out, epochs_done=end, history=history, best=loop.best)


def _start_process(cfg: TrainConfig) -> tuple[DistInfo, torch.device]:
    """Join the torchrun group (if any), pick this process's device and CPU threads."""
    info = init_distributed(
        "cuda" if resolve_device(cfg.runtime.device, DistInfo()).type == "cuda" else "cpu"
    )
    device = resolve_device(cfg.runtime.device, info)
    if device.type == "cpu" and cfg.runtime.threads is not None:
        torch.set_num_threads(cfg.runtime.threads)
    elif device.type == "cpu" and info.enabled:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if cfg.model.sync_bn and info.enabled and device.type != "cuda":
        raise ConfigError(
            "model.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU path)"
        )
    return info, device


def _open_run(
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool,
    info: DistInfo,
    device: torch.device,
    backend: str,
    echo: Callable[[str], None],
) -> RunLog:
    """Check the run folder and save the config (rank 0), then open the run log."""
    if info.is_main:
        precision = "bf16 autocast" if autocast_for(cfg, device) is not None else "fp32"
        echo(backend_line(backend, cfg.runtime.backend, device, precision))
        prepare_out(out, cfg, resume)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / CONFIG_FILE)
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has checked the folder
    log = RunLog(
        out / "log.jsonl" if info.is_main else None,
        tensorboard_dir=out / "tensorboard" if cfg.runtime.tensorboard else None,
    )
    if log.tensorboard_note and info.is_main:
        echo(log.tensorboard_note)
    return log


def _build_loop(
    cfg: TrainConfig,
    meta: CacheMeta,
    out: Path,
    *,
    cache_url: str,
    storage_options: dict | None,
    resume: bool,
    info: DistInfo,
    device: torch.device,
    backend: str,
    log: RunLog,
    echo: Callable[[str], None],
) -> tuple[TrainLoop, dict | None]:
    """Network, data, optimizer and schedule, seeded and built in a fixed order (exact
    repeats and resumes depend on it); the saved train state too when ``resume``."""
    seed_all(cfg.seed)
    net, state = _network(cfg, meta, backend, out if resume else None)
    net, model = _place(net, cfg, info, device)
    train_set, val_set = make_datasets(cfg, cache_url, storage_options)
    selected_on = list(val_set.scene_ids) if val_set is not None else []
    if info.is_main:
        write_selection(out, cfg, selected_on)
    loader, sampler = train_loader(train_set, cfg, info, device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, cfg, len(loader))
    loop = TrainLoop(
        cfg=cfg, out=out, meta=meta, info=info, device=device, backend=backend,
        autocast=autocast_for(cfg, device), log=log, echo=echo, net=net, model=model,
        train_set=train_set, val_set=val_set, selected_on=selected_on, loader=loader,
        sampler=sampler, params=params, optimizer=optimizer, scheduler=scheduler,
    )  # fmt: skip
    return loop, state


def _network(
    cfg: TrainConfig, meta: CacheMeta, backend: str, resume_from: Path | None
) -> tuple[SegKDNet, dict | None]:
    """The network for the cache's classes and teacher, with the weights and train state of
    ``resume_from``'s last epoch when given."""
    net = build_network(cfg, len(meta.class_names), int(meta.teacher["dim"]), backend)
    if not cfg.loss.kd:  # Source-Only: rho_2D is not trained (and DDP must not wait for it)
        net.set_trainable(psi_3d=True, rho_y=True, rho_2d=False, rho_mae=True)
    if resume_from is None:
        return net, None
    from safetensors.torch import load_file

    from tttkd.model.checkpoint import read_checkpoint_info

    last = resume_from / "last.safetensors"
    read_checkpoint_info(last)  # a damaged file: an error naming it
    net.load_state_dict(load_file(str(last)), strict=True)
    return net, load_train_state(resume_from / STATE_FILE)


def _place(
    net: SegKDNet, cfg: TrainConfig, info: DistInfo, device: torch.device
) -> tuple[SegKDNet, nn.Module]:
    """``(net, model)`` on ``device``: ``model`` is ``net`` or, under torchrun, its DDP
    wrapper (with synchronised batch norm when ``model.sync_bn``)."""
    if cfg.model.sync_bn and info.enabled:
        net = convert_sparse_sync_bn(net)
    net.to(device)
    if not info.enabled:
        return net, net
    from torch.nn.parallel import DistributedDataParallel as DDP

    return net, DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
