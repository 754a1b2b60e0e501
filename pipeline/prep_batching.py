"""Teacher tasks cut across scenes, and the serial prep loop that uses them.

The teacher is fastest on large batches, and one scene often has fewer images than a batch:
``Batcher`` cuts the images of scenes, in the order they become ready, into tasks of
``size`` images of one image size, splitting a scene across tasks where needed. Both
executors use it (the Dask one in ``pipeline.executors``), so an image's features come from
the same teacher whichever executor ran (its features do not depend on its batch-mates).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.prep_scene import (
    EncodedPiece,
    PreparedScene,
    SceneResult,
    _failed,
    encode_pieces,
    prepare_scene,
    write_prepared,
)


@dataclass(frozen=True)
class Piece:
    """Images ``start:stop`` of scene ``key``."""

    key: int
    start: int
    stop: int


class Batcher:
    """Cuts scenes' images into teacher tasks of ``size`` images, one image shape per task."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self._open: dict[tuple, list[Piece]] = {}
        self._count: dict[tuple, int] = {}
        self.pieces_of: dict[int, int] = {}  # scene key -> pieces it was cut into

    def add(self, key: int, n: int, shape: tuple) -> list[list[Piece]]:
        """Queue scene ``key``'s ``n`` images; returns the tasks that are now full."""
        full, start = [], 0
        self.pieces_of[key] = 0
        while start < n:
            take = min(self.size - self._count.get(shape, 0), n - start)
            self._open.setdefault(shape, []).append(Piece(key, start, start + take))
            self._count[shape] = self._count.get(shape, 0) + take
            self.pieces_of[key] += 1
            start += take
            if self._count[shape] == self.size:
                full.append(self._open.pop(shape))
                self._count[shape] = 0
        return full

    def flush(self) -> list[list[Piece]]:
        """The partly filled tasks (call once every scene was added)."""
        out = [p for p in self._open.values() if p]
        self._open.clear()
        self._count.clear()
        return out


def run_serial(jobs: Sequence[SceneJob], size: int) -> Iterator[SceneResult]:
    """All stages in this process, the teacher batching across scenes; yields as scenes end."""
    batcher = Batcher(size)
    ready: dict[int, PreparedScene] = {}
    got: dict[int, list[tuple[int, EncodedPiece]]] = {}

    def encode(task: list[Piece]) -> Iterator[SceneResult]:
        live = [p for p in task if p.key in ready]
        if not live:
            return
        try:
            sources = [ready[p.key].images[p.start : p.stop] for p in live]
            encoded = encode_pieces(ready[live[0].key].job, sources)
        except Exception as e:  # the teacher failed: every scene in the task fails with it
            for key in dict.fromkeys(p.key for p in live):
                prep = ready.pop(key)
                yield _failed(prep.job, e, time.perf_counter())
            return
        for p, enc in zip(live, encoded):
            got.setdefault(p.key, []).append((p.start, enc))
            if len(got[p.key]) == batcher.pieces_of[p.key]:
                pieces = [e for _, e in sorted(got.pop(p.key), key=lambda t: t[0])]
                yield write_prepared(ready.pop(p.key), pieces)

    for key, job in enumerate(jobs):
        prep = prepare_scene(job)
        if prep.result is not None or prep.images is None:
            yield write_prepared(prep, [])
            continue
        ready[key] = prep
        for task in batcher.add(key, prep.num_images, tuple(prep.images.shape[1:])):
            yield from encode(task)
    for task in batcher.flush():
        yield from encode(task)
