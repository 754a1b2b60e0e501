"""The one calling convention every dataset reader module follows (``Reader``).

Prep, the registry and the tests call ScanNet, S3DIS, Matterport3D and Pointcept the same
way, so nothing inspects a reader's signature to find out how to turn its frames off:

* ``list_scenes(root, split=None, **options)``: scene ids; ``options`` is the run's whole
  reader-option dict, and a reader ignores the ones that only ``load_scene`` uses.
* ``load_scene(root, scene_id, *, frames="auto", max_views=None, **options)``: one
  :class:`Scene`. ``frames=None`` reads no frames at all (no camera or image file is
  needed) and leaves points and labels exactly as a full read gives them; ``"auto"`` reads
  the frames the dataset has (a reader may name further sources, e.g. ScanNet's ``"sens"``).
  ``max_views`` keeps that many frames, evenly spaced in the reader's order (None: all).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from tttkd.core import DatasetError, Scene

AUTO = "auto"
T = TypeVar("T")


@runtime_checkable
class Reader(Protocol):
    """A dataset reader module (``tttkd.pipeline.datasets.<name>``)."""

    def list_scenes(
        self, root: str | Path, split: str | None = None, **options: Any
    ) -> list[str]: ...

    def load_scene(
        self,
        root: str | Path,
        scene_id: str,
        *,
        frames: str | None = AUTO,
        max_views: int | None = None,
        **options: Any,
    ) -> Scene: ...


def check_frames(frames: object, sources: Sequence[str], dataset: str) -> str | None:
    """``frames`` if it is None or one of ``sources`` (always incl. "auto"), else a clear error."""
    if frames is None or (isinstance(frames, str) and frames in sources):
        return frames
    names = ", ".join(repr(s) for s in sources)
    raise DatasetError(
        f"{dataset} reader option frames={frames!r} is not one of {names} or None",
        fix="pass frames=None to read points and labels only, or one of the sources named",
    )


def check_max_views(max_views: object) -> int | None:
    """``max_views`` if it is None or a positive int, else a clear error."""
    if max_views is None:
        return None
    if isinstance(max_views, bool) or not isinstance(max_views, int) or max_views < 1:
        raise DatasetError(
            f"reader option max_views={max_views!r} is not a positive integer",
            fix="pass the number of frames to keep, or max_views=None for all",
        )
    return max_views


def evenly_spaced(items: Sequence[T], max_views: int | None) -> list[T]:
    """At most ``max_views`` of ``items``, evenly spaced and in order (all when None)."""
    if max_views is None or len(items) <= max_views:
        return list(items)
    keep = np.unique(np.linspace(0, len(items) - 1, max_views).round().astype(int))
    return [items[i] for i in keep]
