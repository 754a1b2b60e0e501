"""The prep stages as Dask futures: CPU tasks feed one teacher per device, across scenes.

Per scene: ``prepare_scene`` on a CPU worker; a small ``summary`` (image count and size)
comes back to the driver, which cuts teacher tasks across scenes (``Batcher``); the teacher
task reads only the images (``images_of``, run where the scene lies) and its output is split
per scene where it lies (``piece_of``); the scene's write task runs on a CPU worker once its
last piece is submitted. Data moves worker to worker; the driver only sees summaries and
results. A worker that dies (even the teacher's) is restarted by its nanny and Dask recomputes
what it held from the lineage; a write re-run after its scene completed returns "skipped".
With ``--scene-timeout``, a CPU task running past the limit fails its scene, is cancelled and
its worker restarted (``pipeline.scene_timeout``); the other scenes go on.

The driver's bookkeeping lives in ``_DaskPrep`` (one method per event: a CPU stage starts,
a summary or a write comes back, a teacher task fills, a CPU task times out); ``run_dask``
only drives its loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tttkd.core import TttkdError
from tttkd.pipeline.cluster import StageResources
from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.prep_batching import Batcher, Piece
from tttkd.pipeline.prep_scene import (
    EncodedPiece,
    encode_pieces,
    images_of,
    piece_of,
    prepare_scene,
    write_prepared,
)
from tttkd.pipeline.scene_result import SceneFailure, SceneResult, failure_reason
from tttkd.pipeline.scene_timeout import TaskClock, announce_start, stop_task, timeout_error


def prepare_scene_timed(job: SceneJob, topic: str) -> Any:
    """The CPU task under ``--scene-timeout``: start the driver's clock, then prepare."""
    announce_start(topic)
    return prepare_scene(job)


def summary_of(prep: Any) -> tuple:
    return prep.summary()


def encode_slices(job: SceneJob, sources: list[tuple[Any, int, int]]) -> list:
    """Teacher task: (images, start, stop) per piece; the images arrive from CPU workers.

    ``images`` is None when Dask recomputed a lost task after its scene was written (the CPU
    stage found the scene complete): that piece is empty and its write says "skipped".
    """
    todo = [k for k, (images, _, _) in enumerate(sources) if images is not None]
    encoded = encode_pieces(job, [sources[k][0][sources[k][1] : sources[k][2]] for k in todo])
    out = [EncodedPiece(np.zeros((0,), np.float16), 0.0, os.getpid(), 0) for _ in sources]
    for k, piece in zip(todo, encoded, strict=True):
        out[k] = piece
    return out


def _failure(job: SceneJob, e: BaseException) -> SceneResult:
    if isinstance(e, (SceneFailure, TttkdError)):
        return SceneResult(job.scene_id, "failed", failure_reason(e))
    return SceneResult(job.scene_id, "failed", f"worker lost or task failed: {failure_reason(e)}")


def _finished(pending: Any, wait: bool, poll_s: float = 0.1) -> list:
    """Futures of ``pending`` done by now; ``wait``: block for one, else at most ``poll_s``."""
    if wait:
        return pending.next_batch(block=True)
    batch = pending.next_batch(block=False)
    if not batch:
        time.sleep(poll_s)
    return batch


def run_dask(
    client: Any,
    res: StageResources,
    jobs: Sequence[SceneJob],
    size: int,
    window: int | None = None,
) -> Iterator[SceneResult]:
    """Keep ``window`` scenes in flight (default: 2 per worker + 8, so memory stays bounded and
    scenes get written all along); teacher and write tasks are submitted as summaries arrive.

    Priorities: the later stages of a scene before the CPU stage of a new one (Dask runs
    higher ``priority`` first), so finished work is written before more is read.
    ``jobs[0].config.scene_timeout`` bounds each CPU task (pipeline.scene_timeout).
    """
    if not jobs:
        return
    if window is None:
        window = 2 * len(client.scheduler_info(n_workers=-1).get("workers", {})) + 8
    run = _DaskPrep(client, res, jobs, size)
    while run.next_job < min(window, len(jobs)):
        run.start_next()
    try:
        while not run.pending.is_empty():
            yield from run.timed_out()
            for fut in _finished(run.pending, wait=run.clock is None):
                yield from run.handle(fut)
    finally:
        run.close()


