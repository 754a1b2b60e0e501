"""What the demo hands back: the methods x mIoU rows, ``summary.json`` and the printed table.

Apart from :mod:`tttkd.demo` (which runs the stages) so that the numbers' presentation can be
read and changed without the orchestration around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from tttkd.demo import DemoSettings

__all__ = ["PAPER_LR", "LrChoice", "TargetRuns", "print_results", "summary_of", "table_rows"]

PAPER_LR = 1.0


@dataclass(frozen=True)
class LrChoice:
    """The TTT lrs used on the target rooms and the development-room mIoU that chose them
    (empty when ``--ttt-lr`` gave them)."""

    ttt_kd: float
    ttt_kd_dev: dict[float, float]
    ttt_mae: float
    ttt_mae_dev: dict[float, float]


@dataclass(frozen=True)
class TargetRuns:
    """The adaptation results (``AdaptResult.to_dict()``) of stage 5."""

    joint: dict
    source_only: dict
    mae: dict
    clean: dict
    paper_lr: dict  # TTT-KD at the paper's lr: ``joint`` itself when that lr was chosen


def table_rows(
    src_only: dict,
    joint: dict,
    mae: dict,
    lr: float = PAPER_LR,
    paper_lr: dict | None = None,
    mae_lr: float = PAPER_LR,
) -> list[tuple[str, float]]:
    rows = [("source-only (no KD)", src_only["methods"]["source"]["overall"]["miou"])]
    names = {
        "source": "joint train",
        "bn": "BN (DUA)",
        "tent": "TENT",
        "adacontrast": "AdaContrast",
        "ttt-kd-online": "TTT-KD-O",
        "ttt-kd": f"TTT-KD (lr {lr:g})",
    }
    for key, label in names.items():
        rows.append((label, joint["methods"][key]["overall"]["miou"]))
    rows.append(("L_Y + L_MAE model", mae["methods"]["source"]["overall"]["miou"]))
    rows.append((f"TTT-MAE (lr {mae_lr:g})", mae["methods"]["ttt-mae"]["overall"]["miou"]))
    if paper_lr is not None and lr != PAPER_LR:
        rows.append(
            (
                f"TTT-KD (lr {PAPER_LR:g}, the paper's)",
                paper_lr["methods"]["ttt-kd"]["overall"]["miou"],
            )
        )
    return rows


def rows_of(runs: TargetRuns, lrs: LrChoice) -> list[tuple[str, float]]:
    return table_rows(
        runs.source_only, runs.joint, runs.mae, lrs.ttt_kd, runs.paper_lr, lrs.ttt_mae
    )


def format_rows(rows: list[tuple[str, float]]) -> str:
    base = rows[1][1]
    lines = ["| method | mIoU | vs joint train |", "|---|---|---|"]
    for name, miou in rows:
        lines.append(f"| {name} | {100 * miou:.1f} | {100 * (miou - base):+.1f} |")
    return "\n".join(lines)


def summary_of(
    s: DemoSettings,
    lrs: LrChoice,
    runs: TargetRuns,
    sweep_rows: list,
    pictures: dict[str, Path | None],
    seconds: float,
) -> dict[str, Any]:
    """The content of ``summary.json``."""
    return {
        "settings": s.__dict__
        | {
            "sweep_steps": list(s.sweep_steps),
            "lr_candidates": list(s.lr_candidates),
            "mae_lr_candidates": list(s.mae_lr_candidates),
        },
        "ttt_lr": {
            "chosen": lrs.ttt_kd,
            "chosen_on": "development rooms" if s.ttt_lr is None else "--ttt-lr (given)",
            "dev_rooms": s.dev_scenes,
            "dev_miou": {f"{k:g}": v for k, v in lrs.ttt_kd_dev.items()},
            "ttt_mae": {
                "chosen": lrs.ttt_mae,
                "dev_miou": {f"{k:g}": v for k, v in lrs.ttt_mae_dev.items()},
            },
        },
        "miou": {r[0]: r[1] for r in rows_of(runs, lrs)},
        "source_only_without_shift": no_shift_miou(runs),
        "steps_curve": [
            {"steps": p.value, "miou": p.miou} for p in sweep_rows if p.sweep == "steps"
        ],
        "seconds": round(seconds, 1),
        "pictures": {k: str(v) for k, v in pictures.items() if v is not None},
    }


def no_shift_miou(runs: TargetRuns) -> float:
    return runs.clean["methods"]["source"]["overall"]["miou"]


def _dev_line(dev_miou: dict[float, float]) -> str:
    return ", ".join(f"lr {k:g} -> {100 * v:.1f}" for k, v in dev_miou.items())


def print_results(
    out: Path, s: DemoSettings, lrs: LrChoice, runs: TargetRuns, summary: dict
) -> None:
    """The lr choices, the table, the no-shift reference and where the files are."""
    rows = rows_of(runs, lrs)
    no_shift = no_shift_miou(runs)
    chosen = (
        f"chosen on the {s.dev_scenes} development rooms: " + _dev_line(lrs.ttt_kd_dev)
        if lrs.ttt_kd_dev
        else "given with --ttt-lr"
    )
    mae_chosen = _dev_line(lrs.ttt_mae_dev) if lrs.ttt_mae_dev else "given with --ttt-lr"
    click.echo(f"\nTTT lr {lrs.ttt_kd:g} ({chosen}); TTT-MAE lr {lrs.ttt_mae:g} ({mae_chosen})")
    click.echo("the target rooms never chose a setting")
    click.secho("\nmIoU on the shifted target domain (ScanNet-format synthetic rooms)", bold=True)
    click.echo(format_rows(rows))
    click.echo(
        f"\nthe same target rooms WITHOUT the colour shift: source-only {100 * no_shift:.1f} mIoU "
        f"(the shift costs it {100 * (no_shift - rows[0][1]):.1f} points)"
    )
    click.echo("\nfull table: " + str(out / "adapt" / "joint" / "table.md"))
    for k, v in summary["pictures"].items():
        click.echo(f"{k}: {v}")
    click.echo(f"summary: {out / 'summary.json'}  (total {summary['seconds']:.0f} s)")
