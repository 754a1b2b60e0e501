"""The training recipe as one typed dataclass tree: defaults, YAML deltas, ``--set`` overrides.

Why this shape (STYLE.md 4): the defaults live in the dataclasses (supplementary J.1 / G.1
where the paper gives a value, "our choice" where it is silent); a YAML file is a small
nested delta (``optim: {lr: 0.01}``); ``--set optim.lr=0.01`` overrides one field, converted
to the field's type. Unknown keys and badly typed values are errors naming the key, never
silently ignored. The resolved tree is written to the run folder as ``config.yaml`` and into
every checkpoint.

``runtime`` holds the settings that do not change what is learnt (device, workers, logging,
sparse backend): a resumed run may change them; any other difference is refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

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


class ConfigError(ValueError):
    """A config key or value that does not fit the schema (names the key and the fix)."""


@dataclass
class ModelConfig:
    """``psi_3D`` architecture and the two heads."""

    arch: str = "minkunet34c"  # the paper's "Mink"; minkunet18a/14a/_test are smaller
    stem_kernel: int | None = None  # None: the architecture's own (5 for 34C)
    bn_momentum: float = 0.1
    kd_hidden: int = 256  # rho_2D hidden width (our choice)
    kd_norm: Literal["layer", "batch", "none"] = "layer"
    sync_bn: bool = False  # SyncBatchNorm under DDP (CUDA only)


@dataclass
class OptimConfig:
    """AdamW + OneCycleLR, supplementary J.1."""

    lr: float = 0.005  # the maximum learning rate of the one-cycle schedule
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)  # our choice (torch default); see cycle_momentum
    div_factor: float = 10.0
    final_div_factor: float = 1000.0
    pct_start: float = 0.3  # our choice (torch default)
    anneal_strategy: Literal["cos", "linear"] = "cos"
    # OneCycleLR also cycles AdamW's beta1 (max_momentum -> base_momentum -> max_momentum,
    # opposite to the lr) when True, and betas[0] is then never used; False keeps betas[0]
    # for the whole run. Our choice: True, torch's default (the paper does not say).
    cycle_momentum: bool = True
    base_momentum: float = 0.85  # beta1 at the lr peak (with cycle_momentum)
    max_momentum: float = 0.95  # beta1 at the start and end (with cycle_momentum)
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping


@dataclass
class LossConfig:
    """``L = L_Y + kd_weight * L_2D`` (``+ ssl_weight * L_MAE`` with ``ssl="mae"``);
    ``kd=False`` is the Source-Only model, same recipe."""

    label_smoothing: float = 0.2
    kd: bool = True
    kd_weight: float = 1.0
    kd_kind: Literal["cosine", "l2"] = "cosine"
    # joint self-supervised task for the ttt-mae baseline (model/mae.py): + ssl_weight * L_MAE
    ssl: Literal["none", "mae"] = "none"
    ssl_weight: float = 1.0  # as kd_weight
    mae_mask_ratio: float = 0.4  # fraction of patches masked (MSC's mask_rate)
    mae_patch_size: float = 0.1  # metres, side of a mask patch (MSC's mask_grid_size)


@dataclass
class AugmentConfig:
    """Supplementary G.1; magnitudes are our choice (the paper lists the kinds only)."""

    enabled: bool = True
    mirror_p: float = 0.5  # per axis, X and Y
    rotation_deg: float = 180.0  # uniform in [-r, r] about +Z
    scale: tuple[float, float] = (0.9, 1.1)
    elastic_p: float = 0.95
    elastic_granularity: tuple[float, ...] = (0.2, 0.8)  # metres, one entry per level
    elastic_magnitude: tuple[float, ...] = (0.4, 1.6)
    jitter_sigma: float = 0.01  # metres
    jitter_clip: float = 0.05
    crop_p: float = 0.5
    crop_min_fraction: float = 0.6  # of the scene's X/Y extent kept by a crop
    max_points: int = 0  # > 0: keep at most this many points (nearest a random centre)
    translation: float = 0.2  # metres, uniform in [-t, t] per axis
    color_p: float = 0.95
    brightness: float = 0.1  # additive, fraction of 255
    contrast: tuple[float, float] = (0.8, 1.2)
    rgb_shift: float = 0.05  # per channel, fraction of 255
    mix3d_p: float = 0.5  # Mix3D: mix two scenes with this probability


@dataclass
class DataConfig:
    voxel_size: float | None = None  # None: the cache's voxel size (4 cm by default)
    train_split: str = "train"
    # best.safetensors is chosen on validation; it must never be the split that is reported
    # (ScanNet val, S3DIS Area 5): hold out val_fraction of the train_split's scenes (seeded
    # by seed, model/selection.py), or name another split. Neither: best = last.
    val_split: str | None = None
    val_fraction: float = 0.0
    batch_size: int = 8  # scenes per step and process (our choice)
    max_images: int = 8  # images read per scene per step (random subset); 0 = all
    val_full_resolution: bool = False  # also score every original point (voxel_of_point)


@dataclass
class RuntimeConfig:
    """How the run executes; may differ between a run and its resumption."""

    device: str = "auto"  # auto: cuda when available, else cpu
    backend: str = "auto"  # sparse backend; auto: model/sparse/select.py PREFERENCE, probed
    amp: bool = True  # bf16 autocast, on CUDA only
    num_workers: int = 4
    # torch CPU threads in the training process; None = torch's default (DDP on CPU: cores /
    # local ranks). 1 avoids OpenMP oversubscription when other work shares the cores.
    threads: int | None = None
    log_every: int = 10  # steps between JSONL/TensorBoard step records
    val_every: int = 1  # epochs between validations
    keep_every: int = 0  # also keep epoch_NNNN checkpoints every k epochs; 0 = last + best only
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed


@dataclass
class TrainConfig:
    epochs: int = 100  # our choice; the paper does not print it
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        validate(self)


# ---- type conversion ---------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotation ``tp``; ConfigError when it does not fit."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover (schema bug)


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (known here: {', '.join(known)})")


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise _unknown(key, names)
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, f"{key}.")
        else:
            kwargs[k] = _coerce(v, tp, key)
    return cls(**kwargs)


def config_from_dict(data: dict) -> TrainConfig:
    """A full or partial nested dict (missing keys keep their defaults) -> TrainConfig."""
    return _build(TrainConfig, data or {}, "")


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain nested dict (tuples as lists): what YAML, JSON and checkpoints store."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def merge_delta(base: dict, delta: dict, prefix: str = "") -> dict:
    """``base`` with the nested ``delta`` laid over it (keys checked later by the schema)."""
    if not isinstance(delta, dict):
        raise ConfigError(f"{prefix or 'config'}: a YAML delta must be a mapping, got {delta!r}")
    out = dict(base)
    for k, v in delta.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_delta(out[k], v, f"{prefix}{k}.")
        else:
            out[k] = v
    return out


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """``["optim.lr=0.01", "augment.scale=[0.8,1.2]"]`` laid over ``data``; values are YAML."""
    import yaml

    out = data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. optim.lr=0.01)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} ({e})") from e
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        out = merge_delta(out, nested)
    return out


def load_config(
    files: list[str | Path] | tuple = (),
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
) -> TrainConfig:
    """Defaults (or ``base``) <- each YAML delta in order <- ``--set`` overrides."""
    import yaml

    data = dict(base or {})
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            delta = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        try:
            data = merge_delta(data, delta)
            config_from_dict(data)  # name the file whose key is wrong
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    data = apply_overrides(data, overrides)
    return config_from_dict(data)


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
