"""``--workers/--gpus/--scheduler/--memory-limit/--dashboard``, declared once for tttkd-prep
and tttkd-adapt; for adaptation, turned into a ``DaskExecutor`` (``pipeline.cluster``) or None
for a serial run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tttkd.cli.guard import check_scheduler

CLUSTER_OPTIONS = ("workers", "gpus", "scheduler", "memory_limit", "dashboard")


ADAPT_WORKERS_HELP = (
    "local Dask cluster of N CPU worker processes x 1 thread, each adapting one scene at a "
    "time (default: serial, in this process)"
)
ADAPT_GPUS_HELP = (
    "with --workers and --device cuda: one worker per GPU, pinned to it, runs the scenes "
    "[default: every visible GPU]"
)


def cluster_options(
    workers_help: str = ADAPT_WORKERS_HELP, gpus_help: str = ADAPT_GPUS_HELP
) -> Callable[[Callable], Callable]:
    """The cluster options of tttkd-prep and tttkd-adapt: one name, type and default each;
    only what a worker does (``workers_help``, ``gpus_help``) differs between the commands."""
    opts = [
        click.option("--workers", type=click.IntRange(min=1), default=None, help=workers_help),
        click.option("--gpus", type=click.IntRange(min=0), default=None, help=gpus_help),
        click.option(
            "--scheduler",
            default=None,
            help="an existing Dask scheduler, tcp://host:8786 (workers started with "
            "--resources CPU=1, or GPU=1 for a GPU stage; README)",
        ),
        click.option(
            "--memory-limit",
            default="auto",
            show_default=True,
            help="per local worker (e.g. 4GB; 'auto' = RAM / workers)",
        ),
        click.option(
            "--dashboard/--no-dashboard",
            default=False,
            show_default=True,
            help="serve the Dask dashboard on 127.0.0.1 (needs bokeh)",
        ),
    ]

    def decorate(f: Callable) -> Callable:
        for opt in reversed(opts):
            f = opt(f)
        return f

    return decorate


def executor_from(kw: dict[str, Any], device: str, echo: Callable[[str], None]) -> Any:
    """Pop the cluster options from ``kw``: a ``DaskExecutor`` (not started), or None."""
    workers, gpus, scheduler = kw.pop("workers"), kw.pop("gpus"), kw.pop("scheduler")
    memory_limit, dashboard = kw.pop("memory_limit"), kw.pop("dashboard")
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    if gpus is not None and workers is None:
        raise click.UsageError("--gpus needs --workers (an external cluster brings its own)")
    if workers is None and scheduler is None:
        return None
    cuda = device.startswith("cuda")
    if gpus and not cuda:
        raise click.UsageError("--gpus needs --device cuda (each GPU worker sees only its own)")
    if scheduler is not None:
        check_scheduler(scheduler)  # seconds, not a hang, when nobody listens there
    elif cuda and gpus is None:
        import torch

        gpus = torch.cuda.device_count()  # one worker per visible GPU
    if cuda and workers is not None and not gpus:
        raise click.UsageError("--device cuda on a local cluster needs --gpus >= 1")
    from tttkd.pipeline.executors import DaskExecutor

    return DaskExecutor(
        workers,
        gpus=gpus or 0,
        scheduler=scheduler,
        memory_limit=None if memory_limit in ("none", "0") else memory_limit,
        dashboard=dashboard,
        cpu_teacher=False,
        echo=echo,
    )
