"""No scene may hang a prep run: regular files only, and a per-scene time limit.

A FIFO, socket or device in place of a dataset file blocks ``open()`` forever, so readers
check :func:`require_regular_file` (``os.stat`` never blocks) before opening. ``--scene-timeout
SECONDS`` bounds the CPU stage of each scene (read, voxelize, frames, correspondences): when
it runs longer, the scene fails with :class:`SceneTimeout` and the run goes on with the next.
The limit is a ``SIGALRM`` timer, so it interrupts even a blocking system call; it applies
where that stage runs in a process's main thread (the serial executor, ``tttkd-prep`` without
``--workers``/``--scheduler``); elsewhere (Dask worker threads) the regular-file checks remain.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

from tttkd.pipeline.errors import DatasetError


class SceneTimeout(DatasetError):
    """A scene's CPU stage ran past ``--scene-timeout``."""


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


@contextlib.contextmanager
def scene_deadline(seconds: float | None, scene: str) -> Iterator[None]:
    """Raise :class:`SceneTimeout` in this block after ``seconds`` (None/0: no limit)."""
    usable = (
        seconds
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise SceneTimeout(
            f"the scene took longer than --scene-timeout {seconds:g} s (reading, frames and "
            "correspondences) and was stopped",
            scene=scene,
            fix="look for a file that blocks or is huge in this scene, or raise --scene-timeout",
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
