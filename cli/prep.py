"""``tttkd-prep``: build the teacher cache (``tttkd-prep DATASET ...``), inspect or verify it.

One subcommand per dataset (its own reader options in its own ``--help``) plus ``inspect``
and ``verify``; the options are generated from :class:`tttkd.pipeline.plan.PrepConfig`'s
fields, with ``--config FILE`` and ``--set key=value`` as in tttkd-train and tttkd-adapt.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from tttkd.cli.cluster_options import CLUSTER_OPTIONS, cluster_options
from tttkd.cli.guard import check_scheduler, run_command
from tttkd.cli.options import (
    FieldOptions,
    config_file_options,
    deprecated_alias,
    split_commas,
)
from tttkd.pipeline.datasets.registry import DATASETS
from tttkd.pipeline.plan import PrepConfig
from tttkd.settings import (
    ConfigError,
    apply_overrides,
    build,
    check_keys,
    merge_delta,
    read_config_file,
)

# reader options per dataset: (click decls, reader kwarg, click kwargs); unset = reader default
_PATH = click.Path(file_okay=True, dir_okay=True)
READER_OPTIONS: dict[str, list[tuple[tuple[str, ...], str, dict]]] = {
    "scannet": [
        (
            ("--frames",),
            "frames",
            dict(
                type=click.Choice(["auto", "25k", "exported", "sens", "none"]),
                help="where frames come from (default: auto)",
            ),
        ),
        (
            ("--align/--no-align",),
            "align",
            dict(default=None, help="apply axisAlignment to points and poses"),
        ),
        (
            ("--frames-root",),
            "frames_root",
            dict(type=_PATH, help="folder of the 25k subset / export"),
        ),
        (
            ("--frame-stride",),
            "frame_stride",
            dict(type=click.IntRange(min=1), help="keep every k-th .sens frame"),
        ),
        (("--labels-tsv",), "labels_tsv", dict(type=_PATH, help="scannetv2-labels.combined.tsv")),
        (("--splits-dir",), "splits_dir", dict(type=_PATH, help="folder of scannetv2_*.txt")),
    ],
    "s3dis": [
        (
            ("--version",),
            "version",
            dict(
                type=click.Choice(["aligned", "raw"]),
                help="point cloud version (default: what root holds)",
            ),
        ),
        (("--images-root",), "images_root", dict(type=_PATH, help="2D-3D-S root (area_N/data)")),
        (
            ("--align-direction",),
            "align_direction",
            dict(type=click.Choice(["auto", "documented", "inverse"])),
        ),
        (("--test-area",), "test_area", dict(type=int, help="the held-out area (default 5)")),
        (("--unknown-class",), "unknown_class", dict(type=click.Choice(["error", "ignore"]))),
    ],
    "matterport3d": [
        (
            ("--nearest-views",),
            "nearest_views",
            dict(type=int, help="cameras paired when none is inside"),
        ),
        (("--category-mapping",), "category_mapping", dict(type=_PATH)),
        (("--splits-dir",), "splits_dir", dict(type=_PATH)),
        (("--flip-cy/--no-flip-cy",), "flip_cy", dict(default=None)),
    ],
    "pointcept": [
        (
            ("--segment-file",),
            "segment_file",
            dict(help="label file name (default: segment20.npy, then segment.npy)"),
        ),
        (("--allow-unlabeled/--no-allow-unlabeled",), "allow_unlabeled", dict(default=None)),
    ],
}


def _parse_pairs(values: tuple[str, ...], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict; values parsed as YAML scalars (1, true, 0.5, text)."""
    import yaml

    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=what)
        out[key.strip().replace("-", "_")] = yaml.safe_load(raw)
    return out


# every PrepConfig field is an option of each dataset subcommand except the three given
# otherwise: dataset (the subcommand), reader_options (the dataset's own options and
# -o KEY=VALUE), storage_options (--storage-option KEY=VALUE)
BY_HAND = {"dataset": "the subcommand", "reader_options": "--reader-option",
           "storage_options": "--storage-option"}  # fmt: skip
FIELDS = FieldOptions(PrepConfig, [f.name for f in fields(PrepConfig) if f.name not in BY_HAND])
VERIFY_FIELDS = FieldOptions(PrepConfig, ["scenes"])  # tttkd-prep verify --scenes
# the options that say how to run, not what the cache holds (not recorded in the cache)
RUN_OPTIONS = (*CLUSTER_OPTIONS, "dry_run")
RUN_OPTIONS += ("progress", "config_files", "sets", "reader_option", "storage_option")


