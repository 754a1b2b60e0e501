"""``make demo`` / ``tttkd demo``: options only; the stages are :func:`tttkd.demo.run_demo`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from tttkd.demo import QUICK, DemoError, DemoSettings, run_demo

_D = DemoSettings()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="output folder (reused by a rerun; delete it to start again)",
)
@click.option("--quick", is_flag=True, help="the small CI-sized variant (a few minutes)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help=f"training epochs (default {_D.epochs}; quick {QUICK.epochs})",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help=f"TTT steps per scene (default {_D.steps}; quick {QUICK.steps})",
)
@click.option(
    "--ttt-lr",
    type=float,
    default=None,
    help="TTT SGD learning rate [default: chosen among "
    + " and ".join(f"{v:g}" for v in _D.lr_candidates)
    + " on the development rooms]",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def cli(
    out: Path,
    quick: bool,
    seed: int,
    epochs: int | None,
    steps: int | None,
    ttt_lr: float | None,
    progress: bool,
) -> None:
    """Run prep -> train -> adapt on the synthetic domain-shift benchmark and print the table."""
    s = replace(QUICK if quick else DemoSettings(), seed=seed)
    if epochs is not None:
        s = replace(s, epochs=epochs)
    if steps is not None:
        s = replace(s, steps=steps)
    if ttt_lr is not None:
        s = replace(s, ttt_lr=ttt_lr)
    try:
        run_demo(out, s, progress=progress)
    except DemoError as e:
        raise click.ClickException(str(e)) from None


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
