"""DDP plumbing for ``tttkd-train``: process group from torchrun's environment, sparse SyncBN.

Why a sparse SyncBN: ``nn.SyncBatchNorm.convert_sync_batchnorm`` would replace our
``SparseBatchNorm`` layers by plain ``SyncBatchNorm`` modules that cannot take a
:class:`SparseTensor`; :func:`convert_sparse_sync_bn` swaps them for a subclass that can,
keeping every parameter and buffer (and so the ``state_dict`` keys). torch's SyncBatchNorm
synchronises on CUDA only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tttkd.model.sparse.base import SparseTensor
from tttkd.model.sparse.nn import SparseBatchNorm

__all__ = [
    "DistInfo",
    "SparseSyncBatchNorm",
    "all_reduce_sum",
    "convert_sparse_sync_bn",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); nccl on CUDA, else gloo.

    Multi-node runs use the usual torchrun flags (``--nnodes``, ``--rdzv-endpoint``); nothing
    here is node-specific.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, local_rank=local, world_size=world)


def all_reduce_sum(t: Tensor, info: DistInfo) -> Tensor:
    """Sum over ranks (a no-op without DDP); returns ``t`` reduced in place."""
    if info.enabled:
        import torch.distributed as dist

        if dist.get_backend() == "nccl" and t.device.type != "cuda":  # nccl: CUDA tensors only
            on_gpu = t.to(f"cuda:{info.local_rank}")
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class SparseSyncBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm over the rows of a sparse tensor (same keys as SparseBatchNorm)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


def convert_sparse_sync_bn(module: nn.Module) -> nn.Module:
    """``module`` with every SparseBatchNorm replaced by a SparseSyncBatchNorm (same weights)."""
    if isinstance(module, SparseBatchNorm):
        new = SparseSyncBatchNorm(
            module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(next(module.buffers()).device)
    for name, child in module.named_children():
        module.add_module(name, convert_sparse_sync_bn(child))
    return module
