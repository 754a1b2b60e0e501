"""``--workers/--gpus/--scheduler/--memory-limit/--dashboard`` for the adaptation commands:
the names and meanings of tttkd-prep's, turned into a ``DaskExecutor`` (``pipeline.cluster``)
or None for a serial run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tttkd.cli.guard import check_scheduler

CLUSTER_OPTIONS = ("workers", "gpus", "scheduler", "memory_limit", "dashboard")


def cluster_options(f: Callable) -> Callable:
    """Add the cluster options (one scene task per worker at a time)."""
    opts = [
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="local Dask cluster of N CPU worker processes x 1 thread, each adapting one "
            "scene at a time (default: serial, in this process)",
        ),
        click.option(
            "--gpus",
            type=click.IntRange(min=0),
            default=None,
            help="with --workers and --device cuda: one worker per GPU, pinned to it, runs "
            "the scenes [default: every visible GPU]",
        ),
        click.option(
            "--scheduler",
            default=None,
            help="an existing Dask scheduler, tcp://host:8786 (workers started with "
            "--resources CPU=1, or GPU=1 for --device cuda; README)",
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
            help="serve the Dask dashboard on 127.0.0.1 (needs bokeh)",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


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
