"""``tttkd-synth``: write synthetic rooms in a real dataset's exact on-disk format.

Users and the demo use it to get a dataset folder every reader (and ``tttkd-prep``) accepts
without downloading anything; ``--domain target`` gives the shifted point colours of the
demo benchmark.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import click

from tttkd.cli.guard import run_command

# dataset -> (writer module, function); imported only when asked for.
WRITERS = {
    "scannet": ("tttkd.pipeline.synthetic.scannet_writer", "write_scannet_dataset"),
    "s3dis": ("tttkd.pipeline.synthetic.s3dis_writer", "write_s3dis_dataset"),
    "matterport3d": ("tttkd.pipeline.synthetic.matterport_writer", "write_matterport_dataset"),
}


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WxH, e.g. 162x121") from None
    if w < 8 or h < 6:
        raise click.BadParameter("images must be at least 8x6 pixels")
    return w, h


def _writer(dataset: str):
    module, name = WRITERS[dataset]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise click.ClickException(
            f"the {dataset} writer ({module}.{name}) is not available in this install ({e})"
        ) from e


# option -> the keyword names writers use for it, first match wins
ALIASES = {
    "views": ("views_per_scene", "views_per_room", "views_per_region", "views", "n_views"),
    "image_size": ("image_size",),
    "frames": ("frames",),
    "seed": ("seed",),
    "domain": ("domain",),
}


def _call(fn, root: Path, n: int, options: dict[str, Any]) -> Any:
    """Call a writer with the scene count and the options it accepts (say which it ignores).

    Writers differ: ScanNet and Matterport take the count positionally (scenes, houses),
    S3DIS takes ``rooms_per_area`` over its ``areas``; an int ``image_size`` means square.
    """
    params = inspect.signature(fn).parameters
    args: list[Any] = [root]
    kwargs: dict[str, Any] = {}
    second = list(params.values())[1:2]
    if second and second[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
        args.append(n)
    elif "rooms_per_area" in params:
        areas = params["areas"].default if "areas" in params else (1,)
        kwargs["rooms_per_area"] = max(1, -(-n // len(areas)))
        click.echo(f"note: {kwargs['rooms_per_area']} room(s) in each of areas {areas}", err=True)
    for key, value in options.items():
        name = next((a for a in ALIASES.get(key, (key,)) if a in params), None)
        if name is None:
            click.echo(f"note: {fn.__module__} has no {key!r} option; ignored", err=True)
            continue
        if key == "image_size" and isinstance(params[name].default, int):
            value = value[0]  # a square image of side W
        kwargs[name] = value
    return fn(*args, **kwargs)


def _scene_lines(written: Any) -> list[str]:
    """One line per written scene from whatever ground truth the writer returns."""
    if isinstance(written, (list, tuple)):
        return [_describe(t) for t in written]
    for attr in ("rooms", "regions"):
        items = getattr(written, attr, None)
        if isinstance(items, dict):
            return list(items)
    return []


def _describe(truth: Any) -> str:
    sid = getattr(truth, "scene_id", None) or getattr(truth, "id", "?")
    parts = []
    if getattr(truth, "split", None):
        parts.append(f"split {truth.split}")
    if getattr(truth, "xyz", None) is not None:
        parts.append(f"{len(truth.xyz)} points")
    frames = getattr(truth, "valid_frames", None)
    if frames is not None:
        parts.append(f"{len(frames)} posed frames")
    return f"{sid}: " + ", ".join(parts) if parts else str(sid)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset", type=click.Choice(sorted(WRITERS)))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="root to write")
@click.option(
    "--scenes",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="ScanNet scenes; Matterport3D houses; S3DIS rooms, spread over its areas",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--domain",
    default="source",
    show_default=True,
    type=click.Choice(["source", "target"]),
    help="point-colour domain (target: hue +60 deg, saturation x0.7, noise)",
)
@click.option("--views", default=None, type=click.IntRange(1), help="valid frames per scene")
@click.option("--image-size", default=None, callback=_size, help="colour image size WxH")
@click.option(
    "--frames",
    "frames",
    multiple=True,
    type=click.Choice(["sens", "25k", "exported"]),
    help="ScanNet frame forms to write (repeat; default all three)",
)
def cli(
    dataset: str,
    out: Path,
    scenes: int,
    seed: int,
    domain: str,
    views: int | None,
    image_size: tuple[int, int] | None,
    frames: tuple[str, ...],
) -> None:
    """Write SCENES synthetic rooms of DATASET (scannet, s3dis, matterport3d) under OUT."""
    from tttkd.pipeline.synthetic.domain import SOURCE, TARGET

    fn = _writer(dataset)
    options: dict[str, Any] = {"seed": seed, "domain": TARGET if domain == "target" else SOURCE}
    if views is not None:
        options["views"] = views
    if image_size is not None:
        options["image_size"] = image_size
    if frames:
        if dataset != "scannet":
            raise click.UsageError("--frames applies to scannet only")
        options["frames"] = frames
    out.mkdir(parents=True, exist_ok=True)
    written = _call(fn, out, scenes, options)
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    lines = _scene_lines(written)
    click.echo(f"wrote {len(lines)} {dataset} scene(s) under {out}")
    for line in lines:
        click.echo("  " + line)
    reader_root = getattr(written, "scans_root", None)
    if reader_root is not None:
        click.echo(f"reader root: {reader_root}")
    click.echo(f"{len(files)} files, {size / 1e6:.1f} MB in total")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tttkd-synth``); ``--debug`` shows tracebacks."""
    run_command(cli, argv, "tttkd-synth")


if __name__ == "__main__":
    main()
