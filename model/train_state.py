"""What ``--resume`` needs beyond the weights: optimizer, scheduler, RNG states, counters.

Saved with ``torch.save`` as plain containers of tensors and numbers and read back with
``torch.load(weights_only=True)``: no pickle of arbitrary objects, so a state file is data.
numpy's generator state is stored as a tensor for the same reason. Writes go through a
temporary file and a rename, so a run killed while saving keeps the previous state.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng", "load_train_state", "restore_rng", "save_train_state"]

STATE_FORMAT = 1


def capture_rng() -> dict[str, Any]:
    """python, numpy (global) and torch (CPU + every CUDA device) generator states."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 (saved for resume)
    out: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (restored on resume)
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(
    path: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    global_step: int,
    best: dict[str, Any],
) -> None:
    """``epoch`` is the number of epochs completed; the RNG states are captured now."""
    path = Path(path)
    state = {
        "format": STATE_FORMAT,
        "epoch": int(epoch),
        "global_step": int(global_step),
        "best": dict(best),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_train_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: nothing to resume (start without --resume, or point --out "
            "at the run folder that holds train_state.pt)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: train state format {state.get('format')}, expected 1")
    return state
