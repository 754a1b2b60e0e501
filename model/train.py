"""Joint training of ``psi_3D`` + ``rho_Y`` + ``rho_2D`` from the teacher cache (``tttkd-train``).

``L = L_Y + kd_weight * L_2D`` per point (``--no-kd``: ``L_Y`` only, the Source-Only model
with the same recipe; ``--ssl mae`` adds ``ssl_weight * L_MAE``, model/mae.py); AdamW +
OneCycleLR (one scheduler step per optimizer step); bf16 autocast on CUDA; a checkpoint every
epoch (``last.safetensors``, plus ``best.safetensors`` by validation mIoU) and
``train_state.pt`` so that ``resume=True`` continues exactly (weights, optimizer, scheduler,
RNG states, epoch). Under torchrun the same function runs DDP: a DistributedSampler shards
the scenes, validation confusion matrices are summed over ranks, and only rank 0 writes files.

Run folder::

    config.yaml  log.jsonl  last.safetensors  best.safetensors  train_state.pt
    selection.json (the scenes best.safetensors is chosen on, model/selection.py)
    epoch_NNNN.safetensors (runtime.keep_every > 0)  tensorboard/ (when installed)
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tttkd.model.checkpoint import save_checkpoint
from tttkd.model.config import ConfigError, TrainConfig, config_to_dict, save_config
from tttkd.model.data import TrainBatch
from tttkd.model.distributed import (
    DistInfo,
    all_reduce_sum,
    convert_sparse_sync_bn,
    init_distributed,
)
from tttkd.model.losses import distillation_loss_per_row, sample_teacher, segmentation_loss
from tttkd.model.mae import patch_mask, reconstruction_loss
from tttkd.model.nan_guard import LOSS_TERMS, check_finite_loss, check_finite_weights
from tttkd.model.runlog import RunLog
from tttkd.model.selection import write_selection
from tttkd.model.sparse.base import SparseContext
from tttkd.model.sparse.select import backend_line
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
    val_loader,
)
from tttkd.model.train_state import load_train_state, restore_rng, save_train_state
from tttkd.model.validate import validate

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
    cache = Cache.open(cache_url, read_only=True, storage_options=storage_options)
    meta = cache.meta
    cfg = resolve_config(cfg, meta)
    backend = resolve_backend(cfg.runtime.backend, device)
    if info.is_main:
        amp_on = cfg.runtime.amp and device.type == "cuda"  # the same rule as the loop's
        precision = "bf16 autocast" if amp_on else "fp32"
        echo(backend_line(backend, cfg.runtime.backend, device, precision))
    if info.is_main:
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

    seed_all(cfg.seed)
    class_names = list(meta.class_names)
    teacher_dim = int(meta.teacher["dim"])
    net = build_network(cfg, len(class_names), teacher_dim, backend)
    if not cfg.loss.kd:  # Source-Only: rho_2D is not trained (and DDP must not wait for it)
        net.set_trainable(psi_3d=True, rho_y=True, rho_2d=False, rho_mae=True)
    state = None
    if resume:
        from safetensors.torch import load_file

        from tttkd.model.checkpoint import read_checkpoint_info

        read_checkpoint_info(out / "last.safetensors")  # a damaged file: an error naming it
        net.load_state_dict(load_file(str(out / "last.safetensors")), strict=True)
        state = load_train_state(out / STATE_FILE)
    if cfg.model.sync_bn and info.enabled:
        net = convert_sparse_sync_bn(net)
    net.to(device)
    model: nn.Module = net
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)

    train_set, val_set = make_datasets(cfg, cache_url, storage_options)
    selected_on = list(val_set.scene_ids) if val_set is not None else []
    if info.is_main:
        write_selection(out, cfg, selected_on)
    loader, sampler = train_loader(train_set, cfg, info, device)
    steps_per_epoch = len(loader)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, cfg, steps_per_epoch)
    start_epoch, global_step, best = 0, 0, {"miou": None, "epoch": None}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, global_step, best = state["epoch"], state["global_step"], state["best"]
        restore_rng(state["rng"])
    if info.is_main:
        log.write(
            "start",
            resume=resume,
            start_epoch=start_epoch,
            world_size=info.world_size,
            device=str(device),
            backend=backend,
            scenes_train=len(train_set),
            scenes_val=len(val_set) if val_set is not None else 0,
            steps_per_epoch=steps_per_epoch,
            params=sum(p.numel() for p in net.parameters()),
            config=config_to_dict(cfg),
        )
    amp = cfg.runtime.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else None
    history = []
    end = (
        cfg.epochs
        if stop_after_epochs is None
        else min(cfg.epochs, start_epoch + stop_after_epochs)
    )
    for epoch in range(start_epoch, end):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        stats, global_step = _train_epoch(
            model, loader, optimizer, scheduler, params, cfg, backend, device, autocast, info,
            log, epoch, global_step,
        )  # fmt: skip
        rec = {"epoch": epoch + 1, "step": global_step, "train": stats}
        if val_set is not None and (
            (epoch + 1) % cfg.runtime.val_every == 0 or epoch + 1 == cfg.epochs
        ):
            rec["val"] = validate(
                model, val_loader(val_set, cfg, info), class_names, device=device,
                backend=backend, dist_info=info, autocast=autocast,
            )  # fmt: skip
        rec["rank_checksums"] = _checksums(net, info)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        if info.is_main:
            best = _save_epoch(
                out, net, cfg, meta, backend, rec, best, epoch, optimizer, scheduler, global_step,
                selected_on,
            )  # fmt: skip
            rec["best"] = dict(best)
            log.write("epoch", **rec)
            log.scalars("train", stats, global_step)
            if "val" in rec:
                log.scalars("val", {"miou": rec["val"]["voxel"]["miou"]}, global_step)
            echo(_epoch_line(rec, cfg.epochs))
        history.append(rec)
    log.close()
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(out_dir=out, epochs_done=end, history=history, best=best)


def _losses(
    model: nn.Module, tb: TrainBatch, cfg: TrainConfig, backend: str, autocast
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, L_Y, L_2D, L_MAE, per-point logits)``; losses in float32 whatever the
    autocast (``L_MAE`` is 0 without ``loss.ssl``)."""
    ctx = SparseContext(tb.batch.coords, backend)
    mae_mask = None
    if cfg.loss.ssl == "mae":  # patches drawn from torch's global RNG (seeded, resumed exactly)
        mae_mask = patch_mask(
            tb.batch.coords, cfg.data.voxel_size, cfg.loss.mae_patch_size, cfg.loss.mae_mask_ratio
        )
    with autocast if autocast is not None else contextlib.nullcontext():
        outputs = model(tb.batch, ctx) if mae_mask is None else model(tb.batch, ctx, mae_mask)
    logits, kd_pred = outputs[0], outputs[1]
    # index_select, not ``x[idx]``: its backward (index_add_) is deterministic on CPU, while
    # advanced indexing's (index_put_ with accumulate) is not with > 1 thread; exact resume
    # and seeded repeats need it
    point_logits = logits.float().index_select(0, tb.batch.point_to_voxel)
    l_y = segmentation_loss(point_logits, tb.point_labels, cfg.loss.label_smoothing)
    if cfg.loss.kd:
        b = tb.batch
        with torch.no_grad():
            targets = sample_teacher(b.teacher_maps, b.corr_image, b.corr_uv)
        # pairs summed per voxel first (same value and gradient; the graph is per voxel)
        l_2d = distillation_loss_per_row(kd_pred, targets, b.corr_point, cfg.loss.kd_kind)
        total = l_y + cfg.loss.kd_weight * l_2d
    else:
        l_2d = torch.zeros((), device=l_y.device)
        total = l_y
    l_ssl = torch.zeros((), device=l_y.device)
    if mae_mask is not None:
        l_ssl = reconstruction_loss(outputs[2], tb.batch.feats, mae_mask)
        total = total + cfg.loss.ssl_weight * l_ssl
    return total, l_y, l_2d, l_ssl, point_logits


