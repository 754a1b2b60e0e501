"""``tttkd-train``: joint training (segmentation + distillation) from a teacher cache.

Options map onto :class:`tttkd.model.config.TrainConfig` fields: ``--config`` YAML deltas
(in order), then the named options below, then ``--set key=value`` (last wins). With
``--resume`` the saved ``config.yaml`` of ``--out`` is the base, so a plain
``tttkd-train --cache C --out RUN --resume`` continues the same recipe.

Many GPUs: ``torchrun --nproc_per_node N -m tttkd.cli.train --cache ... --out ...``
(multi-node: add torchrun's ``--nnodes``/``--rdzv-endpoint``; ``--batch-size`` is per process).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tttkd.cli.guard import check_arch, check_backend, check_device, run_command

__all__ = ["main"]


def _named_overrides(**opts) -> list[str]:
    keys = {
        "epochs": "epochs",
        "batch_size": "data.batch_size",
        "train_split": "data.train_split",
        "val_split": "data.val_split",
        "val_fraction": "data.val_fraction",
        "voxel_size": "data.voxel_size",
        "max_images": "data.max_images",
        "arch": "model.arch",
        "backend": "runtime.backend",
        "device": "runtime.device",
        "num_workers": "runtime.num_workers",
        "seed": "seed",
        "lr": "optim.lr",
        "ssl": "loss.ssl",
        "ssl_weight": "loss.ssl_weight",
        "mae_mask_ratio": "loss.mae_mask_ratio",
        "mae_patch_size": "loss.mae_patch_size",
    }
    out = [f"{keys[k]}={json.dumps(v)}" for k, v in opts.items() if v is not None and k in keys]
    if opts.get("no_kd"):
        out.append("loss.kd=false")
    if opts.get("full_res_val"):
        out.append("data.val_full_resolution=true")
    if opts.get("no_val"):
        out.append("data.val_split=null")
    if opts.get("no_progress"):
        out.append("runtime.progress=false")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--cache", "cache_url", required=True, help="teacher cache (tttkd-prep --out)")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="run folder")
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="YAML delta over the defaults (repeatable, applied in order)",
)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="e.g. optim.lr=0.01")
@click.option("--no-kd", is_flag=True, help="Source-Only: segmentation loss only, same recipe")
@click.option(
    "--ssl",
    type=click.Choice(["none", "mae"]),
    help="joint self-supervised task: mae = masked-scene colour reconstruction (ttt-mae)",
)
@click.option("--ssl-weight", type=float, help="weight of the SSL loss (default 1, as KD)")
@click.option("--mae-mask-ratio", type=float, help="fraction of patches masked (MSC: 0.4)")
@click.option("--mae-patch-size", type=float, help="mask patch side in metres (MSC: 0.1)")
@click.option("--resume", is_flag=True, help="continue the run in --out exactly")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="scenes per step and process")
@click.option("--train-split")
@click.option(
    "--val-fraction",
    type=float,
    help="validate on this seeded share of the TRAINING scenes, held out from training "
    "(recorded in RUN/selection.json and best.safetensors); default: no validation",
)
@click.option(
    "--val-split", help="validate on this split (never the split you report: best is chosen on it)"
)
@click.option("--no-val", is_flag=True, help="no validation (best = last), the default")
@click.option("--full-res-val", is_flag=True, help="also score every original point")
@click.option("--voxel-size", type=float, help="default: the cache's")
@click.option("--max-images", type=int, help="images per scene per step (0 = all)")
@click.option(
    "--arch", callback=check_arch, help="minkunet34c | minkunet18a | minkunet14a | minkunet_test"
)
@click.option("--backend", callback=check_backend, help="auto | torch | spconv | minkowski")
@click.option("--device", callback=check_device, help="auto | cpu | cuda | cuda:N")
@click.option("--num-workers", type=int)
@click.option("--seed", type=int)
@click.option("--lr", type=float, help="maximum learning rate")
@click.option("--stop-after", type=int, help="end this call after N epochs (resume later)")
@click.option("--no-progress", is_flag=True)
@click.option("--print-config", is_flag=True, help="print the resolved config and exit")
def cli(
    cache_url: str,
    out_dir: str,
    config_files: tuple[str, ...],
    sets: tuple[str, ...],
    resume: bool,
    stop_after: int | None,
    print_config: bool,
    **named,
) -> None:
    """Train the 3D network jointly on L_Y + L_2D from a teacher cache."""
    import yaml

    from tttkd.model.config import ConfigError, config_to_dict, load_config
    from tttkd.model.train import CONFIG_FILE, train
    from tttkd.pipeline.errors import TttkdError

    base = None
    saved = Path(out_dir) / CONFIG_FILE
    if resume and saved.is_file():
        base = yaml.safe_load(saved.read_text())
    try:
        cfg = load_config(config_files, [*_named_overrides(**named), *sets], base=base)
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
