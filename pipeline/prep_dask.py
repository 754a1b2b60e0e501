"""The prep stages as Dask futures: CPU tasks feed one teacher per device, across scenes.

Per scene: ``prepare_scene`` on a CPU worker; a small ``summary`` (image count and size)
comes back to the driver, which cuts teacher tasks across scenes (``Batcher``); the teacher
task reads only the images (``images_of``, run where the scene lies) and its output is split
per scene where it lies (``piece_of``); the scene's write task runs on a CPU worker once its
last piece is submitted. Data moves worker to worker; the driver only sees summaries and
results. A worker that dies (even the teacher's) is restarted by its nanny and Dask recomputes
what it held from the lineage; a write re-run after its scene completed returns "skipped".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tttkd.pipeline.cluster import StageResources
from tttkd.pipeline.errors import TttkdError
from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.prep_batching import Batcher, Piece
from tttkd.pipeline.prep_scene import (
    SceneFailure,
    SceneResult,
    _reason,
    encode_pieces,
    images_of,
    piece_of,
    prepare_scene,
    write_prepared,
)


def summary_of(prep: Any) -> tuple:
    return prep.summary()


def encode_slices(job: SceneJob, sources: list[tuple[Any, int, int]]) -> list:
    """Teacher task: (images, start, stop) per piece; the images arrive from CPU workers."""
    return encode_pieces(job, [images[a:b] for images, a, b in sources])


def _failure(job: SceneJob, e: BaseException) -> SceneResult:
    if isinstance(e, (SceneFailure, TttkdError)):
        return SceneResult(job.scene_id, "failed", _reason(e))
    return SceneResult(job.scene_id, "failed", f"worker lost or task failed: {_reason(e)}")


def run_dask(
    client: Any, res: StageResources, jobs: Sequence[SceneJob], size: int
) -> Iterator[SceneResult]:
    """Submit every CPU task, then teacher and write tasks as summaries arrive."""
    from distributed import as_completed

    if not jobs:
        return
    tag = jobs[0].run_id
    prep = client.map(
        prepare_scene,
        list(jobs),
        key=[f"tttkd-cpu-{tag}-{i}" for i in range(len(jobs))],
        pure=False,
        resources=res.cpu,
    )
    summaries = [
        client.submit(summary_of, f, key=f"tttkd-summary-{tag}-{i}", pure=False)
        for i, f in enumerate(prep)
    ]
    what = {f.key: ("summary", i) for i, f in enumerate(summaries)}
    held: dict[int, list] = {i: [f] for i, f in enumerate(prep)}  # futures to free per scene
    images: dict[int, Any] = {}
    picks: dict[int, list[tuple[int, Any]]] = {}
    batcher = Batcher(size)
    waiting = len(jobs)
    n_tasks = 0

    with client.as_current():
        pending = as_completed(summaries)

    def write(i: int, pieces: list) -> None:
        fut = client.submit(
            write_prepared,
            prep[i],
            pieces,
            key=f"tttkd-write-{tag}-{i}",
            pure=False,
            resources=res.cpu,
        )
        what[fut.key] = ("write", i)
        held[i].append(fut)
        pending.add(fut)

    def teach(task: list[Piece]) -> None:
        nonlocal n_tasks
        sources = [(images[p.key], p.start, p.stop) for p in task]
        out = client.submit(
            encode_slices,
            jobs[task[0].key],
            sources,
            key=f"tttkd-teacher-{tag}-{n_tasks}",
            pure=False,
            resources=res.teacher,
        )
        n_tasks += 1
        for k, p in enumerate(task):
            pick = client.submit(piece_of, out, k, key=f"{out.key}-{k}", pure=False)
            held[p.key].append(pick)
            picks.setdefault(p.key, []).append((p.start, pick))
            if len(picks[p.key]) == batcher.pieces_of[p.key]:
                write(p.key, [f for _, f in sorted(picks.pop(p.key), key=lambda t: t[0])])

    def drop(i: int) -> None:
        for f in held.pop(i):
            f.release()
        images.pop(i, None)

    try:
        for fut in pending:
            kind, i = what.pop(fut.key)
            if kind == "write":
                try:
                    yield fut.result()
                except Exception as e:  # lost too often, or the teacher failed
                    yield _failure(jobs[i], e)
                drop(i)
                continue
            waiting -= 1
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
                images[i] = client.submit(
                    images_of, prep[i], key=f"tttkd-images-{tag}-{i}", pure=False
                )
                held[i].append(images[i])
                for task in batcher.add(i, n, shape):
                    teach(task)
            if waiting == 0:
                for task in batcher.flush():
                    teach(task)
    finally:
        for futures in held.values():
            for f in futures:
                f.cancel()
