"""The prep driver: resolve the teacher, open or create the cache, plan, execute, report.

Only the driver writes root metadata (``Cache.create``, the PCA basis) and the failures list
``<out>.failures.json`` (beside the cache, never inside a scene); every task writes only its
own scene. A rerun skips complete scenes and redoes incomplete ones; a rerun with another
teacher, voxel size, image policy or reader options is refused unless ``overwrite``
(``pipeline.run_setup``). ``dry_run`` (``pipeline.dry_run``) estimates a run without writing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tttkd.pipeline.dry_run import dry_run
from tttkd.pipeline.executors import Executor, SerialExecutor
from tttkd.pipeline.overwrite import finish, removed_on_failed_start, staged
from tttkd.pipeline.plan import PrepConfig
from tttkd.pipeline.prep_teacher import _TEACHERS
from tttkd.pipeline.run_setup import (
    PrepError,
    build_meta,
    check_images,
    fit_pca_if_needed,
    list_and_plan,
    open_cache,
    teacher_record,
)
from tttkd.pipeline.scene_result import SceneResult
from tttkd.pipeline.scene_warnings import report_warnings

__all__ = [  # the driver, and the steps callers (CLI, benchmarks) use one by one
    "PrepError",
    "RunReport",
    "build_meta",
    "dry_run",
    "failures_url",
    "open_cache",
    "run_prep",
    "task_images",
    "teacher_record",
]


@dataclass
class RunReport:
    planned: int
    skipped: list[str]
    done: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)  # {"scene_id", "reason", "detail"}
    images: int = 0
    seconds: float = 0.0
    failures_path: str = ""
    results: list[SceneResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def failures_url(out: str) -> str:
    return out.rstrip("/") + ".failures.json"


def _write_json(url: str, data: dict, storage_options: dict | None) -> None:
    import fsspec

    with fsspec.open(url, "w", **(storage_options or {})) as f:
        json.dump(data, f, indent=1)


def run_prep(
    config: PrepConfig,
    executor: Executor | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    run_id: str | None = None,
) -> RunReport:
    """Prepare every planned scene; failures are collected, never raised (see exit_code)."""
    from tttkd.pipeline.plan import new_run_id

    t_start = time.perf_counter()
    run_id = run_id or new_run_id()
    check_images(config)
    teacher = teacher_record(config)
    meta = build_meta(config, teacher)
    written = staged(config)  # an overwrite writes beside the old cache, swapped in at the end
    # plan before any write: a bad root or scene id must not cost a finished cache
    plan = list_and_plan(written, set(), teacher, run_id) if config.overwrite else None
    with removed_on_failed_start(written.out):
        cache = open_cache(written, meta)
        if plan is None:
            plan = list_and_plan(written, set(cache.scene_ids()), teacher, run_id)
    echo(
        f"{config.dataset}: {len(plan.jobs) + len(plan.skipped)} scenes; "
        f"{len(plan.skipped)} complete already (skipped), {len(plan.jobs)} to prepare"
    )
    fit_pca_if_needed(cache, plan, config, echo)
    executor = executor or SerialExecutor()
    if not isinstance(executor, SerialExecutor):
        _TEACHERS.clear()  # workers build their own; the driver's copy would only hold memory
        _release_device_memory()
    report = RunReport(planned=len(plan.jobs), skipped=list(plan.skipped))
    report.failures_path = failures_url(config.out)
    bar = _progress(len(plan.jobs), len(plan.skipped), progress, echo)
    try:
        with executor:
            for res in executor.prep(plan.jobs, task_images(config, executor)):
                _record_result(report, res, bar, config=config, run_id=run_id, t_start=t_start)
    finally:
        bar.close()
        report.seconds = round(time.perf_counter() - t_start, 3)
        _save_failures(report, config, run_id)
    finish(config, written, len(report.done), len(report.failed), echo)
    report_warnings(config.out, report.results, echo, config.storage_options)
    _echo_summary(report, echo)
    return report


def _record_result(
    report: RunReport,
    res: SceneResult,
    bar: Any,
    *,
    config: PrepConfig,
    run_id: str,
    t_start: float,
) -> None:
    """Count one finished scene; a failure is saved to the failures list at once (a killed
    run still leaves it) and printed above the progress bar."""
    _account(report, res)
    if res.status == "failed":
        _save_failures(report, config, run_id)
        bar.write(f"FAILED {res.scene_id}: {res.reason.splitlines()[0]}")
    bar.update(1)
    elapsed = time.perf_counter() - t_start
    bar.set_postfix(
        done=len(report.done),
        failed=len(report.failed),
        skipped=len(report.skipped),
        img_s=f"{report.images / max(elapsed, 1e-9):.2f}",
    )


def _echo_summary(report: RunReport, echo: Callable[[str], None]) -> None:
    echo(
        f"done {len(report.done)}, failed {len(report.failed)}, skipped {len(report.skipped)} "
        f"in {report.seconds:.1f} s ({report.images} images)"
    )
    if report.failed:
        echo(f"failures listed in {report.failures_path}:")
        for f in report.failed:
            echo(f"  {f['scene_id']}: {f['reason'].splitlines()[0]}")


def _release_device_memory() -> None:
    """Hand the driver's cached GPU memory back (its teacher copy is gone; workers need it)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def task_images(config: PrepConfig, executor: Executor) -> int:
    """Images per teacher task: the batch size in one process (scenes are written soon), more
    on a cluster (the teacher worker's own batch size splits them again)."""
    if isinstance(executor, SerialExecutor):
        return config.batch_size or 8
    return config.images_per_task


def _account(report: RunReport, res: SceneResult) -> None:
    report.results.append(res)
    if res.status == "done":
        report.done.append(res.scene_id)
        report.images += res.images
    elif res.status == "skipped":
        report.skipped.append(res.scene_id)
    else:
        report.failed.append({"scene_id": res.scene_id, "reason": res.reason, "detail": res.detail})


def _save_failures(report: RunReport, config: PrepConfig, run_id: str) -> None:
    data = {
        "run_id": run_id,
        "dataset": config.dataset,
        "cache": config.out,
        "planned": report.planned,
        "done": len(report.done),
        "skipped": len(report.skipped),
        "failures": report.failed,
    }
    _write_json(report.failures_path, data, config.storage_options)


class _NoBar:
    def __init__(self, echo: Callable[[str], None]) -> None:
        self.write = echo

    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, skipped: int, enabled: bool, echo: Callable[[str], None]) -> Any:
    if not enabled:
        return _NoBar(echo)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="scene", dynamic_ncols=True)
    bar.set_postfix(done=0, failed=0, skipped=skipped, img_s="0.00")
    return bar