class _DaskPrep:
    """The driver's state while scenes flow through the stages: futures held per scene (freed
    when the scene ends), what each awaited future is, and the teacher tasks being filled."""

    def __init__(
        self, client: Any, res: StageResources, jobs: Sequence[SceneJob], size: int
    ) -> None:
        from distributed import as_completed

        self.client, self.res, self.jobs = client, res, jobs
        self.tag = jobs[0].run_id
        self.prep: dict[int, Any] = {}
        self.what: dict[str, tuple[str, int]] = {}
        self.held: dict[int, list] = {}  # futures to free per scene
        self.images: dict[int, Any] = {}
        self.picks: dict[int, list[tuple[int, Any]]] = {}
        self.batcher = Batcher(size)
        self.in_cpu = 0  # scenes whose summary has not come back
        self.n_tasks = 0
        self.next_job = 0
        with client.as_current():
            self.pending = as_completed()
        seconds = jobs[0].config.scene_timeout
        self.clock = TaskClock(client, seconds, f"tttkd-started-{self.tag}") if seconds else None
        self.summaries: dict[int, Any] = {}  # CPU stages running: their summary futures

    def _submit(self, fn: Any, *args: Any, key: str, **kw: Any) -> Any:
        return self.client.submit(fn, *args, key=f"tttkd-{key}-{self.tag}", pure=False, **kw)

    def start_next(self) -> None:
        """Submit the next job's CPU stage and the summary the driver waits for."""
        i = self.next_job
        self.next_job += 1
        self.in_cpu += 1
        job, cpu = self.jobs[i], self.res.cpu
        if self.clock is None:
            self.prep[i] = self._submit(prepare_scene, job, key=f"cpu-{i}", resources=cpu)
        else:
            self.prep[i] = self._submit(
                prepare_scene_timed, job, self.clock.topic, key=f"cpu-{i}", resources=cpu
            )
            self.clock.watch(self.prep[i].key)
        summary = self._submit(summary_of, self.prep[i], key=f"summary-{i}", priority=10)
        self.held[i] = [self.prep[i]]
        self.what[summary.key] = ("summary", i)
        self.summaries[i] = summary
        self.pending.add(summary)

    def _write(self, i: int, pieces: list) -> None:
        fut = self._submit(
            write_prepared,
            self.prep[i],
            pieces,
            key=f"write-{i}",
            resources=self.res.cpu,
            priority=20,
        )
        self.what[fut.key] = ("write", i)
        self.held[i].append(fut)
        self.pending.add(fut)

    def _teach(self, task: list[Piece]) -> None:
        """Submit one teacher task, a pick per piece, and the write of each scene whose last
        piece this was."""
        sources = [(self.images[p.key], p.start, p.stop) for p in task]
        out = self._submit(
            encode_slices,
            self.jobs[task[0].key],
            sources,
            key=f"teacher-{self.n_tasks}",
            resources=self.res.teacher,
            priority=15,
        )
        self.n_tasks += 1
        for k, p in enumerate(task):
            pick = self._submit(piece_of, out, k, key=f"pick-{self.n_tasks - 1}-{k}", priority=20)
            self.held[p.key].append(pick)
            self.picks.setdefault(p.key, []).append((p.start, pick))
            if len(self.picks[p.key]) == self.batcher.pieces_of[p.key]:
                ordered = sorted(self.picks.pop(p.key), key=lambda t: t[0])
                self._write(p.key, [f for _, f in ordered])

    def _drop(self, i: int) -> None:
        """Scene ``i`` ended: free its futures and start the next job."""
        for f in self.held.pop(i):
            f.release()
        self.images.pop(i, None)
        self.prep.pop(i, None)
        if self.next_job < len(self.jobs):
            self.start_next()

    def _cpu_done(self) -> None:
        self.in_cpu -= 1
        if self.in_cpu == 0:  # nothing more can join the open tasks now: encode them
            for task in self.batcher.flush():
                self._teach(task)

    def timed_out(self) -> Iterator[SceneResult]:
        """Fail, cancel and restart the CPU tasks past ``--scene-timeout``."""
        if self.clock is None:
            return
        index = {self.prep[i].key: i for i in self.summaries}
        for key, worker in self.clock.expired():
            self.clock.forget(key)
            i = index.get(key)
            if i is None:  # its summary came back meanwhile
                continue
            summary = self.summaries.pop(i)
            self.what.pop(summary.key)
            note = stop_task(self.client, [self.prep[i], summary], worker)
            error = timeout_error(self.clock.seconds, self.jobs[i].scene_id)
            result = SceneResult(self.jobs[i].scene_id, "failed", failure_reason(error) + note)
            self._drop(i)
            self._cpu_done()
            yield result

    def handle(self, fut: Any) -> Iterator[SceneResult]:
        """A finished summary or write future."""
        if fut.key not in self.what:  # the summary of a scene that timed out (cancelled)
            return
        kind, i = self.what.pop(fut.key)
        if kind == "write":
            yield from self._written(fut, i)
        else:
            yield from self._summarized(fut, i)

    def _written(self, fut: Any, i: int) -> Iterator[SceneResult]:
        try:
            yield fut.result()
        except Exception as e:  # lost too often, or the teacher failed
            yield _failure(self.jobs[i], e)
        self._drop(i)

    def _summarized(self, fut: Any, i: int) -> Iterator[SceneResult]:
        """The CPU stage of scene ``i`` ended: report it, write it, or queue its images."""
        self.summaries.pop(i)
        if self.clock is not None:
            self.clock.forget(self.prep[i].key)
        try:
            result, n, shape = fut.result()
        except Exception as e:  # the CPU task's worker was lost too often
            result, n = _failure(self.jobs[i], e), 0
        fut.release()
        if result is not None:  # failed, or complete already
            yield result
            self._drop(i)
        elif n == 0:  # points only: nothing to encode
            self._write(i, [])
        else:
            self.images[i] = self._submit(images_of, self.prep[i], key=f"images-{i}", priority=20)
            self.held[i].append(self.images[i])
            for task in self.batcher.add(i, n, shape):
                self._teach(task)
        self._cpu_done()

    def close(self) -> None:
        """Stop the clock and cancel whatever is still in flight (the run ended or broke)."""
        if self.clock is not None:
            self.clock.close()
        for futures in self.held.values():
            for f in futures:
                f.cancel()
