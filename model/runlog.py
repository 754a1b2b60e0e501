"""Run logs: one JSON object per line in ``log.jsonl``, mirrored to TensorBoard if installed.

JSONL because every tool reads it (pandas, jq) and an interrupted run leaves whole lines;
TensorBoard is optional and imported lazily. Only rank 0 creates a logger with a file.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "read_log"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class RunLog:
    """``write(kind, **fields)``; ``path=None`` (ranks other than 0) writes nothing."""

    def __init__(self, path: str | Path | None, *, tensorboard_dir: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._tb = None
        self.tensorboard_note = ""
        if self.path is not None and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tensorboard_note = "tensorboard is not installed: logging to log.jsonl only"
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, kind: str, **fields: Any) -> None:
        if self.path is None:
            return
        rec = {"kind": kind, "time": round(time.time(), 3), **_clean(fields)}
        with self.path.open("a") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self._tb is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_log(path: str | Path, kind: str | None = None) -> list[dict]:
    """Records of ``log.jsonl`` (optionally one kind), in order."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
    return out
