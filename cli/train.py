"""``tttkd-train``: joint training (segmentation + distillation) from a teacher cache.

The options are generated from :class:`tttkd.model.config.TrainConfig`'s fields (one per
leaf: ``--batch-size`` is ``data.batch_size``): ``--config`` files (in order), then the named
options, then ``--set key=value`` (last wins). With
``--resume`` the saved ``config.yaml`` of ``--out`` is the base, so a plain
``tttkd-train --cache C --out RUN --resume`` continues the same recipe.

Many GPUs: ``torchrun --nproc_per_node N -m tttkd.cli.train --cache ... --out ...``
(multi-node: add torchrun's ``--nnodes``/``--rdzv-endpoint``; ``--batch-size`` is per process).
"""

from __future__ import annotations

from pathlib import Path

import click

from tttkd.cli.guard import run_command
from tttkd.cli.options import FieldOptions, config_file_options, leaf_paths
from tttkd.model.config import TrainConfig

__all__ = ["FIELDS", "main"]

# every TrainConfig leaf is an option (--batch-size is data.batch_size), defaults shown
FIELDS = FieldOptions(TrainConfig, leaf_paths(TrainConfig))
# options that set a field without being its name: option parameter -> field path
SHORTHANDS = {"no_val": "data.val_split"}
# the options that say where things are and what to do, not what is learnt
RUN_OPTIONS = ("cache_url", "out_dir", "config_files", "sets", "resume", "stop_after")
RUN_OPTIONS += ("print_config",)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--cache", "cache_url", required=True, help="teacher cache (tttkd-prep --cache)")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="run folder")
@config_file_options
@click.option("--resume", is_flag=True, help="continue the run in --out exactly")
@click.option("--stop-after", type=int, help="end this call after N epochs (resume later)")
@click.option("--print-config", is_flag=True, help="print the resolved config and exit")
@click.option("--no-val", is_flag=True, help="no validation (best = last): val-split null")
@FIELDS
def cli(
    cache_url: str,
    out_dir: str,
    config_files: tuple[str, ...],
    sets: tuple[str, ...],
    resume: bool,
    stop_after: int | None,
    print_config: bool,
    no_val: bool,
    **named,
) -> None:
    """Train the 3D network jointly on L_Y + L_2D from a teacher cache.

    Writes RUN/config.yaml (the resolved config; `--config RUN/config.yaml` repeats the run),
    checkpoints and logs into --out.
    """
    import yaml

    from tttkd.core import TttkdError
    from tttkd.model.config import ConfigError, config_to_dict, load_config
    from tttkd.model.train import CONFIG_FILE, train
    from tttkd.settings import merge_delta

    base = None
    saved = Path(out_dir) / CONFIG_FILE
    if resume and saved.is_file():
        base = yaml.safe_load(saved.read_text())
    try:
        delta = FIELDS.take(named)
        if no_val:
            delta = merge_delta(delta, {"data": {"val_split": None}})
        cfg = load_config(config_files, sets, base=base, named=delta)
        if print_config:
            click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), nl=False)
            return
        result = train(cfg, cache_url, out_dir, resume=resume, stop_after_epochs=stop_after)
    except (ConfigError, TttkdError) as e:
        raise click.ClickException(str(e)) from e
    best = result.best
    if best.get("epoch") is not None and result.history:
        click.echo(f"best: epoch {best['epoch']} (val mIoU {best.get('miou')}); run in {out_dir}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tttkd-train``); ``--debug`` shows tracebacks."""
    run_command(cli, argv, "tttkd-train")


if __name__ == "__main__":  # torchrun -m tttkd.cli.train
    main()
