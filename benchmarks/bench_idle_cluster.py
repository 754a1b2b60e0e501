"""CPU an idle local Dask cluster burns, with Dask's housekeeping defaults and with ours.

Why it matters: the demo keeps its 2-worker cluster up while three trainings share the 2
cores, and prep and adapt clusters idle between tasks; every CPU second the cluster takes is
one the work does not get. Each setting starts a real ``tttkd.pipeline.cluster.Cluster``
(``--workers`` CPU workers, no teacher worker), waits for it to settle, then sums the user +
sys CPU seconds of this process (client, scheduler, nannies) and its worker processes over
``--seconds``. The two settings run in the same invocation, so the ratio holds on a shared
machine even when the absolute figures do not.

``python -m benchmarks.bench_idle_cluster [--workers 2 --seconds 60]``; ``--quick``: 10 s.
"""

from __future__ import annotations

import argparse
import time

import psutil


def idle_cpu_seconds(workers: int, seconds: float, quiet: bool) -> tuple[float, float]:
    """``(this process, worker processes)`` CPU seconds over ``seconds`` of an idle cluster."""
    from unittest import mock

    from tttkd.pipeline import cluster

    # Dask's defaults: nothing overridden (the same cluster code otherwise)
    overrides = cluster.quiet_settings if quiet else (lambda dashboard=False: {})
    with mock.patch.object(cluster, "quiet_settings", overrides):
        with cluster.Cluster(workers, cpu_teacher=False, echo=lambda _: None):
            time.sleep(3)  # start-up work (imports, registration) is not idling
            me = psutil.Process()
            procs = [me, *me.children(recursive=True)]
            before = [sum(p.cpu_times()[:2]) for p in procs]
            time.sleep(seconds)
            after = [sum(p.cpu_times()[:2]) for p in procs]
    spent = [b - a for a, b in zip(before, after)]
    return spent[0], sum(spent[1:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="10 s per setting")
    args = ap.parse_args(argv)
    seconds = 10.0 if args.quick else args.seconds
    rows = {}
    for name, quiet in (("dask defaults", False), ("tttkd (QUIET_SETTINGS)", True)):
        driver, workers = idle_cpu_seconds(args.workers, seconds, quiet)
        rows[name] = driver + workers
        print(
            f"{name:24s} idle {args.workers} workers for {seconds:.0f} s: driver {driver:.2f} "
            f"+ workers {workers:.2f} = {driver + workers:.2f} CPU-s "
            f"({100 * (driver + workers) / seconds:.1f}% of one core)"
        )
    base, ours = rows.values()
    print(f"idle CPU, dask defaults / ours: {base / max(ours, 1e-9):.1f}x")


if __name__ == "__main__":
    main()
