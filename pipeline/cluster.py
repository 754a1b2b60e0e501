"""One Dask cluster for any tttkd stage: CPU workers plus one worker per GPU, or a cluster the
user started (any number of machines).

Work is placed with Dask's own worker resources, never by worker address (a restarted worker
keeps its resources but not its address): CPU-stage tasks ask for ``CPU=1``, teacher tasks
for ``GPU=1``. A local cluster starts ``workers`` processes with ``CPU=1`` and one process per
GPU with ``GPU=1`` and ``CUDA_VISIBLE_DEVICES`` set to that device alone, so each GPU holds
exactly one teacher whatever the number of CPU workers. Without GPUs (``gpus=0``) one extra
process takes the ``GPU=1`` slot and runs the teacher on the CPU. Every process has one
thread and listens on 127.0.0.1; the dashboard is off unless asked for; Dask's
housekeeping timers are slowed (:data:`QUIET_SETTINGS`).

External clusters: start workers with ``--resources CPU=1`` / ``--resources GPU=1`` (README,
"Prep on a cluster"). A cluster whose workers advertise neither runs every stage anywhere,
with one teacher per worker process (said so when connecting).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CPU = "CPU"  # resource of the CPU-stage workers
GPU = "GPU"  # resource of the teacher workers (one per device)

# Dask setting -> (Dask's default, ours) for a local cluster. Dask's defaults wake every
# process many times a second (the worker profiler every 10 ms, the event-loop tick every
# 20 ms, ...): an idle 2-worker cluster took 6.1 CPU-s in 30 s, a fifth of a core that the
# demo's trainings share their 2 cores with; with these 1.1 (python -m
# benchmarks.bench_idle_cluster). Nothing we use needs them (the profile is a dashboard view)
# and the memory limit is still checked twice a second. A value the user set (other than
# Dask's default) is kept, and ``--dashboard`` keeps the profiler.
QUIET_SETTINGS: dict[str, tuple[Any, Any]] = {
    "distributed.worker.profile.enabled": (True, False),
    "distributed.admin.tick.interval": ("20ms", "200ms"),
    "distributed.admin.system-monitor.interval": ("500ms", "2s"),
    "distributed.worker.memory.monitor-interval": ("100ms", "500ms"),
}


def quiet_settings(dashboard: bool = False) -> dict[str, Any]:
    """The :data:`QUIET_SETTINGS` whose current value is still Dask's default (with
    ``dashboard``, the profiler stays on: its samples are the dashboard's profile page)."""
    import dask
    import distributed  # noqa: F401 (adds its defaults to dask.config)

    return {
        key: ours
        for key, (default, ours) in QUIET_SETTINGS.items()
        if dask.config.get(key, None) == default
        and not (dashboard and key == "distributed.worker.profile.enabled")
    }


@dataclass(frozen=True)
class StageResources:
    """Dask ``resources=`` for each kind of task (None: may run on any worker)."""

    cpu: dict[str, float] | None
    teacher: dict[str, float] | None


def _memory_per_worker(memory_limit: str | float | None, n: int) -> Any:
    if memory_limit != "auto":
        return memory_limit
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT / n)


def worker_specs(
    workers: int, gpus: int, memory_limit: str | float | None = "auto", cpu_teacher: bool = True
) -> dict[str, dict]:
    """SpecCluster worker specs: ``workers`` CPU processes, then max(gpus, 1) teacher ones
    (just ``gpus`` without ``cpu_teacher``: adaptation on the CPU needs no teacher slot)."""
    from distributed import Nanny

    if workers < 1 or gpus < 0:
        raise ValueError(f"need workers >= 1 and gpus >= 0, got {workers} and {gpus}")
    teachers = max(gpus, 1) if cpu_teacher else gpus
    mem = _memory_per_worker(memory_limit, workers + teachers)

    def spec(resources: dict[str, float], visible: str) -> dict:
        opts = dict(
            nthreads=1,
            host="127.0.0.1",
            memory_limit=mem,
            resources=resources,
            env={"CUDA_VISIBLE_DEVICES": visible},
            silence_logs=logging.ERROR,
        )
        return {"cls": Nanny, "options": opts}

    out = {f"cpu-{i}": spec({CPU: 1}, "") for i in range(workers)}
    for g in range(teachers):
        out[f"gpu-{g}"] = spec({GPU: 1}, str(g) if gpus else "")
    return out


