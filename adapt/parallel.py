"""Where adaptation tasks run: in this process, or as Dask futures on the cluster prep uses.

The Dask path submits every task (``pipeline.executors.DaskExecutor``: a local cluster or a
user-started one, one torch thread per worker) with the worker resource of the run's device
(``GPU=1`` on CUDA, ``CPU=1`` on the CPU, when the workers offer it), to start in the order
given (the runner's: largest scenes first, ``tasks.longest_first``), and yields records as
tasks finish; the driver stores and merges them in a fixed order, so the order tasks finish
in never changes a result. Workers load the checkpoint once each (``tasks.load_network``).
A worker that dies is replaced and its task rerun by Dask; a task that fails for good stops
the run with its key after the finished ones are stored, so a rerun redoes only the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from tttkd.adapt.tasks import OnScene, RunSpec, Task, run_task
from tttkd.core import TttkdError

__all__ = ["AdaptTaskError", "heap_for_tensors", "run_tasks", "task_resources"]


class AdaptTaskError(TttkdError):
    """A task failed on the cluster (after Dask's retries for lost workers)."""


def task_resources(executor: Any, device: str) -> dict[str, float] | None:
    """The Dask resource an adaptation task needs on ``device`` (None: any worker)."""
    res = executor.resources
    return res.teacher if device.startswith("cuda") else res.cpu


def heap_for_tensors() -> bool:
    """Undo Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` for this process (glibc only).

    That setting also fixes glibc's mmap threshold at 128 KiB, so every tensor above it is a
    fresh mmap and page faults: TTT-KD steps ran 2-2.5x slower in a worker than in a plain
    process (measured, CPU). Large blocks are kept on the heap again (up to 32 MiB, glibc's
    maximum for the dynamic threshold); returns False where there is no glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 64 << 20)
    )


def _heap_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class HeapForTensors(WorkerPlugin):
        name = "tttkd-adapt-heap"

        def setup(self, worker: Any) -> None:
            heap_for_tensors()

    return HeapForTensors()


def run_tasks(
    spec: RunSpec,
    tasks: Sequence[Task],
    executor: Any = None,
    on_scene: OnScene | None = None,
) -> Iterator[tuple[Task, list[dict]]]:
    """``(task, records)`` as tasks finish: serially in order, or on ``executor``'s cluster."""
    if executor is None:
        for task in tasks:
            yield task, run_task(spec, task, on_scene)
        return
    if on_scene is not None:
        raise ValueError("on_scene sees outcomes in this process: run without an executor")
    yield from _dask(spec, tasks, executor)


def _dask(spec: RunSpec, tasks: Sequence[Task], executor: Any) -> Iterator[tuple[Task, list]]:
    from distributed import as_completed

    if not tasks:
        return
    client = executor.client
    client.register_plugin(_heap_plugin())  # every worker, also those that join later
    resources = task_resources(executor, spec.cfg.device)
    run = uuid.uuid4().hex[:8]  # keys of one run: a sweep's next point reuses the task names
    # the spec travels with each task (small): a scattered copy would die with its worker
    futures = [
        client.submit(
            run_task,
            spec,
            t,
            key=f"tttkd-adapt-{run}-{i}-{t.key}",
            pure=False,
            resources=resources,
            priority=len(tasks) - i,
        )  # fmt: skip
        for i, t in enumerate(tasks)
    ]
    task_of = {f.key: t for f, t in zip(futures, tasks)}
    with client.as_current():
        pending = as_completed(futures)
    failed: list[str] = []
    try:
        for fut in pending:
            task = task_of[fut.key]
            try:
                records = fut.result()
            except Exception as e:  # lost too often, or an error in the task
                failed.append(f"{task.key}: {type(e).__name__}: {e}")
                continue
            finally:
                fut.release()
            yield task, records
    finally:
        for f in futures:
            f.cancel()
    if failed:
        raise AdaptTaskError(
            f"{len(failed)} adaptation task(s) failed: "
            + "; ".join(failed[:3])
            + ("; ..." if len(failed) > 3 else "")
            + ". The finished ones are stored: rerun the same command to redo the rest"
        )
