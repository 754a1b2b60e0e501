"""Independent long runs (the demo's trainings) as concurrent processes, results in call order.

On 2 cores a small sparse network uses a second intra-op thread poorly, so the demo gives each
training one torch thread and its own process instead of running them one after another. A
process per call (``spawn``: no state inherited from the caller) keeps every run exactly what it
is alone: each seeds itself, so the results do not depend on which runs share the cores.

A process starts without ``MALLOC_TRIM_THRESHOLD_``: a local Dask cluster puts it in this
process's environment (``distributed.nanny.pre-spawn-environ``), and glibc then fixes its mmap
threshold at 128 KiB, so every tensor above it is a fresh mmap and page faults (a demo training
started with it spent more system than user CPU time, 6.4 M minor page faults in 2 epochs).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

__all__ = ["run_in_processes"]


def run_in_processes(
    calls: Sequence[tuple[Callable[..., Any], tuple]],
    processes: int,
    *,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``fn(*args)`` for every ``(fn, args)`` (module-level ``fn``, picklable ``args``) on up to
    ``processes`` fresh processes, started in the order given; ``processes <= 1`` runs them here,
    one after another. ``on_done(index, result)`` is called here as each one finishes. The first
    failure is raised once every started call has ended."""
    if processes <= 1 or len(calls) <= 1:
        results = []
        for i, (fn, args) in enumerate(calls):
            results.append(fn(*args))
            if on_done is not None:
                on_done(i, results[-1])
        return results
    context = multiprocessing.get_context("spawn")
    workers = min(processes, len(calls))
    with _without_dask_malloc(), ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(fn, *args) for fn, args in calls]
        index = {f: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            if on_done is not None and fut.exception() is None:
                on_done(index[fut], fut.result())
    return [f.result() for f in futures]


@contextmanager
def _without_dask_malloc() -> Iterator[None]:
    """The environment without Dask's malloc setting while processes are started here."""
    saved = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = saved