def local_cluster(
    workers: int,
    gpus: int = 0,
    *,
    memory_limit: str | float | None = "auto",
    dashboard: bool = False,
    cpu_teacher: bool = True,
) -> Any:
    """A ``SpecCluster`` on 127.0.0.1 with the workers of :func:`worker_specs`."""
    import dask
    from distributed import Scheduler, SpecCluster

    scheduler = {
        "cls": Scheduler,
        "options": dict(
            host="127.0.0.1",
            port=0,
            dashboard=dashboard,
            dashboard_address="127.0.0.1:0",  # also the /health server: never 0.0.0.0
        ),
    }
    # the scheduler reads its settings when it starts, each worker from the config its nanny
    # hands it (a copy of this process's, taken when the nanny is made)
    with dask.config.set(quiet_settings(dashboard)):
        return SpecCluster(
            workers=worker_specs(workers, gpus, memory_limit, cpu_teacher),
            scheduler=scheduler,
            silence_logs=logging.ERROR,
            name="tttkd",
        )


def stage_resources(client: Any, echo: Callable[[str], None] | None = print) -> StageResources:
    """Which resources the connected workers offer, hence where each stage may run
    (``echo`` None: no word about a missing teacher slot, for stages without a teacher)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    offered = {r for w in workers for r in (w.get("resources") or {})}
    cpu = {CPU: 1} if CPU in offered else None
    teacher = {GPU: 1} if GPU in offered else None
    if teacher is None and echo is not None:
        echo(
            "dask: no worker offers the GPU resource, so every worker process builds its own "
            "teacher (start teacher workers with `dask worker ADDRESS --resources GPU=1`)"
        )
    return StageResources(cpu, teacher)


class Cluster:
    """``with Cluster(...) as c``: ``c.client`` on a local cluster or on ``scheduler``."""

    def __init__(
        self,
        workers: int | None = None,
        gpus: int = 0,
        *,
        scheduler: str | None = None,
        memory_limit: str | float | None = "auto",
        dashboard: bool = False,
        cpu_teacher: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        if (workers is None) == (scheduler is None):
            raise ValueError("give either workers (a local cluster) or scheduler (an address)")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if gpus < 0:
            raise ValueError(f"gpus must be >= 0, got {gpus}")
        self.workers, self.gpus, self.scheduler = workers, gpus, scheduler
        self.memory_limit, self.dashboard, self.echo = memory_limit, dashboard, echo
        self.cpu_teacher = cpu_teacher
        self.cluster: Any = None
        self.client: Any = None
        self.resources = StageResources(None, None)

    def __enter__(self) -> Cluster:
        from distributed import Client

        if self.scheduler is not None:
            self.client = Client(self.scheduler, set_as_default=False)
            n = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
            self.echo(f"dask: connected to {self.scheduler} ({n} workers)")
        else:
            if self.dashboard and importlib.util.find_spec("bokeh") is None:
                self.echo("dask dashboard unavailable: it needs bokeh (pip install bokeh)")
                self.dashboard = False
            self.cluster = local_cluster(
                self.workers,
                self.gpus,
                memory_limit=self.memory_limit,
                dashboard=self.dashboard,
                cpu_teacher=self.cpu_teacher,
            )
            self.client = Client(self.cluster, set_as_default=False)
            teachers = f"{self.gpus} GPU" if self.gpus or not self.cpu_teacher else "1 CPU teacher"
            self.echo(
                f"dask: local cluster {self.cluster.scheduler_address}, {self.workers} CPU "
                f"worker processes + {teachers} worker(s), 1 thread each, memory limit "
                f"{self.memory_limit if self.memory_limit is not None else 'none'} per worker"
            )
            if self.dashboard:
                self.echo(f"dask dashboard: {self.cluster.dashboard_link}")
        self.resources = stage_resources(self.client, self.echo if self.cpu_teacher else None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None
