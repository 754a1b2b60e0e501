"""Executors: run the plan's jobs serially or on Dask, yielding results as scenes finish.

``prep(jobs, size)`` runs the three stages of ``pipeline.prep_scene``: CPU (read, voxelize,
select, load images, correspond), teacher (images of several scenes per task) and write.
The serial executor runs them in this process; the Dask one runs CPU and write tasks on CPU
workers and teacher tasks on the one teacher worker per device (``pipeline.cluster``), with
the data moving worker to worker, never through the driver. Both run torch with one thread
per process and cut teacher tasks with the same ``Batcher``, and an image's features do not
depend on its batch-mates, so their caches are identical bit for bit (tested). ``run(fn,
jobs)`` maps any one-scene function (the old single-task path, kept for other stages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from tttkd.pipeline.plan import SceneJob
from tttkd.pipeline.scene_result import SceneResult


class Executor(Protocol):
    name: str

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(
        self, fn: Callable[[SceneJob], SceneResult], jobs: Sequence[SceneJob]
    ) -> Iterator[SceneResult]: ...

    def prep(self, jobs: Sequence[SceneJob], size: int) -> Iterator[SceneResult]: ...


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

    def prep(self, jobs: Sequence[SceneJob], size: int) -> Iterator[SceneResult]:
        """The three stages in this process; teacher tasks of ``size`` images across scenes."""
        from tttkd.pipeline.prep_batching import run_serial

        yield from run_serial(jobs, size)


def _worker_setup_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class TorchOneThread(WorkerPlugin):
        """Every worker process: one torch thread (one task per worker at a time)."""

        name = "tttkd-torch-one-thread"

        def setup(self, worker: Any) -> None:
            set_torch_threads(1)

    return TorchOneThread()


class DaskExecutor:
    """A local cluster of ``n_workers`` CPU processes plus ``gpus`` teacher processes (one on
    the CPU when ``gpus`` is 0), or the cluster at ``scheduler`` (``pipeline.cluster``)."""

    name = "dask"

    def __init__(
        self,
        n_workers: int | None = None,
        *,
        gpus: int = 0,
        scheduler: str | None = None,
        memory_limit: str | float | None = "auto",
        dashboard: bool = False,
        window: int | None = None,
        cpu_teacher: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        from tttkd.pipeline.cluster import Cluster

        self._cluster = Cluster(
            n_workers,
            gpus,
            scheduler=scheduler,
            memory_limit=memory_limit,
            dashboard=dashboard,
            cpu_teacher=cpu_teacher,  # False: no teacher process when gpus is 0 (adaptation)
            echo=echo,
        )
        self.n_workers, self.gpus, self.scheduler = n_workers, gpus, scheduler
        self.window = window  # scenes in flight (None: 2 per worker + 8)
        self.client: Any = None
        self._depth = 0  # re-entrant: an outer `with` keeps one cluster across several runs

    def __enter__(self) -> DaskExecutor:
        self._depth += 1
        if self._depth == 1:
            self._cluster.__enter__()
            self.client = self._cluster.client
            self.client.register_plugin(_worker_setup_plugin())
        return self

    @property
    def resources(self) -> Any:
        """The ``StageResources`` of the connected cluster (where each stage may run)."""
        return self._cluster.resources

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._cluster.__exit__(*exc)
            self.client = None

    def run(
        self, fn: Callable[[SceneJob], SceneResult], jobs: Sequence[SceneJob]
    ) -> Iterator[SceneResult]:
        """One task per scene (``fn`` does everything), on the CPU workers."""
        from distributed import as_completed

        if not jobs:
            return
        keys = [f"tttkd-scene-{j.run_id}-{i}" for i, j in enumerate(jobs)]
        futures = self.client.map(
            fn, list(jobs), key=keys, pure=False, resources=self._cluster.resources.cpu
        )
        job_of = {f.key: j for f, j in zip(futures, jobs)}
        with self.client.as_current():  # as_completed looks for the current client
            pending = as_completed(futures)
        try:
            for fut in pending:
                try:
                    yield fut.result()
                except Exception as e:
                    yield _lost(job_of[fut.key], e)
                finally:
                    fut.release()
        finally:
            for f in futures:
                f.cancel()

    def prep(self, jobs: Sequence[SceneJob], size: int) -> Iterator[SceneResult]:
        """The three stages as Dask futures; see ``pipeline.prep_dask``."""
        from tttkd.pipeline.prep_dask import run_dask

        yield from run_dask(self.client, self._cluster.resources, jobs, size, self.window)


def _lost(job: SceneJob, e: BaseException) -> SceneResult:
    """A task that raised on its worker (a lost worker: KilledWorker, or a teacher failure)."""
    from tttkd.pipeline.scene_result import failure_reason

    return SceneResult(job.scene_id, "failed", f"worker lost or task failed: {failure_reason(e)}")
