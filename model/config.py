"""The training recipe as one typed dataclass tree: defaults, YAML deltas, ``--set`` overrides.

Why this shape (STYLE.md 4): the defaults and help texts live in the dataclass fields
(supplementary J.1 / G.1 where the paper gives a value, "our choice" where it is silent), and
``tttkd-train``'s options are generated from them; a YAML (or JSON/TOML) file is a small
nested delta (``optim: {lr: 0.01}``); ``--set optim.lr=0.01`` overrides one field, converted
to the field's type. Unknown keys and badly typed values are errors naming the key, never
silently ignored. The resolved tree is written to the run folder as ``config.yaml`` and into
every checkpoint.

``runtime`` holds the settings that do not change what is learnt (device, workers, logging,
sparse backend): a resumed run may change them; any other difference is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tttkd.settings import (
    ConfigError,
    apply_overrides,
    build,
    merge_delta,
    read_config_file,
    setting,
    to_plain,
)

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "TrainConfig",
    "apply_overrides",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "merge_delta",
    "save_config",
]


@dataclass
class ModelConfig:
    """``psi_3D`` architecture and the two heads."""

    arch: str = setting(
        "minkunet34c",
        choices="arch",
        help="3D network: minkunet34c is the paper's Mink; 18a/14a/_test are smaller",
    )
    stem_kernel: int | None = setting(
        None, min=1, help="stem convolution kernel [default: the architecture's own, 5 for 34C]"
    )
    bn_momentum: float = setting(0.1, help="BatchNorm momentum of psi_3D")
    kd_hidden: int = setting(256, min=1, help="rho_2D hidden width (our choice)")
    kd_norm: Literal["layer", "batch", "none"] = setting("layer", help="rho_2D normalisation")
    sync_bn: bool = setting(False, help="SyncBatchNorm under DDP (CUDA only)")


@dataclass
class OptimConfig:
    """AdamW + OneCycleLR, supplementary J.1."""

    lr: float = setting(0.005, help="maximum learning rate of the one-cycle schedule")
    weight_decay: float = setting(1e-4, help="AdamW weight decay")
    betas: tuple[float, float] = setting(
        (0.9, 0.999), help="AdamW betas (our choice, torch's); betas[0] unused with cycle-momentum"
    )
    div_factor: float = setting(10.0, help="OneCycleLR: initial lr = lr / div-factor")
    final_div_factor: float = setting(
        1000.0, help="OneCycleLR: final lr = initial lr / final-div-factor"
    )
    pct_start: float = setting(0.3, help="OneCycleLR: share of the run spent warming up (ours)")
    anneal_strategy: Literal["cos", "linear"] = setting("cos", help="OneCycleLR: annealing")
    # OneCycleLR also cycles AdamW's beta1 (max_momentum -> base_momentum -> max_momentum,
    # opposite to the lr) when True, and betas[0] is then never used. Our choice: torch's default
    # (the paper does not say).
    cycle_momentum: bool = setting(
        True, help="OneCycleLR: cycle AdamW's beta1 opposite to the lr (else betas[0] throughout)"
    )
    base_momentum: float = setting(0.85, help="beta1 at the lr peak (with cycle-momentum)")
    max_momentum: float = setting(0.95, help="beta1 at the start and end (with cycle-momentum)")
    grad_clip: float = setting(0.0, help="maximum gradient norm; 0 = no clipping")


@dataclass
class LossConfig:
    """``L = L_Y + kd_weight * L_2D`` (``+ ssl_weight * L_MAE`` with ``ssl="mae"``);
    ``kd=False`` is the Source-Only model, same recipe."""

    label_smoothing: float = setting(0.2, help="label smoothing of the segmentation loss L_Y")
    kd: bool = setting(
        True, help="distil the teacher (L_2D); --no-kd = Source-Only: L_Y only, same recipe"
    )
    kd_weight: float = setting(1.0, help="weight of the distillation loss L_2D")
    kd_kind: Literal["cosine", "l2"] = setting("cosine", help="distillation loss form")
    ssl: Literal["none", "mae"] = setting(
        "none",
        help="joint self-supervised task: mae = masked-scene colour reconstruction (ttt-mae)",
    )
    ssl_weight: float = setting(1.0, help="weight of the SSL loss (as kd-weight)")
    mae_mask_ratio: float = setting(0.4, help="fraction of patches masked (MSC's mask_rate)")
    mae_patch_size: float = setting(0.1, help="mask patch side in metres (MSC's mask_grid_size)")


@dataclass
class AugmentConfig:
    """Supplementary G.1; magnitudes are our choice (the paper lists the kinds only)."""

    enabled: bool = setting(True, option="--augment/--no-augment", help="training augmentations")
    mirror_p: float = setting(0.5, help="mirror probability per axis, X and Y")
    rotation_deg: float = setting(180.0, help="rotation about +Z, uniform in [-r, r] degrees")
    scale: tuple[float, float] = setting((0.9, 1.1), help="uniform scale range MIN,MAX")
    elastic_p: float = setting(0.95, help="elastic distortion probability")
    elastic_granularity: tuple[float, ...] = setting(
        (0.2, 0.8), help="elastic distortion granularity in metres, one entry per level"
    )
    elastic_magnitude: tuple[float, ...] = setting(
        (0.4, 1.6), help="elastic distortion magnitude, one entry per level"
    )
    jitter_sigma: float = setting(0.01, help="point jitter sigma in metres")
    jitter_clip: float = setting(0.05, help="point jitter clip in metres")
    crop_p: float = setting(0.5, help="random crop probability")
    crop_min_fraction: float = setting(0.6, help="share of the scene's X/Y extent a crop keeps")
    max_points: int = setting(
        0, help="> 0: keep at most this many points (nearest a random centre); 0 = no cap"
    )
    translation: float = setting(0.2, help="translation in metres, uniform in [-t, t] per axis")
    color_p: float = setting(0.95, help="colour augmentation probability")
    brightness: float = setting(0.1, help="additive brightness, fraction of 255")
    contrast: tuple[float, float] = setting((0.8, 1.2), help="contrast factor range MIN,MAX")
    rgb_shift: float = setting(0.05, help="per-channel colour shift, fraction of 255")
    mix3d_p: float = setting(0.5, help="Mix3D: mix two scenes with this probability")


@dataclass
class DataConfig:
    """What is read from the cache and how it is batched."""

    voxel_size: float | None = setting(
        None, min=0, min_open=True, help="voxel side in metres [default: the cache's, 4 cm]"
    )
    train_split: str = setting("train", help="the cache split trained on")
    # best.safetensors is chosen on validation; it must never be the split that is reported
    # (ScanNet val, S3DIS Area 5): hold out val_fraction of the train_split's scenes (seeded
    # by seed, model/selection.py), or name another split. Neither: best = last.
    val_split: str | None = setting(
        None, help="validate on this split (never the split you report: best is chosen on it)"
    )
    val_fraction: float = setting(
        0.0,
        help="validate on this seeded share of the TRAINING scenes, held out from training "
        "(recorded in RUN/selection.json and best.safetensors); 0 = no validation",
    )
    batch_size: int = setting(8, help="scenes per step and process (our choice)")
    max_images: int = setting(
        8, min=0, help="images read per scene per step (random subset); 0 = all"
    )
    val_full_resolution: bool = setting(
        False, option="--full-res-val", help="also score every original point at validation"
    )


@dataclass
class RuntimeConfig:
    """How the run executes; may differ between a run and its resumption."""

    device: str = setting("auto", choices="device", help="auto = cuda when available, else cpu")
    backend: str = setting(
        "auto",
        choices="backend",
        help="sparse backend (auto: the fastest verified for the device, model/sparse/select.py)",
    )
    amp: bool = setting(True, help="bf16 autocast, on CUDA only")
    num_workers: int = setting(4, help="data-loading worker processes")
    scene_cache_mb: int = setting(
        2048,
        min=0,
        help="MiB of decoded scenes each training process keeps in memory, so a scene is read "
        "from the cache once per run, not every epoch (same results); used with "
        "runtime.num_workers=0 (workers restart every epoch); 0 = off",
    )
    threads: int | None = setting(
        None,
        help="torch CPU threads in the training process [default: torch's; DDP on CPU: cores / "
        "local ranks]; 1 avoids oversubscription when other work shares the cores",
    )
    log_every: int = setting(10, help="steps between JSONL/TensorBoard step records")
    val_every: int = setting(1, help="epochs between validations")
    keep_every: int = setting(
        0, help="also keep epoch_NNNN checkpoints every k epochs; 0 = last + best only"
    )
    progress: bool = setting(True, help="progress bars of training and validation")
    tensorboard: bool = setting(True, help="TensorBoard logs (when tensorboard is installed)")


@dataclass
class TrainConfig:
    """The whole recipe; the sections are nested dataclasses (``optim.lr``)."""

    epochs: int = setting(100, help="training epochs (our choice; the paper does not print it)")
    seed: int = setting(0, help="seeds the model, the augmentations and the validation hold-out")
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        validate(self)


# ---- conversion and layering: tttkd/settings.py, shared with prep and adapt ------------------
def config_from_dict(data: dict) -> TrainConfig:
    """A full or partial nested dict (missing keys keep their defaults) -> TrainConfig."""
    return build(TrainConfig, data or {})


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain nested dict (tuples as lists): what YAML, JSON and checkpoints store."""
    return to_plain(cfg)


