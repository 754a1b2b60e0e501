"""Validation during training: per-class IoU and mIoU over a split, summed over DDP ranks.

Two levels: ``voxel`` scores every point stored in the cache (one per cache voxel) with the
logits of its training voxel; ``full`` (optional) scores every original point through the
cache's ``voxel_of_point``. The confusion matrices come from ``model/metrics.py``, the same
code adaptation reports with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from tttkd.model.data import TrainBatch
from tttkd.model.distributed import DistInfo, all_reduce_sum
from tttkd.model.metrics import confusion_matrix, scores_from_confusion
from tttkd.model.network import SegKDNet
from tttkd.model.sparse.base import SparseContext

__all__ = ["validate"]


def _unwrap(net: nn.Module) -> SegKDNet:
    return net.module if hasattr(net, "module") else net  # DDP


@torch.no_grad()
def validate(
    net: nn.Module,
    batches: Iterable[TrainBatch],
    class_names: Sequence[str],
    *,
    device: torch.device,
    backend: str,
    dist_info: DistInfo = DistInfo(),  # noqa: B008 (frozen dataclass)
    autocast: torch.autocast | None = None,
) -> dict:
    """``{"voxel": scores, "full": scores or None, "scenes": n, "confusion": matrix}``;
    scores as ``SegmentationScores.to_dict``."""
    model = _unwrap(net)
    was_training = model.training
    model.eval()
    n = len(class_names)
    cm = torch.zeros((n, n + 1), dtype=torch.int64)
    cm_full = torch.zeros((n, n + 1), dtype=torch.int64)
    scenes = torch.zeros(2, dtype=torch.int64)  # scenes, scenes with full-resolution labels
    try:
        for tb in batches:
            tb = tb.to(device)
            ctx = SparseContext(tb.batch.coords, backend)
            if autocast is not None:
                with autocast:
                    logits = model.seg_head(model.features(tb.batch.feats, ctx))
            else:
                logits = model.seg_head(model.features(tb.batch.feats, ctx))
            pred_point = logits.argmax(1)[tb.batch.point_to_voxel].cpu().numpy()
            cm += torch.from_numpy(confusion_matrix(pred_point, tb.point_labels.cpu().numpy(), n))
            scenes[0] += tb.batch.batch_size
            if tb.full_point is not None:
                pred_full = pred_point[tb.full_point.cpu().numpy()]
                cm_full += torch.from_numpy(
                    confusion_matrix(pred_full, tb.full_labels.cpu().numpy(), n)
                )
                scenes[1] += tb.batch.batch_size
    finally:
        model.train(was_training)
    for t in (cm, cm_full, scenes):
        all_reduce_sum(t, dist_info)
    names = tuple(class_names)
    out = {
        "scenes": int(scenes[0]),
        "voxel": scores_from_confusion(cm.numpy(), names).to_dict(),
        "full": None,
    }
    if int(scenes[1]):
        out["full"] = scores_from_confusion(cm_full.numpy(), names).to_dict()
    out["confusion"] = np.asarray(cm).tolist()
    return out
