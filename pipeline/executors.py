"""Executors: run the plan's jobs serially or on Dask, yielding results as they finish.

Both call the same task function with the same jobs, and both run it with one torch thread
per process, so their caches are identical bit for bit (tested). The Dask executor either
starts a ``LocalCluster`` on 127.0.0.1 (process workers, one thread each, a memory limit per
worker, no dashboard unless asked, and then on localhost only) or joins an existing cluster
given by its scheduler address (any number of machines; the cache URL must be reachable from
every worker).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.prep_scene import SceneResult


class Executor(Protocol):
    name: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(
        self, fn: Callable[[SceneJob], SceneResult], jobs: Sequence[SceneJob]
    ) -> Iterator[SceneResult]: ...


def set_torch_threads(n: int = 1) -> int:
    """Limit torch's intra-op threads in this process; returns the previous value."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old


class SerialExecutor:
    """The reference executor: jobs one after the other in this process."""

    name = "serial"

    def __init__(self, torch_threads: int | None = 1) -> None:
        self.torch_threads = torch_threads  # 1 = bitwise equal to the Dask workers
        self._old: int | None = None

    def __enter__(self) -> SerialExecutor:
        if self.torch_threads is not None:
            self._old = set_torch_threads(self.torch_threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            set_torch_threads(self._old)

    def run(
        self, fn: Callable[[SceneJob], SceneResult], jobs: Sequence[SceneJob]
    ) -> Iterator[SceneResult]:
        for job in jobs:
            yield fn(job)


def _worker_setup_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class TorchOneThread(WorkerPlugin):
        """Every worker process: one torch thread (one task per worker at a time)."""

        name = "tttkd-torch-one-thread"

        def setup(self, worker: Any) -> None:
            set_torch_threads(1)

    return TorchOneThread()


class DaskExecutor:
    """A LocalCluster of ``n_workers`` processes, or the cluster at ``scheduler``."""

    name = "dask"

    def __init__(
        self,
        n_workers: int | None = None,
        *,
        scheduler: str | None = None,
        memory_limit: str | float | None = "auto",
        dashboard: bool = False,
        resources: dict[str, float] | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        if (n_workers is None) == (scheduler is None):
            raise ValueError("give either n_workers (a local cluster) or scheduler (an address)")
        if n_workers is not None and n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.n_workers = n_workers
        self.scheduler = scheduler
        self.memory_limit = memory_limit
        self.dashboard = dashboard
        self.resources = resources  # per task, e.g. {"GPU": 1} on workers started with it
        self.echo = echo
        self.cluster: Any = None
        self.client: Any = None
        self._depth = 0  # re-entrant: an outer `with` keeps one cluster across several runs

    def __enter__(self) -> DaskExecutor:
        from distributed import Client, LocalCluster

        self._depth += 1
        if self._depth > 1:
            return self
        if self.scheduler is not None:
            self.client = Client(self.scheduler, set_as_default=False)
            n = len(self.client.scheduler_info().get("workers", {}))
            self.echo(f"dask: connected to {self.scheduler} ({n} workers)")
        else:
            if self.dashboard and importlib.util.find_spec("bokeh") is None:
                self.echo("dask dashboard unavailable: it needs bokeh (pip install bokeh)")
                self.dashboard = False
            self.cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=self.memory_limit,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0" if self.dashboard else None,
                silence_logs=40,
            )
            self.client = Client(self.cluster, set_as_default=False)
            mem = self.memory_limit if self.memory_limit is not None else "none"
            self.echo(
                f"dask: local cluster {self.cluster.scheduler_address}, {self.n_workers} "
                f"worker processes x 1 thread, memory limit {mem} per worker"
            )
            if self.dashboard:
                self.echo(f"dask dashboard: {self.cluster.dashboard_link}")
        self.client.register_plugin(_worker_setup_plugin())
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def run(
        self, fn: Callable[[SceneJob], SceneResult], jobs: Sequence[SceneJob]
    ) -> Iterator[SceneResult]:
        from distributed import as_completed

        if not jobs:
            return
        keys = [f"tttkd-prep-{j.run_id}-{i}" for i, j in enumerate(jobs)]
        futures = self.client.map(fn, list(jobs), key=keys, pure=False, resources=self.resources)
        job_of = {f.key: j for f, j in zip(futures, jobs)}
        with self.client.as_current():  # as_completed looks for the current client
            pending = as_completed(futures)
        try:
            for fut in pending:
                job = job_of[fut.key]
                try:
                    yield fut.result()
                except Exception as e:  # the worker died (memory, segfault): KilledWorker
                    yield SceneResult(
                        job.scene_id, "failed", f"worker lost: {type(e).__name__}: {e}"
                    )
                finally:
                    fut.release()
        finally:
            for f in futures:
                f.cancel()
