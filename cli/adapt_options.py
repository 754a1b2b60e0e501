"""The options ``tttkd-adapt`` and its ``sweep`` share, one per :class:`AdaptConfig` field."""

from __future__ import annotations

from collections.abc import Callable

import click

from tttkd.adapt.config import BN_MODES, ROTATION_PROTOCOLS, AdaptConfig
from tttkd.cli.guard import check_backend, check_device

DEFAULT = AdaptConfig()


def csv_list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def adapt_options(f: Callable) -> Callable:
    d = DEFAULT
    opts = [
        click.option("--cache", "cache", help="the teacher cache (tttkd-prep --out), path or URL"),
        click.option(
            "--checkpoint",
            "checkpoint",
            type=click.Path(dir_okay=False),
            help="a checkpoint written by tttkd-train (.safetensors)",
        ),
        click.option("--out", "out", type=click.Path(file_okay=False), help="output folder"),
        click.option(
            "--steps",
            type=click.IntRange(min=0),
            default=d.steps,
            show_default=True,
            help="offline TTT-KD: SGD steps per scene (and rotation)",
        ),
        click.option("--lr", type=float, default=d.lr, show_default=True, help="TTT-KD SGD lr"),
        click.option(
            "--momentum",
            type=click.FloatRange(0, 1, max_open=True),
            default=d.momentum,
            show_default=True,
            help="TTT-KD SGD momentum (paper B.5 compares 0.9)",
        ),
        click.option(
            "--stride",
            type=click.IntRange(min=1),
            default=d.stride,
            show_default=True,
            help="ttt-kd-online: update on every s-th scene of the stream (1st, 1+s-th, ...)",
        ),
        click.option(
            "--online-steps",
            type=click.IntRange(min=1),
            default=d.online_steps,
            show_default=True,
            help="ttt-kd-online: steps per updated scene",
        ),
        click.option(
            "--rotations",
            type=click.IntRange(min=1),
            default=d.rotations,
            show_default=True,
            help="R rotations about +Z (2 pi r / R): TTT-KD on each, logits summed",
        ),
        click.option(
            "--rotation-protocol",
            type=click.Choice(ROTATION_PROTOCOLS),
            default=d.rotation_protocol,
            show_default=True,
            help="offline TTT-KD over --rotations: paper = Algorithm 1 (reset once per scene; "
            "steps on each rotated copy, weights carried, predict the UNROTATED scene); "
            "ensemble = reset per rotation, steps and prediction on the rotated view",
        ),
        click.option(
            "--bn-mode",
            type=click.Choice(BN_MODES),
            default=d.bn_mode,
            show_default=True,
            help="BatchNorm during TTT: eval = training statistics throughout; train = batch "
            "statistics in steps (running ones updated), running ones for prediction; scene = "
            "the scene's batch statistics in steps and prediction",
        ),
        click.option(
            "--max-images",
            type=click.IntRange(min=1),
            default=None,
            help="images per scene for TTT (seeded subset per scene) [default: all cached]",
        ),
        click.option(
            "--kd-loss",
            type=click.Choice(["cosine", "l2"]),
            default=d.kd_loss,
            show_default=True,
            help="distillation loss form (use the training one)",
        ),
        click.option(
            "--divergence-ratio",
            type=float,
            default=d.divergence_ratio,
            show_default=True,
            help="safety: a scene's TTT stops when its KD loss is non-finite or stays above "
            "this x its first loss for --divergence-patience steps, or ends above it; the "
            "scene then falls back to the unadapted prediction",
        ),
        click.option(
            "--divergence-patience",
            type=click.IntRange(min=1),
            default=d.divergence_patience,
            show_default=True,
            help="safety: consecutive steps above the bound before TTT stops (lr 1.0 spikes)",
        ),
        click.option(
            "--bn-passes",
            type=click.IntRange(min=1),
            default=d.bn_passes,
            show_default=True,
            help="bn (DUA): augmented passes per scene",
        ),
        click.option(
            "--bn-momentum",
            type=float,
            default=d.bn_momentum,
            show_default=True,
            help="bn (DUA): first momentum (then x bn-decay per pass, floor bn-min-momentum)",
        ),
        click.option(
            "--bn-decay",
            type=float,
            default=d.bn_decay,
            show_default=True,
            help="bn (DUA): momentum decay per pass",
        ),
        click.option(
            "--bn-min-momentum",
            type=float,
            default=d.bn_min_momentum,
            show_default=True,
            help="bn (DUA): momentum floor",
        ),
        click.option(
            "--bn-augment/--no-bn-augment",
            default=d.bn_augment,
            show_default=True,
            help="bn (DUA): random rotation + mirror per pass",
        ),
        click.option(
            "--bn-online/--bn-per-scene",
            default=d.bn_online,
            show_default=True,
            help="bn (DUA): keep statistics over the stream with the momentum decayed over "
            "it (DUA's form), or reset them and restart the schedule per scene",
        ),
        click.option(
            "--tent-lr",
            type=float,
            default=d.tent_lr,
            show_default=True,
            help="tent: Adam learning rate on BN affine parameters",
        ),
        click.option(
            "--tent-steps",
            type=click.IntRange(min=1),
            default=d.tent_steps,
            show_default=True,
            help="tent: steps per scene",
        ),
        click.option(
            "--tent-episodic/--tent-online",
            default=d.tent_episodic,
            show_default=True,
            help="tent: reset per scene, or carry (original)",
        ),
        click.option(
            "--tent-predict",
            type=click.Choice(["adapt", "after"]),
            default=d.tent_predict,
            show_default=True,
            help="tent: adapt = the adapting forward's logits, weights before the step "
            "(original); after = predict again with the updated weights",
        ),
        click.option(
            "--ac-lr",
            type=click.FloatRange(min=0),
            default=d.ac_lr,
            show_default=True,
            help="adacontrast: SGD lr (momentum 0.9, nesterov, weight decay 1e-4)",
        ),
        click.option(
            "--ac-steps",
            type=click.IntRange(min=1),
            default=d.ac_steps,
            show_default=True,
            help="adacontrast: steps per scene",
        ),
        click.option(
            "--ac-ema",
            type=click.FloatRange(0, 1),
            default=d.ac_ema,
            show_default=True,
            help="adacontrast: teacher EMA momentum",
        ),
        click.option(
            "--ac-neighbors",
            type=click.IntRange(min=1),
            default=d.ac_neighbors,
            show_default=True,
            help="adacontrast: k of the soft k-NN pseudo-label vote",
        ),
        click.option(
            "--ac-bank",
            type=click.IntRange(min=2),
            default=d.ac_bank,
            show_default=True,
            help="adacontrast: feature bank and key queue length (voxels)",
        ),
        click.option(
            "--ac-samples",
            type=click.IntRange(min=2),
            default=d.ac_samples,
            show_default=True,
            help="adacontrast: voxels per scene in the losses and the bank",
        ),
        click.option(
            "--split",
            default=None,
            help="adapt on this cache split (default: every scene, or --scenes)",
        ),
        click.option("--scenes", default=None, help="comma-separated scene ids, in stream order"),
        click.option(
            "--seed",
            type=int,
            default=d.seed,
            show_default=True,
            help="seeds image subsets and augmentations (per scene: order-free)",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            callback=check_device,
            help="auto (cuda when available), cpu, cuda, cuda:1, ...",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="torch CPU threads [default: torch's]; 1 = bitwise repeatable on CPU",
        ),
        click.option(
            "--backend",
            default=None,
            callback=check_backend,
            help="sparse backend auto|torch|table|spconv|minkowski (auto: the fastest verified "
            "for the device) [default: the checkpoint's]",
        ),
        click.option(
            "--cuda-graphs",
            type=click.Choice(["auto", "on", "off"]),
            default=d.cuda_graphs,
            show_default=True,
            help="ttt-kd: capture one TTT step as a CUDA graph and replay it for the other "
            "steps of a view (auto: on CUDA when safe; same weights as the eager loop)",
        ),
        click.option("--progress/--no-progress", default=True, help="progress bar"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f
