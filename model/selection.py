"""Which scenes choose ``best.safetensors``: held-out TRAINING scenes, never the reported split.

``data.val_fraction`` holds a seeded share of the training split's scenes out of training and
validates on them; the list goes to ``RUN/selection.json`` and into the metadata of
``best.safetensors`` (``CheckpointInfo.selected_on``), so ``tttkd-adapt`` can warn when a
scene it scores was used to pick the checkpoint. Without validation best = last, chosen on
no scene.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tttkd.model.config import ConfigError, TrainConfig

__all__ = ["SELECTION_FILE", "held_out_scenes", "write_selection"]

SELECTION_FILE = "selection.json"


def held_out_scenes(scene_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """A seeded ``fraction`` of ``scene_ids`` (at least one, never all), sorted."""
    ids = sorted(scene_ids)
    n = max(1, round(fraction * len(ids)))
    if n >= len(ids):
        raise ConfigError(
            f"data.val_fraction={fraction} holds out {n} of the {len(ids)} training scenes and "
            "leaves none to train on; lower it, or use --no-val (best = last)"
        )
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(ids), size=n, replace=False)
    return sorted(ids[int(i)] for i in picked)


def write_selection(out: Path, cfg: TrainConfig, scenes: Sequence[str]) -> dict[str, Any]:
    """``RUN/selection.json``: how best.safetensors is chosen and on which scenes."""
    d = cfg.data
    if d.val_fraction > 0:
        how = f"held-out {d.val_fraction} of split {d.train_split!r} (seed {cfg.seed})"
    elif d.val_split is not None:
        how = f"split {d.val_split!r}"
    else:
        how = "no validation: best.safetensors is last.safetensors"
    record = {"selected_on": list(scenes), "how": how, "metric": "validation mIoU (voxel)"}
    path = Path(out) / SELECTION_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return record
