"""The epoch loop of ``tttkd-train``: steps, per-epoch validation, checkpoints and logs.

One object holds what every epoch touches (network, loaders, optimizer, schedule, run log)
so that an epoch is a method with no long argument list; ``model/train.py`` builds it.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from tttkd.model.checkpoint import save_checkpoint
from tttkd.model.config import TrainConfig, config_to_dict
from tttkd.model.data import CacheSceneDataset, TrainBatch
from tttkd.model.distributed import DistInfo, all_reduce_sum
from tttkd.model.losses import segmentation_loss
from tttkd.model.mae import patch_mask, reconstruction_loss
from tttkd.model.nan_guard import LOSS_TERMS, check_finite_loss, check_finite_weights
from tttkd.model.network import SegKDNet
from tttkd.model.runlog import RunLog
from tttkd.model.sparse.base import SparseContext
from tttkd.model.teacher_sums import loss_from_unit_sums, unit_sums
from tttkd.model.train_setup import STATE_FILE, val_loader
from tttkd.model.train_state import restore_rng, save_train_state
from tttkd.model.validate import validate

if TYPE_CHECKING:
    from tttkd.pipeline.cache import CacheMeta

__all__ = ["TrainLoop", "autocast_for"]


def autocast_for(cfg: TrainConfig, device: torch.device) -> torch.autocast | None:
    """bf16 autocast when ``runtime.amp`` on CUDA; ``None`` (fp32) otherwise."""
    if cfg.runtime.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return None


@dataclass
class TrainLoop:
    """A training run from its first step to its last checkpoint; ``epoch(i)`` runs one."""

    cfg: TrainConfig
    out: Path
    meta: CacheMeta
    info: DistInfo
    device: torch.device
    backend: str
    autocast: torch.autocast | None
    log: RunLog
    echo: Callable[[str], None]
    net: SegKDNet
    model: nn.Module  # ``net``, or its DDP wrapper
    train_set: CacheSceneDataset
    val_set: CacheSceneDataset | None
    selected_on: list[str]  # the scenes best.safetensors is chosen on
    loader: DataLoader
    sampler: DistributedSampler
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    global_step: int = 0
    best: dict = field(default_factory=lambda: {"miou": None, "epoch": None})

    def restore(self, state: dict) -> int:
        """Continue from a saved ``train_state.pt``; returns the epoch to start at."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.global_step, self.best = state["global_step"], state["best"]
        restore_rng(state["rng"])
        return state["epoch"]

    def log_start(self, resume: bool, start_epoch: int) -> None:
        if not self.info.is_main:
            return
        self.log.write(
            "start",
            resume=resume,
            start_epoch=start_epoch,
            world_size=self.info.world_size,
            device=str(self.device),
            backend=self.backend,
            scenes_train=len(self.train_set),
            scenes_val=len(self.val_set) if self.val_set is not None else 0,
            steps_per_epoch=len(self.loader),
            params=sum(p.numel() for p in self.net.parameters()),
            config=config_to_dict(self.cfg),
        )

    def epoch(self, epoch: int) -> dict:
        """Train, validate when due, checkpoint and log epoch ``epoch`` (0-based)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        stats = self._train_epoch(epoch)
        rec = {"epoch": epoch + 1, "step": self.global_step, "train": stats}
        if self.val_set is not None and (
            (epoch + 1) % cfg.runtime.val_every == 0 or epoch + 1 == cfg.epochs
        ):
            rec["val"] = validate(
                self.model, val_loader(self.val_set, cfg, self.info), list(self.meta.class_names),
                device=self.device, backend=self.backend, dist_info=self.info,
                autocast=self.autocast,
            )  # fmt: skip
        rec["rank_checksums"] = _checksums(self.net, self.info)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        if self.info.is_main:
            self._save(rec, epoch)
            rec["best"] = dict(self.best)
            self.log.write("epoch", **rec)
            self.log.scalars("train", stats, self.global_step)
            if "val" in rec:
                self.log.scalars("val", {"miou": rec["val"]["voxel"]["miou"]}, self.global_step)
            self.echo(_epoch_line(rec, cfg.epochs))
        return rec

    def _train_epoch(self, epoch: int) -> dict:
        from tqdm import tqdm

        self.model.train()
        sums = torch.zeros(6, dtype=torch.float64)  # loss, l_y, l_2d, l_ssl, correct, labelled
        steps = 0
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            disable=not (self.info.is_main and self.cfg.runtime.progress),
            leave=False,
            dynamic_ncols=True,
        )
        for tb in bar:
            vals, lr, gnorm = self._step(tb.to(self.device, non_blocking=True), epoch)
            steps += 1
            sums += torch.tensor(vals, dtype=torch.float64)
            bar.set_postfix(loss=f"{vals[0]:.4f}", lr=f"{lr:.2e}")
            if self.info.is_main and self.global_step % self.cfg.runtime.log_every == 0:
                self._log_step(epoch, vals, lr, gnorm)
        bar.close()
        counts = torch.tensor([steps], dtype=torch.float64)
        all_reduce_sum(sums, self.info)
        all_reduce_sum(counts, self.info)
        n = max(float(counts[0]), 1.0)
        return {
            "loss": float(sums[0]) / n,
            "loss_seg": float(sums[1]) / n,
            "loss_kd": float(sums[2]) / n,
            "loss_ssl": float(sums[3]) / n,
            "accuracy": float(sums[4] / sums[5]) if sums[5] > 0 else math.nan,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def _step(self, tb: TrainBatch, epoch: int) -> tuple[list[float], float, float | None]:
        """One optimizer step; ``([loss, l_y, l_2d, l_ssl, correct, labelled], lr, grad norm)``
        with ``lr`` the rate the step used."""
        total, l_y, l_2d, l_ssl, point_logits = _losses(
            self.model, tb, self.cfg, self.backend, self.autocast
        )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        gnorm = None
        if self.cfg.optim.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        with torch.no_grad():
            lab = tb.point_labels
            keep = lab >= 0
            correct = (point_logits.argmax(1)[keep] == lab[keep]).sum()
        vals = [float(x.detach()) for x in (total, l_y, l_2d, l_ssl, correct, keep.sum())]
        check_finite_loss(
            vals[:4], LOSS_TERMS, epoch + 1, self.global_step, tb.batch.scene_ids, self.info
        )
        return vals, lr, gnorm

    def _log_step(self, epoch: int, vals: list[float], lr: float, gnorm: float | None) -> None:
        step_rec = {"loss": vals[0], "loss_seg": vals[1], "loss_kd": vals[2], "lr": lr}
        if self.cfg.loss.ssl != "none":
            step_rec["loss_ssl"] = vals[3]
        if gnorm is not None:
            step_rec["grad_norm"] = gnorm
        self.log.write("step", epoch=epoch + 1, step=self.global_step, **step_rec)
        self.log.scalars("step", step_rec, self.global_step)

    def _save(self, rec: dict, epoch: int) -> None:
        """last (+ epoch copy, + best) checkpoint, then the resume state; updates ``best``.

        best records the scenes it was chosen on (``selected_on``; none without validation)."""
        out, cfg = self.out, self.cfg
        kw = dict(
            label_set=self.meta.label_set,
            class_names=list(self.meta.class_names),
            teacher_spec=self.meta.teacher,
            config=config_to_dict(cfg),
            backend=self.backend,
        )
        last = out / "last.safetensors"
        check_finite_weights(self.net, str(last))  # never a checkpoint from non-finite weights
        save_checkpoint(last, self.net, **kw)
        if cfg.runtime.keep_every and (epoch + 1) % cfg.runtime.keep_every == 0:
            shutil.copyfile(last, out / f"epoch_{epoch + 1:04d}.safetensors")
        miou = rec.get("val", {}).get("voxel", {}).get("miou") if "val" in rec else None
        best = self.best
        improved = not self.selected_on or (
            miou is not None
            and not math.isnan(miou)
            and (best.get("miou") is None or miou > best["miou"])
        )
        if improved:
            self.best = {"miou": miou, "epoch": epoch + 1}
            if miou is None:  # no validation: best is last, chosen on no scene
                shutil.copyfile(last, out / "best.safetensors")
            else:
                save_checkpoint(
                    out / "best.safetensors", self.net, **kw, selected_on=self.selected_on
                )
        save_train_state(
            out / STATE_FILE,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            epoch=epoch + 1,
            global_step=self.global_step,
            best=self.best,
        )


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
        outputs = model(tb.batch, ctx, mae_mask, kd=cfg.loss.kd)
    logits, kd_pred = outputs[0], outputs[1]
    # index_select, not ``x[idx]``: its backward (index_add_) is deterministic on CPU, while
    # advanced indexing's (index_put_ with accumulate) is not with > 1 thread; exact resume
    # and seeded repeats need it
    point_logits = logits.float().index_select(0, tb.batch.point_to_voxel)
    l_y = segmentation_loss(point_logits, tb.point_labels, cfg.loss.label_smoothing)
    if cfg.loss.kd:
        b = tb.batch
        with torch.no_grad():  # per-voxel sums of unit targets: the per-pair loss exactly
            rows, sums = unit_sums(
                b.teacher_maps, b.corr_point, b.corr_image, b.corr_uv, kd_pred.shape[1]
            )
        l_2d = loss_from_unit_sums(kd_pred, rows, sums, b.corr_point.numel(), cfg.loss.kd_kind)
        total = l_y + cfg.loss.kd_weight * l_2d
    else:
        l_2d = torch.zeros((), device=l_y.device)
        total = l_y
    l_ssl = torch.zeros((), device=l_y.device)
    if mae_mask is not None:
        l_ssl = reconstruction_loss(outputs[2], tb.batch.feats, mae_mask)
        total = total + cfg.loss.ssl_weight * l_ssl
    return total, l_y, l_2d, l_ssl, point_logits


def _checksums(net: nn.Module, info: DistInfo) -> list[float]:
    """Sum of |w| per rank: DDP keeps replicas identical, and the log shows it."""
    with torch.no_grad():
        mine = sum(float(p.detach().abs().sum()) for p in net.parameters())
    t = torch.zeros(info.world_size, dtype=torch.float64)
    t[info.rank] = mine
    all_reduce_sum(t, info)
    return t.tolist()


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
