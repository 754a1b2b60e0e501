"""The prep driver: resolve the teacher, open or create the cache, plan, execute, report.

Only the driver writes root metadata (``Cache.create``, the PCA basis) and the failures list
``<out>.failures.json`` (beside the cache, never inside a scene); every task writes only its
own scene. A rerun skips complete scenes and redoes incomplete ones; a rerun with another
teacher, voxel size, image policy or reader options is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tttkd.core import DatasetError, TttkdError
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.executors import Executor, SerialExecutor
from tttkd.pipeline.overwrite import finish, removed_on_failed_start, staged
from tttkd.pipeline.plan import Plan, PrepConfig, SceneJob, estimate_scene_bytes, make_plan
from tttkd.pipeline.prep_scene import (
    _TEACHERS,
    SceneResult,
    build_record,
    get_teacher,
    sample_features,
)
from tttkd.pipeline.scene_warnings import report_warnings


class PrepError(DatasetError):
    """The run cannot start as asked (says why and what to do)."""


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


def label_set_for(config: PrepConfig) -> tuple[str, tuple[str, ...]]:
    from tttkd.core import get_label_set

    name = config.label_set or registry.dataset_info(config.dataset).label_set
    if name is None:
        raise PrepError(
            f"the {config.dataset} layout does not say which classes its labels are",
            fix="pass --label-set scannet20|s3dis13|matterport21",
        )
    ls = get_label_set(name)
    return ls.name, ls.class_names


def check_images(config: PrepConfig) -> None:
    info = registry.dataset_info(config.dataset)
    if not info.has_images and not config.no_images:
        raise PrepError(
            f"the {config.dataset} layout has no images, and knowledge distillation needs "
            "posed images to run the 2D teacher on",
            fix="prepare the dataset from its original release (scannet, s3dis, matterport3d), "
            "or pass --no-images to write a points-only cache (no teacher features)",
        )


def teacher_record(config: PrepConfig) -> dict:
    """The TeacherSpec as stored in the cache (built once in the driver)."""
    if config.no_images:
        return {"name": "none", "dim": 0}
    return get_teacher(SceneJob("", config)).spec.to_dict()


def build_meta(config: PrepConfig, teacher: dict) -> Any:
    from tttkd.pipeline.cache import CacheMeta

    label_set, class_names = label_set_for(config)
    return CacheMeta(
        dataset=config.dataset,
        voxel_size=config.voxel_size,
        point_voxel_size=config.point_grid,
        image_policy=config.image_policy_record(),
        teacher=teacher,
        label_set=label_set,
        class_names=class_names,
        feature_codec=config.feature_codec,
        options={
            "content": config.content_options(),
            "root": str(config.root),
            "config": config.to_record(),  # tttkd-prep inspect CACHE --config repeats the run
        },
    )


def open_cache(config: PrepConfig, meta: Any) -> Any:
    """Create or resume the cache; settings outside CacheMeta's comparison are checked here."""
    from tttkd.pipeline.cache import Cache, CacheError

    if not config.overwrite:
        try:
            old = Cache.open(config.out, read_only=True, storage_options=config.storage_options)
        except CacheError:
            old = None
        if old is not None:
            before = old.meta.options.get("content")
            now = meta.options["content"]
            if before is not None and before != now:
                raise CacheError(
                    f"the cache was made with other reader/label options: {before} -> {now}",
                    file=config.out,
                    fix="rerun with --overwrite to delete it and start again, or choose "
                    "another --cache",
                )
    return Cache.create(
        config.out, meta, overwrite=config.overwrite, storage_options=config.storage_options
    )


def list_and_plan(
    config: PrepConfig, complete: set[str], teacher: dict | None, run_id: str
) -> Plan:
    listed = registry.list_scenes(
        config.dataset, config.root, config.split, **config.reader_options
    )
    return make_plan(config, listed, complete, teacher_spec=teacher, run_id=run_id)


def fit_pca_if_needed(cache: Any, plan: Plan, config: PrepConfig, echo: Callable) -> None:
    """PCA codecs: fit the basis on a few (training) scenes' features, once, in the driver."""
    from tttkd.pipeline.cache import fit_pca

    k = cache.codec.pca_k
    if k is None or cache.pca is not None:
        return
    if cache.scene_ids(include_incomplete=True):
        raise PrepError("the cache holds scenes but no PCA basis", fix="rerun with --overwrite")
    train = [j for j in plan.jobs if j.config.split in (None, "train")] or plan.jobs
    samples = []
    for job in train[: config.pca_fit_scenes]:
        try:
            samples.append(sample_features(job))
        except TttkdError as e:
            echo(f"pca: skipping {job.scene_id} ({e})")
    if not samples or sum(len(s) for s in samples) < 2:
        raise PrepError("no features to fit the PCA basis on", fix="use --feature-codec fp16")
    basis = fit_pca(np.concatenate(samples), k, seed=config.seed)
    cache.set_pca(basis)
    kept = sum(basis.explained_variance_ratio)
    echo(f"pca: {k} components fitted on {len(samples)} scenes ({kept:.1%} of the variance)")


def _complete_scenes(config: PrepConfig) -> set[str]:
    """The scenes an existing cache already holds complete (none when there is no cache)."""
    from tttkd.pipeline.cache import Cache, CacheError

    try:
        cache = Cache.open(config.out, read_only=True, storage_options=config.storage_options)
        return set(cache.scene_ids())
    except CacheError:
        return set()