def _common(f: Callable) -> Callable:
    opts = [
        click.option(
            "--dry-run", is_flag=True, help="print the scene count and size estimate only"
        ),
        click.option(
            "--progress/--no-progress", default=True, show_default=True, help="progress bar"
        ),
        click.option(
            "-o",
            "--reader-option",
            "reader_option",
            multiple=True,
            help="any other reader option KEY=VALUE (repeatable)",
        ),
        click.option(
            "--storage-option",
            multiple=True,
            help="fsspec storage option KEY=VALUE for a remote --cache (repeatable)",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    f = cluster_options(
        workers_help="local Dask cluster of N CPU worker processes x 1 thread, plus the teacher "
        "workers of --gpus [default: serial, one process with one torch thread]",
        gpus_help="with --workers: one teacher worker per GPU, pinned to it (0: one teacher "
        "worker on the CPU) [default: 0, or every visible GPU with --device cuda]",
    )(f)
    f = deprecated_alias("--out", "--cache", "out_alias")(f)
    f = deprecated_alias("--scene", "--scenes", "scene_alias", multiple=True)(f)
    return config_file_options(FIELDS(f))


def _dataset_command(name: str) -> click.Command:
    specific = READER_OPTIONS[name]

    def callback(**kw: Any) -> None:
        reader_options = {}
        for _, key, _ in specific:
            v = kw.pop(key)
            if v is not None:
                reader_options[key] = v
        reader_options.update(_parse_pairs(kw.pop("reader_option"), "--reader-option"))
        _prep(name, reader_options, **kw)

    for decls, key, kwargs in reversed(specific):
        callback = click.option(*decls, key, **{"default": None, **kwargs})(callback)
    callback = _common(callback)
    return click.command(
        name=name,
        help=f"Prepare the {name} teacher cache: voxelize, select images, correspond, "
        "run the teacher once, write Zarr. The cache records the resolved config "
        "(`tttkd-prep inspect CACHE --config` prints it; `--config FILE` repeats the run).",
        context_settings={"max_content_width": 100},
    )(callback)


def _named(dataset: str, reader_options: dict, kw: dict[str, Any]) -> dict:
    """The settings given on the command line (old option names included), as a delta."""
    delta = FIELDS.take(kw)
    out_alias, scene_alias = kw.pop("out_alias"), kw.pop("scene_alias")
    if out_alias is not None:
        if "out" in delta:
            raise click.UsageError("give --cache only (--out is its deprecated name)")
        delta["out"] = out_alias
    if scene_alias:
        delta["scenes"] = [*delta.get("scenes", []), *split_commas(scene_alias)]
    storage = _parse_pairs(kw.pop("storage_option"), "--storage-option")
    return {"dataset": dataset, "reader_options": reader_options, **delta} | (
        {"storage_options": storage} if storage else {}
    )


def _config(dataset: str, reader_options: dict, kw: dict[str, Any]) -> PrepConfig:
    """Defaults <- ``--config`` files <- the options given <- ``--set`` (last wins)."""
    named = _named(dataset, reader_options, kw)
    data: dict = {}
    for f in kw.pop("config_files"):
        delta = read_config_file(f)
        try:
            check_keys(PrepConfig, delta)
        except ConfigError as e:
            raise ConfigError(f"{f}: {e}") from e
        if delta.get("dataset", dataset) != dataset:
            raise click.UsageError(
                f"{f} is a {delta['dataset']} config; run tttkd-prep {delta['dataset']} with it"
            )
        data = merge_delta(data, delta)
    data = apply_overrides(merge_delta(data, named), kw.pop("sets"))
    for key, option in (("root", "--root"), ("out", "--cache")):
        if data.get(key) is None:
            raise click.UsageError(f"missing option {option} (or give it in a --config file)")
    return build(PrepConfig, data)


def _prep(dataset: str, reader_options: dict, **kw: Any) -> None:
    from tttkd.core import TttkdError
    from tttkd.pipeline.executors import DaskExecutor, SerialExecutor
    from tttkd.pipeline.run import dry_run, run_prep

    workers, scheduler = kw.pop("workers"), kw.pop("scheduler")
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    memory_limit, dashboard = kw.pop("memory_limit"), kw.pop("dashboard")
    gpus = kw.pop("gpus")
    if gpus is not None and workers is None:
        raise click.UsageError("--gpus needs --workers (an external cluster brings its own)")
    progress, is_dry = kw.pop("progress"), kw.pop("dry_run")
    try:
        config = _config(dataset, reader_options, kw)
        if scheduler is not None and not is_dry:
            check_scheduler(scheduler)  # seconds, not a hang, when nobody listens there
        if is_dry:
            dry_run(config, echo=click.echo, workers=workers or 1)
            return
        if workers is None and scheduler is None:
            executor = SerialExecutor()
        else:
            if gpus and config.device != "cuda":
                raise click.UsageError(
                    "--gpus needs --device cuda (no index: each teacher worker sees only its "
                    "own GPU, as cuda)"
                )
            if gpus is None and workers is not None and config.device.startswith("cuda"):
                import torch

                gpus = torch.cuda.device_count()  # one teacher worker per visible GPU
            executor = DaskExecutor(
                workers,
                gpus=gpus or 0,
                scheduler=scheduler,
                memory_limit=None if memory_limit in ("none", "0") else memory_limit,
                dashboard=dashboard,
                echo=click.echo,
            )
        report = run_prep(config, executor, progress=progress, echo=click.echo)
    except (TttkdError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    sys.exit(report.exit_code)


@click.command("inspect")
@click.argument("cache")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option(
    "--config",
    "as_config",
    is_flag=True,
    help="print the config the cache was made with (YAML; `tttkd-prep DATASET --config` it)",
)
def inspect_cmd(cache: str, as_json: bool, as_config: bool) -> None:
    """Summary of a cache: scenes per split, points, images, pairs per point, bytes."""
    from tttkd.pipeline.cache import Cache, CacheError

    if as_config:
        import yaml

        try:
            saved = Cache.open(cache, read_only=True).meta.options.get("config")
        except CacheError as e:
            raise click.ClickException(str(e)) from e
        if saved is None:
            raise click.ClickException(
                f"{cache} records no config (made before tttkd-prep recorded it); its "
                "settings are in `tttkd-prep inspect --json`"
            )
        click.echo(yaml.safe_dump(saved, sort_keys=False), nl=False)
        return
    try:
        s = Cache.open(cache, read_only=True).summary()
    except CacheError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    c = Cache.open(cache, read_only=True).meta
    click.echo(
        f"cache {cache}: dataset {s['dataset']}, teacher {c.teacher.get('name')} "
        f"(dim {c.teacher.get('dim')}), voxel {c.voxel_size} m (points on a "
        f"{c.point_voxel_size:g} m grid), codec {s['feature_codec']}"
    )
    cols = ("scenes", 8), ("points", 12), ("images", 8), ("pairs", 12), ("pairs/pt", 10)
    click.echo(f"{'split':<10}" + "".join(f"{n:>{w}}" for n, w in cols) + f"{'MiB':>10}")
    rows = list(s["splits"].items()) + [("total", s["totals"])]
    for split, r in rows:
        click.echo(
            f"{split:<10}{r['scenes']:>8}{r['points']:>12}{r['images']:>8}"
            f"{r['correspondences']:>12}{r['corr_per_point']:>10.2f}{r['bytes'] / 2**20:>10.1f}"
        )
    click.echo(f"incomplete scenes: {s['incomplete']}; on disk: {s['bytes_total'] / 2**20:.1f} MiB")
    if s["feature_cosine"] is not None:
        click.echo(f"feature cosine vs raw (lossy codec): {s['feature_cosine']:.4f}")


@click.command("verify")
@click.argument("cache")
@VERIFY_FIELDS
@deprecated_alias("--scene", "--scenes", "scene_alias", multiple=True)
@click.option(
    "--quick",
    is_flag=True,
    help="check chunk presence, counts and shapes only (no checksums, no chunk is read)",
)
def verify_cmd(
    cache: str, scenes: tuple[str, ...], scene_alias: tuple[str, ...], quick: bool
) -> None:
    """Check every scene: checksums of every array, complete, shapes consistent, indices in
    range, features finite."""
    from tttkd.pipeline.cache import Cache, CacheError

    scenes = split_commas(scenes) + split_commas(scene_alias)

    try:
        problems = Cache.open(cache, read_only=True).verify(list(scenes) or None, quick=quick)
    except CacheError as e:
        raise click.ClickException(str(e)) from e
    bad = {k: v for k, v in problems.items() if v}
    for sid, p in sorted(bad.items()):
        click.echo(f"{sid}: " + "; ".join(p))
    click.echo(
        f"verified {len(problems)} scenes: {len(problems) - len(bad)} ok, {len(bad)} with problems"
    )
    if bad:
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Prepare, inspect and verify the TTT-KD teacher cache.

    \b
    tttkd-prep scannet --root /data/scannet --cache feats.zarr --workers 2 ...
    tttkd-prep inspect feats.zarr
    tttkd-prep verify feats.zarr
    """


for _name in DATASETS:
    cli.add_command(_dataset_command(_name))
cli.add_command(inspect_cmd)
cli.add_command(verify_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tttkd-prep``); ``--debug`` shows tracebacks."""
    run_command(cli, argv, "tttkd-prep")


if __name__ == "__main__":
    main()
