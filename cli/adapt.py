"""``tttkd-adapt``: test-time training and the baselines on a cache, scored; and ``sweep``.

Options are generated from :class:`tttkd.adapt.config.AdaptConfig`'s fields (plus the inputs,
outputs and ``--config``/``--set``); the resolved config is stored in ``results.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import click

from tttkd.adapt.config import AdaptConfig
from tttkd.cli.adapt_options import SHARED_FIELDS, adapt_options
from tttkd.cli.adapt_options import csv_list as _csv
from tttkd.cli.cluster_options import executor_from
from tttkd.cli.guard import run_command
from tttkd.cli.options import FieldOptions

MAIN_FIELDS = FieldOptions(AdaptConfig, ["methods", *SHARED_FIELDS, "save_predictions", "save_ply"])
SWEEP_FIELDS = FieldOptions(AdaptConfig, SHARED_FIELDS)
T = TypeVar("T")


def _config(fields: FieldOptions, kw: dict[str, Any], **named: Any) -> AdaptConfig:
    """Defaults <- ``--config`` files <- the options given <- ``--set`` (last wins)."""
    from tttkd.settings import layered

    delta = {**fields.take(kw), **named}
    return layered(AdaptConfig, kw.pop("config_files"), delta, kw.pop("sets"))


def _dev_scenes(value: str | None) -> tuple[str, ...] | int | None:
    """``--dev-scenes``: N (a seeded subset of that size) or scene ids."""
    if value is None:
        return None
    return int(value) if value.strip().isdigit() else _csv(value)


def _need(kw: dict[str, Any], *names: str) -> None:
    missing = [f"--{n}" for n in names if not kw.get(n)]
    if missing:
        raise click.UsageError(f"missing option(s) {', '.join(missing)}")


def _errors() -> tuple[type[Exception], ...]:
    from tttkd.core import TttkdError
    from tttkd.model.checkpoint import CheckpointError

    return (ValueError, CheckpointError, TttkdError, FileNotFoundError)


def _on_cluster(
    kw: dict[str, Any],
    make_config: Callable[[], AdaptConfig],
    work: Callable[[AdaptConfig, Any], T],
) -> T:
    """``work(cfg, executor)`` on the cluster of --workers / --scheduler (executor None: this
    process), closed afterwards; the library's errors, the config's included, become a
    one-line message (ClickException) instead of a traceback."""
    try:
        cfg = make_config()
        executor = executor_from(kw, cfg.device, click.echo)
        with executor or nullcontext():
            return work(cfg, executor)
    except _errors() as e:
        raise click.ClickException(str(e)) from e


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@adapt_options(MAIN_FIELDS)
@click.option("--no-plots", is_flag=True, help="skip the PNG plots")
@click.pass_context
def cli(ctx: click.Context, no_plots: bool, **kw: Any) -> None:
    """Test-time training (TTT-KD, offline and online) and baselines, scored per scene.

    \b
    tttkd-adapt --cache feats.zarr --checkpoint best.safetensors --out results/NAME \\
        --method source,ttt-kd,ttt-kd-online,bn,tent --split val
    tttkd-adapt sweep --over steps,images --cache ... --checkpoint ... --out sweeps/NAME

    Writes results.json (the resolved config, per-scene and overall mIoU / IoU per class,
    timings), results.csv, table.md and PNG plots into --out; `--config results.json`
    repeats the run. --workers N (local) or --scheduler ADDRESS adapt scenes in parallel
    with the same results; each finished scene is kept in --out/outcomes, so rerunning an
    interrupted command redoes only the rest.
    """
    if ctx.invoked_subcommand is not None:
        return
    _need(kw, "cache", "checkpoint", "out")
    from tttkd.adapt.report import format_table, write_report
    from tttkd.adapt.runner import run_adaptation

    result = _on_cluster(
        kw,
        lambda: _config(MAIN_FIELDS, kw),
        lambda cfg, executor: run_adaptation(
            cfg,
            kw["cache"],
            kw["checkpoint"],
            out=kw["out"],
            echo=click.echo,
            progress=kw["progress"],
            executor=executor,
            resume=True,
            overwrite=kw["overwrite"],
        ).to_dict(),
    )
    paths = write_report(result, kw["out"], plots=not no_plots)
    click.echo(format_table(result))
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@cli.command("sweep", context_settings={"max_content_width": 100})
@adapt_options(SWEEP_FIELDS)
@click.option(
    "--over",
    default="steps",
    show_default=True,
    help="comma-separated sweeps: steps, images, teacher, stride, momentum, lr",
)
@click.option(
    "--dev-scenes",
    default=None,
    help="tune on development scenes only: comma-separated ids, or N for a seeded N of the "
    "selected scenes; dev_scenes.json lists them and the scenes left to report on",
)
@click.option(
    "--method",
    "sweep_method",
    type=click.Choice(["ttt-kd", "ttt-mae", "adacontrast"]),
    default="ttt-kd",
    show_default=True,
    help="the method of the steps/momentum/teacher sweeps (adacontrast: steps per scene)",
)
@click.option(
    "--values",
    "value_specs",
    multiple=True,
    help="SWEEP=v1,v2,... values of one sweep (repeatable), e.g. steps=1,10,100",
)
@click.option(
    "--momentum-steps",
    default="10,50,100",
    show_default=True,
    help="momentum sweep: step counts per momentum value",
)
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    help="teacher sweep: NAME=CACHE::CHECKPOINT (repeatable, one per teacher)",
)
def sweep_cmd(
    over: str,
    sweep_method: str,
    value_specs: tuple[str, ...],
    momentum_steps: str,
    teachers: tuple[str, ...],
    dev_scenes: str | None,
    **kw: Any,
) -> None:
    """Figure-1 ablations: one run per value; figure1.png + sweep.csv in --out."""
    from tttkd.adapt.sweep import TeacherPair, run_sweeps

    sweeps = _csv(over)
    need = ["out"] + ([] if sweeps == ("teacher",) else ["cache", "checkpoint"])
    _need(kw, *need)
    values: dict[str, list[float]] = {}
    for spec in value_specs:
        name, sep, raw = spec.partition("=")
        if not sep:
            raise click.BadParameter(f"{spec!r}: expected SWEEP=v1,v2", param_hint="--values")
        values[name.strip()] = [float(v) for v in _csv(raw)]
    pairs = []
    for spec in teachers:
        name, sep, rest = spec.partition("=")
        cache, sep2, ckpt = rest.partition("::")
        if not (sep and sep2 and name and cache and ckpt):
            raise click.BadParameter(
                f"{spec!r}: expected NAME=CACHE::CHECKPOINT", param_hint="--teacher"
            )
        pairs.append(TeacherPair(name, cache, ckpt))
    rows = _on_cluster(
        kw,
        lambda: _config(SWEEP_FIELDS, kw, methods=[sweep_method]),
        lambda base, executor: run_sweeps(
            base,
            kw["cache"],
            kw["checkpoint"],
            kw["out"],
            sweeps,
            values=values,
            momentum_steps=[int(v) for v in _csv(momentum_steps)],
            teachers=pairs,
            echo=click.echo,
            progress=kw["progress"],
            method=sweep_method,
            dev_scenes=_dev_scenes(dev_scenes),
            executor=executor,
            resume=True,
            overwrite=kw["overwrite"],
        ),
    )
    out = Path(kw["out"])
    click.echo(f"{len(rows)} points; wrote {out / 'sweep.csv'} and {out / 'figure1.png'}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tttkd-adapt``); ``--debug`` shows tracebacks."""
    run_command(cli, argv, "tttkd-adapt")


if __name__ == "__main__":
    main()
