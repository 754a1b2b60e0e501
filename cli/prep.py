"""``tttkd-prep``: build the teacher cache (``tttkd-prep DATASET ...``), inspect or verify it.

One subcommand per dataset (its own reader options in its own ``--help``) plus ``inspect``
and ``verify``; options map one to one onto :class:`tttkd.pipeline.plan.PrepConfig`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from tttkd.cli.guard import (
    FiniteFloat,
    check_device,
    check_label_set,
    check_scheduler,
    run_command,
)
from tttkd.pipeline.correspond import CorrespondConfig
from tttkd.pipeline.datasets.registry import DATASETS

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


def _common(f: Callable) -> Callable:
    c = CorrespondConfig()
    opts = [
        click.option(
            "--root",
            required=True,
            type=click.Path(exists=True, file_okay=False),
            help="the dataset folder, exactly as distributed",
        ),
        click.option(
            "--out", required=True, help="cache location: a path or fsspec URL (feats.zarr)"
        ),
        click.option("--split", default=None, help="train / val / test (default: every scene)"),
        click.option("--scene", "scenes", multiple=True, help="only these scene ids (repeatable)"),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="local Dask cluster of N CPU worker processes x 1 thread, plus the teacher "
            "workers of --gpus (default: serial, one process with one torch thread)",
        ),
        click.option(
            "--gpus",
            type=click.IntRange(min=0),
            default=None,
            help="with --workers: one teacher worker per GPU, pinned to it (0: one teacher "
            "worker on the CPU; default: 0)",
        ),
        click.option(
            "--scheduler", default=None, help="an existing Dask scheduler, tcp://host:8786"
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
        click.option(
            "--teacher",
            default="dinov2_vitl14",
            show_default=True,
            help="teacher name (dinov2_vit{s,b,l,g}14[_reg], clip_*, sam_*, test_vit_tiny)",
        ),
        click.option(
            "--teacher-weights",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="local weights file (never downloaded)",
        ),
        click.option(
            "--image-size",
            type=int,
            default=None,
            help="teacher input short side in px (default: the teacher's, 448 for ViTs)",
        ),
        click.option(
            "--device",
            default="cpu",
            show_default=True,
            callback=check_device,
            help="teacher device (cpu, cuda, cuda:N)",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="images per teacher forward pass (default: from free GPU memory on CUDA, "
            "8 on CPU)",
        ),
        click.option(
            "--images-per-task",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="images (of several scenes) per teacher task on a Dask cluster",
        ),
        click.option(
            "--compile-teacher/--no-compile-teacher",
            default=False,
            help="torch.compile the teacher (compile time per worker; speed-up unmeasured)",
        ),
        click.option(
            "--voxel-size",
            type=FiniteFloat(0, open=True),
            default=0.04,
            show_default=True,
            help="network voxel, m",
        ),
        click.option(
            "--point-voxel-size",
            type=FiniteFloat(0, open=True),
            default=None,
            help="grid the cache keeps points on, m (default: voxel size / 4; consumers "
            "voxelize after augmenting, so finer points leave no holes in rotated views)",
        ),
        click.option(
            "--label-mode",
            type=click.Choice(["representative", "majority"]),
            default="representative",
            show_default=True,
            help="voxel label",
        ),
        click.option(
            "--label-set",
            default=None,
            callback=check_label_set,
            help="scannet20 / s3dis13 / matterport21",
        ),
        click.option(
            "--max-images",
            type=click.IntRange(min=0),
            default=None,
            help="images per scene, seeded random (0 = all; default: all for ScanNet "
            "25k, 50 otherwise)",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="image draw seed"),
        click.option(
            "--feature-codec",
            default="fp16",
            show_default=True,
            help="fp16 | bitround<k> | pca<k> | pca<k>+bitround<b>",
        ),
        click.option(
            "--depth-abs-tol",
            type=FiniteFloat(0),
            default=c.depth_abs_tol,
            show_default=True,
            help="occlusion test: metres",
        ),
        click.option(
            "--depth-rel-tol",
            type=FiniteFloat(0),
            default=c.depth_rel_tol,
            show_default=True,
            help="occlusion test: fraction of the depth",
        ),
        click.option(
            "--zbuffer-cell-px",
            type=FiniteFloat(0, open=True),
            default=None,
            help="z-buffer cell for frames without depth (default: automatic)",
        ),
        click.option(
            "--no-images", is_flag=True, help="points-only cache (no teacher, no correspondences)"
        ),
        click.option("--overwrite", is_flag=True, help="delete an existing cache and start again"),
        click.option(
            "--scene-timeout",
            type=FiniteFloat(0, open=True),
            default=None,
            help="seconds a scene may spend reading and corresponding before it fails (the run "
            "goes on; serial runs)",
        ),
        click.option(
            "--dry-run", is_flag=True, help="print the scene count and size estimate only"
        ),
        click.option("--progress/--no-progress", default=True, help="progress bar"),
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
            help="fsspec storage option KEY=VALUE for remote --out (repeatable)",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


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
        "run the teacher once, write Zarr.",
    )(callback)


def _prep(dataset: str, reader_options: dict, **kw: Any) -> None:
    from tttkd.pipeline.errors import TttkdError
    from tttkd.pipeline.executors import DaskExecutor, SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import dry_run, run_prep

    workers, scheduler = kw.pop("workers"), kw.pop("scheduler")
    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers or --scheduler, not both")
    if kw.get("scene_timeout") and (workers is not None or scheduler is not None):
        click.echo(
            "warning: --scene-timeout is enforced in serial runs only; on a Dask cluster a "
            "scene's CPU stage runs in a worker thread, where only the regular-file checks "
            "guard against hangs",
            err=True,
        )
    if scheduler is not None and not kw.get("dry_run"):
        check_scheduler(scheduler)  # seconds, not a hang, when nobody listens there
    memory_limit, dashboard = kw.pop("memory_limit"), kw.pop("dashboard")
    gpus = kw.pop("gpus")
    if gpus is not None and workers is None:
        raise click.UsageError("--gpus needs --workers (an external cluster brings its own)")
    progress, is_dry = kw.pop("progress"), kw.pop("dry_run")
    storage = _parse_pairs(kw.pop("storage_option"), "--storage-option") or None
    try:
        config = PrepConfig(
            dataset=dataset,
            reader_options=reader_options,
            scenes=tuple(kw.pop("scenes")),
            storage_options=storage,
            **kw,
        )
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
def inspect_cmd(cache: str, as_json: bool) -> None:
    """Summary of a cache: scenes per split, points, images, pairs per point, bytes."""
    from tttkd.pipeline.cache import Cache, CacheError

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
@click.option("--scene", "scenes", multiple=True, help="only these scenes")
@click.option(
    "--quick",
    is_flag=True,
    help="check chunk presence, counts and shapes only (no checksums, no chunk is read)",
)
def verify_cmd(cache: str, scenes: tuple[str, ...], quick: bool) -> None:
    """Check every scene: checksums of every array, complete, shapes consistent, indices in
    range, features finite."""
    from tttkd.pipeline.cache import Cache, CacheError

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Prepare, inspect and verify the TTT-KD teacher cache.

    \b
    tttkd-prep scannet --root /data/scannet --out feats.zarr --workers 2 ...
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