def _train_epoch(
    model, loader, optimizer, scheduler, params, cfg, backend, device, autocast, info, log,
    epoch, global_step,
) -> tuple[dict, int]:  # fmt: skip
    from tqdm import tqdm

    model.train()
    sums = torch.zeros(6, dtype=torch.float64)  # loss, l_y, l_2d, l_ssl, correct, labelled
    steps = 0
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not (info.is_main and cfg.runtime.progress),
        leave=False,
        dynamic_ncols=True,
    )
    for tb in bar:
        tb = tb.to(device, non_blocking=True)
        total, l_y, l_2d, l_ssl, point_logits = _losses(model, tb, cfg, backend, autocast)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        gnorm = None
        if cfg.optim.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        global_step += 1
        steps += 1
        with torch.no_grad():
            lab = tb.point_labels
            keep = lab >= 0
            correct = (point_logits.argmax(1)[keep] == lab[keep]).sum()
        vals = [float(x.detach()) for x in (total, l_y, l_2d, l_ssl, correct, keep.sum())]
        check_finite_loss(vals[:4], LOSS_TERMS, epoch + 1, global_step, tb.batch.scene_ids, info)
        sums += torch.tensor(vals, dtype=torch.float64)
        bar.set_postfix(loss=f"{vals[0]:.4f}", lr=f"{lr:.2e}")
        if info.is_main and global_step % cfg.runtime.log_every == 0:
            step_rec = {"loss": vals[0], "loss_seg": vals[1], "loss_kd": vals[2], "lr": lr}
            if cfg.loss.ssl != "none":
                step_rec["loss_ssl"] = vals[3]
            if gnorm is not None:
                step_rec["grad_norm"] = gnorm
            log.write("step", epoch=epoch + 1, step=global_step, **step_rec)
            log.scalars("step", step_rec, global_step)
    bar.close()
    counts = torch.tensor([steps], dtype=torch.float64)
    all_reduce_sum(sums, info)
    all_reduce_sum(counts, info)
    n = max(float(counts[0]), 1.0)
    stats = {
        "loss": float(sums[0]) / n,
        "loss_seg": float(sums[1]) / n,
        "loss_kd": float(sums[2]) / n,
        "loss_ssl": float(sums[3]) / n,
        "accuracy": float(sums[4] / sums[5]) if sums[5] > 0 else math.nan,
        "lr": optimizer.param_groups[0]["lr"],
    }
    return stats, global_step


