"""``tttkd-synth``: write synthetic rooms in a real dataset's exact on-disk format.

Users and the demo use it to get a dataset folder every reader (and ``tttkd-prep``) accepts
without downloading anything; ``--domain target`` gives the shifted point colours of the
demo benchmark.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tttkd.cli.guard import run_command
from tttkd.cli.options import deprecated_alias
from tttkd.synthetic.defaults import IMAGE_SIZE, NUM_SCENES, VIEWS

# dataset -> (writer module, function); imported only when asked for. Every writer is called
# as fn(root, num_scenes, views=, image_size=(w, h), seed=, domain=) (ScanNet also frames=).
WRITERS = {
    "scannet": ("tttkd.synthetic.scannet_writer", "write_scannet_dataset"),
    "s3dis": ("tttkd.synthetic.s3dis_writer", "write_s3dis_dataset"),
    "matterport3d": ("tttkd.synthetic.matterport_writer", "write_matterport_dataset"),
}


def _per_dataset(values: dict[str, Any], fmt: Callable[[Any], str] = str) -> str:
    return ", ".join(f"{name} {fmt(values[name])}" for name in sorted(WRITERS))


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WxH (width x height), e.g. 64x48") from None
    if w < 8 or h < 6:
        raise click.BadParameter("images must be at least 8x6 pixels")
    return w, h


def writer(dataset: str) -> Callable[..., Any]:
    """The writer function of ``dataset`` (imported now; a clear error when it is missing)."""
    module, name = WRITERS[dataset]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise click.ClickException(
            f"the {dataset} writer ({module}.{name}) is not available in this install ({e})"
        ) from e


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


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("dataset", type=click.Choice(sorted(WRITERS)))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="root to write")
@click.option(
    "--num-scenes",
    default=NUM_SCENES,
    type=click.IntRange(1),
    help="scenes to write: ScanNet scans, S3DIS rooms (spread over areas 1 and 5), "
    "Matterport3D regions (two to a house)",
)
@deprecated_alias("--scenes", "--num-scenes", "old_scenes", type=click.IntRange(1))
@click.option("--seed", default=0, type=int, help="random seed of rooms, colours and cameras")
@click.option(
    "--domain",
    default="source",
    type=click.Choice(["source", "target"]),
    help="point-colour domain (target: hue +60 deg, saturation x0.7, noise)",
)
@click.option(
    "--views",
    default=None,
    type=click.IntRange(1),
    show_default=_per_dataset(VIEWS),
    help="posed frames per scene",
)
@click.option(
    "--image-size",
    default=None,
    callback=_size,
    metavar="WxH",
    show_default=_per_dataset(IMAGE_SIZE, lambda wh: f"{wh[0]}x{wh[1]}"),
    help="colour image size, width x height pixels",
)
@click.option(
    "--frames",
    "frames",
    multiple=True,
    type=click.Choice(["sens", "25k", "exported"]),
    show_default="all three",
    help="ScanNet frame forms to write (repeat)",
)
def cli(
    dataset: str,
    out: Path,
    num_scenes: int,
    old_scenes: int | None,
    seed: int,
    domain: str,
    views: int | None,
    image_size: tuple[int, int] | None,
    frames: tuple[str, ...],
) -> None:
    """Write --num-scenes synthetic rooms of DATASET (scannet, s3dis, matterport3d) under OUT."""
    from tttkd.synthetic.domain import SOURCE, TARGET

    ctx = click.get_current_context()
    if old_scenes is not None:
        if ctx.get_parameter_source("num_scenes") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("give --num-scenes only (--scenes N is its deprecated name)")
        num_scenes = old_scenes
    extra: dict[str, Any] = {}
    if frames:
        if dataset != "scannet":
            raise click.UsageError("--frames applies to scannet only")
        extra["frames"] = frames
    fn = writer(dataset)
    out.mkdir(parents=True, exist_ok=True)
    written = fn(
        out,
        num_scenes,
        views=VIEWS[dataset] if views is None else views,
        image_size=IMAGE_SIZE[dataset] if image_size is None else image_size,
        seed=seed,
        domain=TARGET if domain == "target" else SOURCE,
        **extra,
    )
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