def load_config(
    files: list[str | Path] | tuple = (),
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
    named: dict | None = None,
) -> TrainConfig:
    """Defaults (or ``base``) <- each config file (YAML/JSON/TOML) in order <- ``named``
    (the command's options, nested) <- ``--set`` overrides."""
    data = dict(base or {})
    for f in files:
        try:
            data = merge_delta(data, read_config_file(f))
            config_from_dict(data)  # name the file whose key is wrong
        except ConfigError as e:
            raise ConfigError(f"{f}: {e}") from e
    data = merge_delta(data, named or {})
    return config_from_dict(apply_overrides(data, overrides))


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_diff(a: TrainConfig, b: TrainConfig, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key: a -> b`` for every leaf that differs (sections in ``ignore`` skipped)."""

    def leaves(d: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(leaves(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    la, lb = leaves(config_to_dict(a)), leaves(config_to_dict(b))
    return [
        f"{k}: {la[k]!r} -> {lb[k]!r}"
        for k in la
        if la[k] != lb[k] and not any(k.startswith(f"{s}.") for s in ignore)
    ]


def validate(cfg: TrainConfig) -> None:
    """Value ranges the types cannot say; raises ConfigError naming the key."""
    checks = [
        (cfg.epochs >= 1, "epochs", "must be >= 1"),
        (cfg.optim.lr > 0, "optim.lr", "must be > 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0"),
        (0 < cfg.optim.pct_start < 1, "optim.pct_start", "must lie in (0, 1)"),
        (
            0 <= cfg.optim.base_momentum <= cfg.optim.max_momentum < 1,
            "optim.base_momentum",
            "must lie in [0, optim.max_momentum] and optim.max_momentum below 1",
        ),
        (cfg.optim.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = off)"),
        (0 <= cfg.loss.label_smoothing < 1, "loss.label_smoothing", "must lie in [0, 1)"),
        (cfg.loss.kd_weight >= 0, "loss.kd_weight", "must be >= 0"),
        (cfg.loss.ssl_weight >= 0, "loss.ssl_weight", "must be >= 0"),
        (0 < cfg.loss.mae_mask_ratio < 1, "loss.mae_mask_ratio", "must lie in (0, 1)"),
        (cfg.loss.mae_patch_size > 0, "loss.mae_patch_size", "must be > 0 (metres)"),
        (cfg.data.voxel_size is None or cfg.data.voxel_size > 0, "data.voxel_size", "> 0"),
        (cfg.data.batch_size >= 1, "data.batch_size", "must be >= 1"),
        (cfg.data.max_images >= 0, "data.max_images", "must be >= 0 (0 = all)"),
        (0 <= cfg.data.val_fraction < 1, "data.val_fraction", "must lie in [0, 1)"),
        (
            cfg.data.val_fraction == 0 or cfg.data.val_split is None,
            "data.val_fraction",
            "validates on held-out training scenes: set data.val_split=null with it",
        ),
        (cfg.augment.scale[0] <= cfg.augment.scale[1], "augment.scale", "needs min <= max"),
        (
            len(cfg.augment.elastic_granularity) == len(cfg.augment.elastic_magnitude),
            "augment.elastic_magnitude",
            "needs one entry per elastic_granularity entry",
        ),
        (0 < cfg.augment.crop_min_fraction <= 1, "augment.crop_min_fraction", "in (0, 1]"),
        (cfg.augment.max_points >= 0, "augment.max_points", "must be >= 0 (0 = no cap)"),
        (cfg.runtime.num_workers >= 0, "runtime.num_workers", "must be >= 0"),
        (cfg.runtime.scene_cache_mb >= 0, "runtime.scene_cache_mb", "must be >= 0 (0 = off)"),
        (cfg.runtime.threads is None or cfg.runtime.threads >= 1, "runtime.threads", ">= 1"),
        (cfg.runtime.log_every >= 1, "runtime.log_every", "must be >= 1"),
        (cfg.runtime.val_every >= 1, "runtime.val_every", "must be >= 1"),
        (cfg.runtime.keep_every >= 0, "runtime.keep_every", "must be >= 0"),
    ]
    for name in ("mirror_p", "elastic_p", "crop_p", "color_p", "mix3d_p"):
        p = getattr(cfg.augment, name)
        checks.append((0 <= p <= 1, f"augment.{name}", "is a probability in [0, 1]"))
    for ok, key, what in checks:
        if not ok:
            raise ConfigError(f"{key} {what}")