def _checksums(net: nn.Module, info: DistInfo) -> list[float]:
    """Sum of |w| per rank: DDP keeps replicas identical, and the log shows it."""
    with torch.no_grad():
        mine = sum(float(p.detach().abs().sum()) for p in net.parameters())
    t = torch.zeros(info.world_size, dtype=torch.float64)
    t[info.rank] = mine
    all_reduce_sum(t, info)
    return t.tolist()


def _save_epoch(
    out, net, cfg, meta, backend, rec, best, epoch, optimizer, scheduler, step, selected_on
) -> dict:
    """last (+ epoch copy, + best) checkpoint, then the resume state; returns the new best.

    best records the scenes it was chosen on (``selected_on``; none without validation)."""
    kw = dict(
        label_set=meta.label_set,
        class_names=list(meta.class_names),
        teacher_spec=meta.teacher,
        config=config_to_dict(cfg),
        backend=backend,
    )
    last = out / "last.safetensors"
    check_finite_weights(net, str(last))  # never a checkpoint from non-finite weights
    save_checkpoint(last, net, **kw)
    if cfg.runtime.keep_every and (epoch + 1) % cfg.runtime.keep_every == 0:
        shutil.copyfile(last, out / f"epoch_{epoch + 1:04d}.safetensors")
    miou = rec.get("val", {}).get("voxel", {}).get("miou") if "val" in rec else None
    improved = not selected_on or (
        miou is not None
        and not math.isnan(miou)
        and (best.get("miou") is None or miou > best["miou"])
    )
    if improved:
        best = {"miou": miou, "epoch": epoch + 1}
        if miou is None:  # no validation: best is last, chosen on no scene
            shutil.copyfile(last, out / "best.safetensors")
        else:
            save_checkpoint(out / "best.safetensors", net, **kw, selected_on=selected_on)
    save_train_state(
        out / STATE_FILE,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch=epoch + 1,
        global_step=step,
        best=best,
    )
    return best


def _epoch_line(rec: dict, epochs: int) -> str:
    t = rec["train"]
    line = (
        f"epoch {rec['epoch']}/{epochs}: loss {t['loss']:.4f} (seg {t['loss_seg']:.4f}, "
        f"kd {t['loss_kd']:.4f}"
        + (f", mae {t['loss_ssl']:.4f}" if t.get("loss_ssl") else "")
        + f"), train acc {t['accuracy']:.3f}"
    )
    if "val" in rec:
        v = rec["val"]["voxel"]
        line += f", val mIoU {v['miou']:.4f} acc {v['accuracy']:.3f}"
    return line + f" [{rec['seconds']:.1f} s]"
