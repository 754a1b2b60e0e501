"""Before any scene is prepared: the run's checks, the cache's metadata, the cache opened or
created (a rerun with other settings is refused here), the plan, and the PCA basis.

Only the driver runs these (``pipeline.run``, and the dry run in ``pipeline.dry_run``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tttkd.core import DatasetError, TttkdError
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.plan import Plan, PrepConfig, SceneJob, make_plan
from tttkd.pipeline.prep_teacher import get_teacher, sample_features


class PrepError(DatasetError):
    """The run cannot start as asked (says why and what to do)."""


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


def complete_scenes(config: PrepConfig) -> set[str]:
    """The scenes an existing cache already holds complete (none when there is no cache)."""
    from tttkd.pipeline.cache import Cache, CacheError

    try:
        cache = Cache.open(config.out, read_only=True, storage_options=config.storage_options)
        return set(cache.scene_ids())
    except CacheError:
        return set()
