"""How one scene's prep ends: a ``SceneResult`` (done, failed with a reason, or skipped).

Every stage returns failures as results instead of raising, so one bad scene never stops the
run; ``SceneFailure`` is the exception a stage raises for bad data, turned into a result by
the stage's caller with ``failure_reason`` (no traceback: it is the data, not a bug).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tttkd.core import TttkdError


class SceneFailure(Exception):
    """A scene that cannot be prepared, with the reason shown in the failures list."""


@dataclass(frozen=True)
class SceneResult:
    scene_id: str
    status: str  # "done" | "failed" | "skipped" (complete already, e.g. a retried task)
    reason: str = ""
    points: int = 0
    images: int = 0
    pairs: int = 0
    seconds: float = 0.0
    detail: str = ""  # traceback of an unexpected error (a bug, not bad data)
    timing: dict = field(default_factory=dict)
    pid: int = field(default_factory=os.getpid)
    teacher_builds: int = 0  # teachers built so far by the process that encoded the scene
    teacher_pid: int = 0  # that process (0: no images)
    warnings: tuple[str, ...] = ()  # what the scene lost (labels, frames): pipeline/scene_warnings


def failure_reason(e: BaseException) -> str:
    """The failures list's reason: the message of a data error, the type too for a bug."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (SceneFailure, TttkdError)):
        return text
    return f"{type(e).__name__}: {text}"
