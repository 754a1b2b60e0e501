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
    SceneFailure,
    SceneResult,
    _reason,
    encode_pieces,
    images_of,
    piece_of,
    prepare_scene,
    write_prepared,
)
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
        return SceneResult(job.scene_id, "failed", _reason(e))
    return SceneResult(job.scene_id, "failed", f"worker lost or task failed: {_reason(e)}")


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
    from distributed import as_completed

    if not jobs:
        return
    if window is None:
        window = 2 * len(client.scheduler_info(n_workers=-1).get("workers", {})) + 8
    tag = jobs[0].run_id
    prep: dict[int, Any] = {}
    what: dict[str, tuple[str, int]] = {}
    held: dict[int, list] = {}  # futures to free per scene
    images: dict[int, Any] = {}
    picks: dict[int, list[tuple[int, Any]]] = {}
    batcher = Batcher(size)
    in_cpu = 0  # scenes whose summary has not come back
    n_tasks = 0
    next_job = 0

    with client.as_current():
        pending = as_completed()
    seconds = jobs[0].config.scene_timeout
    clock = TaskClock(client, seconds, f"tttkd-started-{tag}") if seconds else None
    summaries: dict[int, Any] = {}  # CPU stages running: their summary futures

    def submit(fn: Any, *args: Any, key: str, **kw: Any) -> Any:
        return client.submit(fn, *args, key=f"tttkd-{key}-{tag}", pure=False, **kw)

    def start_next() -> None:
        nonlocal next_job, in_cpu
        i = next_job
        next_job += 1
        in_cpu += 1
        if clock is None:
            prep[i] = submit(prepare_scene, jobs[i], key=f"cpu-{i}", resources=res.cpu)
        else:
            prep[i] = submit(
                prepare_scene_timed, jobs[i], clock.topic, key=f"cpu-{i}", resources=res.cpu
            )
            clock.watch(prep[i].key)
        summary = submit(summary_of, prep[i], key=f"summary-{i}", priority=10)
        held[i] = [prep[i]]
        what[summary.key] = ("summary", i)
        summaries[i] = summary
        pending.add(summary)

    def write(i: int, pieces: list) -> None:
        fut = submit(
            write_prepared, prep[i], pieces, key=f"write-{i}", resources=res.cpu, priority=20
        )
        what[fut.key] = ("write", i)
        held[i].append(fut)
        pending.add(fut)

    def teach(task: list[Piece]) -> None:
        nonlocal n_tasks
        sources = [(images[p.key], p.start, p.stop) for p in task]
        out = submit(
            encode_slices,
            jobs[task[0].key],
            sources,
            key=f"teacher-{n_tasks}",
            resources=res.teacher,
            priority=15,
        )
        n_tasks += 1
        for k, p in enumerate(task):
            pick = submit(piece_of, out, k, key=f"pick-{n_tasks - 1}-{k}", priority=20)
            held[p.key].append(pick)
            picks.setdefault(p.key, []).append((p.start, pick))
            if len(picks[p.key]) == batcher.pieces_of[p.key]:
                write(p.key, [f for _, f in sorted(picks.pop(p.key), key=lambda t: t[0])])

    def drop(i: int) -> None:
        for f in held.pop(i):
            f.release()
        images.pop(i, None)
        prep.pop(i, None)
        if next_job < len(jobs):
            start_next()

    def cpu_done() -> None:
        nonlocal in_cpu
        in_cpu -= 1
        if in_cpu == 0:  # nothing more can join the open tasks now: encode them
            for task in batcher.flush():
                teach(task)

    def timed_out() -> Iterator[SceneResult]:
        if clock is None:
            return
        index = {prep[i].key: i for i in summaries}
        for key, worker in clock.expired():
            clock.forget(key)
            i = index.get(key)
            if i is None:  # its summary came back meanwhile
                continue
            summary = summaries.pop(i)
            what.pop(summary.key)
            note = stop_task(client, [prep[i], summary], worker)
            error = timeout_error(clock.seconds, jobs[i].scene_id)
            result = SceneResult(jobs[i].scene_id, "failed", _reason(error) + note)
            drop(i)
            cpu_done()
            yield result

    def handle(fut: Any) -> Iterator[SceneResult]:
        if fut.key not in what:  # the summary of a scene that timed out (cancelled)
            return
        kind, i = what.pop(fut.key)
        if kind == "write":
            try:
                yield fut.result()
            except Exception as e:  # lost too often, or the teacher failed
                yield _failure(jobs[i], e)
            drop(i)
            return
        summaries.pop(i)
        if clock is not None:
            clock.forget(prep[i].key)
        try:
            result, n, shape = fut.result()
        except Exception as e:  # the CPU task's worker was lost too often
            result, n = _failure(jobs[i], e), 0
        fut.release()
        if result is not None:  # failed, or complete already
            yield result
            drop(i)
        elif n == 0:  # points only: nothing to encode
            write(i, [])
        else:
            images[i] = submit(images_of, prep[i], key=f"images-{i}", priority=20)
            held[i].append(images[i])
            for task in batcher.add(i, n, shape):
                teach(task)
        cpu_done()

    while next_job < min(window, len(jobs)):
        start_next()
    try:
        while not pending.is_empty():
            yield from timed_out()
            for fut in _finished(pending, wait=clock is None):
                yield from handle(fut)
    finally:
        if clock is not None:
            clock.close()
        for futures in held.values():
            for f in futures:
                f.cancel()
