"""Files users hand us are opened only when they are regular files: ``open()`` on a FIFO,
socket or device in place of a dataset file would block forever (``os.stat`` never does)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tttkd.core.errors import DatasetError


def require_regular_file(path: str | Path, scene: str | None = None) -> Path:
    """``path`` if it is a regular file (following links); never blocks on a FIFO."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise DatasetError(
            f"cannot read the file ({e.strerror})",
            file=path,
            scene=scene,
            fix="check that the dataset folder is complete and readable",
        ) from e
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
        raise DatasetError(
            f"not a regular file but {kind}",
            file=path,
            scene=scene,
            fix="replace it by the dataset's own file",
        )
    return path