@dataclass
class _Sample:
    """What the dry run measured on the scenes it ran through the CPU stage."""

    bytes: list[int] = field(default_factory=list)  # estimated cache bytes per scene
    cpu_s: list[float] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)  # up to 8 images for the teacher


def _sample_scene(job: SceneJob, teacher: Any, sample: _Sample, echo: Callable) -> None:
    """Run one scene through the CPU stage and add its size and time to ``sample`` (a scene
    that fails is reported and left out)."""
    t0 = time.perf_counter()
    try:
        rec, _, imgs = build_record(job)  # the CPU stage of prep, exactly
    except Exception as e:
        echo(f"  {job.scene_id}: cannot be prepared ({_one_line(e)}); not sampled")
        return
    sample.cpu_s.append(time.perf_counter() - t0)
    n_img = 0 if imgs is None else len(imgs)
    sample.images.append(n_img)
    if imgs is not None:
        sample.pixels.extend(imgs[: max(0, 8 - len(sample.pixels))])
    grid = tuple(rec.attrs["feature_grid"])
    b = estimate_scene_bytes(
        full_points=len(rec.full_label),
        voxels=rec.num_points,
        images=n_img,
        pairs=rec.num_corr,
        grid_hw=grid,
        dim=0 if teacher is None else teacher.spec.dim,
    )
    sample.bytes.append(b)
    echo(
        f"  {job.scene_id}: {len(rec.full_label)} points -> {rec.num_points} stored, "
        f"{n_img} images at grid {grid[0]}x{grid[1]}, {rec.num_corr} pairs: {_mb(b)}; "
        f"CPU stage {sample.cpu_s[-1]:.2f} s"
    )


def dry_run(
    config: PrepConfig,
    echo: Callable[[str], None] = print,
    sample: int = 2,
    workers: int = 1,
) -> dict:
    """Scene count, an estimated (uncompressed) cache size and the expected hours with
    ``workers`` CPU workers, from ``sample`` scenes run through the CPU stage here."""
    check_images(config)
    complete = _complete_scenes(config)
    plan = list_and_plan(config, complete if not config.overwrite else set(), None, "")
    n = len(plan.jobs)
    echo(
        f"{config.dataset}: {n + len(plan.skipped)} scenes, {len(plan.skipped)} complete "
        f"already, {n} to prepare"
    )
    if n == 0:
        return {"scenes": 0, "skipped": len(plan.skipped), "bytes": 0}
    teacher = None if config.no_images else get_teacher(SceneJob("", config))
    spec = None if teacher is None else teacher.spec.to_dict()
    measured = _Sample()
    for i in sorted({int(i) for i in np.linspace(0, n - 1, min(sample, n))}):
        job = SceneJob(plan.jobs[i].scene_id, config, teacher_spec=spec)
        _sample_scene(job, teacher, measured, echo)
    if not measured.bytes:
        echo("no sampled scene could be prepared: no estimate (see the reasons above)")
        return {"scenes": n, "skipped": len(plan.skipped), "bytes": 0}
    est = int(np.mean(measured.bytes) * n)
    echo(
        f"estimated cache size: {_mb(est)} uncompressed for {n} scenes "
        f"({_mb(int(np.mean(measured.bytes)))} per scene; zstd typically saves 10-30% on "
        "features)"
    )
    speed = estimate_hours(
        n,
        float(np.mean(measured.images)) * n,
        float(np.mean(measured.cpu_s)),
        teacher,
        measured.pixels,
        workers,
    )
    echo(speed.pop("text"))
    return {"scenes": n, "skipped": len(plan.skipped), "bytes": est, **speed}


def estimate_hours(
    scenes: int,
    images: float,
    cpu_s_per_scene: float,
    teacher: Any,
    sample: list[np.ndarray],
    workers: int,
) -> dict:
    """Expected prep time from speeds measured here: the CPU stage per scene (one worker, on
    the sampled scenes) and the teacher's img/s on the sampled images (after one warm-up
    call). CPU workers run in parallel; the teacher (one per device) runs beside them, so
    the slower of the two bounds the run. Writing is not included."""
    img_s = float("inf")
    if teacher is not None and sample:
        import torch

        shape = sample[0].shape
        batch = [im for im in sample if im.shape == shape]
        teacher.encode(batch[:1], out_dtype=torch.float16)  # warm-up (kernels, allocator)
        t0 = time.perf_counter()
        teacher.encode(batch, out_dtype=torch.float16)
        img_s = len(batch) / (time.perf_counter() - t0)
    scenes_s = workers / max(cpu_s_per_scene, 1e-9)
    cpu_h, teacher_h = scenes / scenes_s / 3600, images / img_s / 3600
    hours = max(cpu_h, teacher_h)
    bound = "the teacher" if teacher_h >= cpu_h else f"the CPU stage ({workers} worker(s))"
    text = (
        f"measured here: CPU stage {scenes_s:.3f} scenes/s with {workers} worker(s), teacher "
        f"{img_s:.1f} img/s ({'no images' if teacher is None else teacher.device}); expected "
        f"{hours:.2f} h for {scenes} scenes and ~{images:.0f} images, bound by {bound} "
        "(writing not included)"
    )
    return {"scenes_per_s": scenes_s, "images_per_s": img_s, "hours": hours, "text": text}


def _one_line(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0]


def _mb(b: int) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


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
