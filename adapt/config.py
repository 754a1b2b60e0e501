"""The typed configuration of one ``tttkd-adapt`` run: each field carries its help text, and
the command's options are generated from the fields (``cli/options.py``).

Defaults come from the paper (METHOD.md, "Test-time training") where it gives them and are
marked "our choice" where it does not. The resolved config is stored in every results file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from tttkd.settings import resolve_device, setting

__all__ = ["BN_MODES", "ROTATION_PROTOCOLS", "AdaptConfig", "AdaptConfigError"]

BnMode = Literal["eval", "train", "scene"]
BN_MODES: tuple[str, ...] = ("eval", "train", "scene")
RotationProtocol = Literal["paper", "ensemble"]
ROTATION_PROTOCOLS: tuple[str, ...] = ("paper", "ensemble")


class AdaptConfigError(ValueError):
    """An adaptation option that cannot work (the message names the option and the fix)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Everything a run needs besides the cache and the checkpoint."""

    methods: tuple[str, ...] = setting(
        ("source", "ttt-kd"),
        option="--method",
        help="comma-separated: source, ttt-kd, ttt-kd-online, bn, tent, ttt-mae (needs a "
        "checkpoint trained with --ssl mae), adacontrast (one run, shared scenes)",
    )
    # TTT-KD (offline and online): SGD on L_2D, psi_3D only
    steps: int = setting(100, min=0, help="offline TTT-KD: SGD steps per scene (and rotation)")
    lr: float = setting(1.0, min=0, help="TTT-KD SGD lr")
    momentum: float = setting(
        0.0, min=0, max=1, max_open=True, help="TTT-KD SGD momentum (paper B.5 compares 0.9)"
    )
    stride: int = setting(
        1, min=1, help="ttt-kd-online: update on every s-th scene of the stream (1st, 1+s-th, ...)"
    )
    online_steps: int = setting(
        1, min=1, help="ttt-kd-online: steps per updated scene (the paper: 1)"
    )
    kd_loss: Literal["cosine", "l2"] = setting(
        "cosine", help="distillation loss form (use the training one)"
    )
    rotations: int = setting(
        1, min=1, help="R rotations about +Z (2 pi r / R): TTT-KD on each, logits summed"
    )
    rotation_protocol: RotationProtocol = setting(
        "paper",
        help="offline TTT-KD over --rotations: paper = Algorithm 1 (reset once per scene; "
        "steps on each rotated copy, weights carried, predict the UNROTATED scene); "
        "ensemble = reset per rotation, steps and prediction on the rotated view",
    )
    bn_mode: BnMode = setting(
        "eval",
        help="BatchNorm during TTT: eval = training statistics throughout; train = batch "
        "statistics in steps (running ones updated), running ones for prediction; scene = "
        "the scene's batch statistics in steps and prediction",
    )
    max_images: int | None = setting(
        None,
        min=0,
        help="images per scene for TTT (seeded subset per scene; 0 = all) [default: all cached]",
    )
    # 4: the first SGD steps at a high lr may overshoot (x1.5-2.5 seen on the demo benchmark)
    # and then recover; a cosine loss 4x its first value is near random (measured, README)
    divergence_ratio: float = setting(
        4.0,
        min=1,
        min_open=True,
        help="safety: a scene's TTT stops when its KD loss is non-finite or stays above "
        "this x its first loss for --divergence-patience steps, or ends above it; the "
        "scene then falls back to the unadapted prediction",
    )
    divergence_patience: int = setting(
        1,
        min=1,
        help="safety: consecutive steps above the bound before TTT stops (lr 1.0 spikes)",
    )
    # DUA-style BN statistics (method "bn"); our choices follow DUA's schedule
    bn_passes: int = setting(16, min=1, help="bn (DUA): augmented passes per scene")
    bn_momentum: float = setting(
        0.1, help="bn (DUA): first momentum (then x bn-decay per pass, floor bn-min-momentum)"
    )
    bn_decay: float = setting(0.94, help="bn (DUA): momentum decay per pass")
    bn_min_momentum: float = setting(0.005, help="bn (DUA): momentum floor")
    bn_augment: bool = setting(True, help="bn (DUA): random rotation + mirror per pass")
    bn_online: bool = setting(
        False,
        option="--bn-online/--bn-per-scene",
        help="bn (DUA): keep statistics over the stream with the momentum decayed over "
        "it (DUA's form), or reset them and restart the schedule per scene (ours, offline)",
    )
    # TENT (method "tent"): entropy minimisation on BN affine parameters, Adam
    tent_lr: float = setting(1e-3, help="tent: Adam learning rate on BN affine parameters")
    tent_steps: int = setting(1, min=1, help="tent: steps per scene")
    tent_episodic: bool = setting(
        False,
        option="--tent-episodic/--tent-online",
        help="tent: reset per scene, or carry (original)",
    )
    tent_predict: Literal["adapt", "after"] = setting(
        "adapt",
        help="tent: adapt = the adapting forward's logits, weights before the step "
        "(original); after = predict again with the updated weights",
    )
    # AdaContrast (method "adacontrast", Chen et al. CVPR 2022): online, EMA teacher, k-NN
    # refined pseudo-labels, InfoNCE with a key queue, diversity term. AdaContrast's values
    # where it has one; ours (3D) where marked
    ac_lr: float = setting(
        2e-4, min=0, help="adacontrast: SGD lr (momentum 0.9, nesterov, weight decay 1e-4)"
    )
    ac_steps: int = setting(1, min=1, help="adacontrast: steps per scene")
    ac_ema: float = setting(0.999, min=0, max=1, help="adacontrast: teacher EMA momentum")
    ac_neighbors: int = setting(10, min=1, help="adacontrast: k of the soft k-NN pseudo-label vote")
    ac_bank: int = setting(
        16384, min=2, help="adacontrast: feature bank and key queue length (voxels)"
    )
    ac_temperature: float = setting(0.07, min=0, min_open=True, help="adacontrast: InfoNCE")
    ac_samples: int = setting(
        2048, min=2, help="adacontrast: voxels per scene in the losses and the bank (ours)"
    )
    # run
    seed: int = setting(0, help="seeds image subsets and augmentations (per scene: order-free)")
    device: str = setting(
        "auto", choices="device", help="auto = cuda when available, else cpu (resolved here)"
    )
    threads: int | None = setting(
        None, min=1, help="torch CPU threads [default: torch's]; 1 = bitwise repeatable on CPU"
    )
    backend: str | None = setting(
        None,
        choices="backend",
        help="sparse backend (auto: the fastest verified for the device) "
        "[default: the checkpoint's]",
    )
    cuda_graphs: Literal["auto", "on", "off"] = setting(
        "auto",
        help="ttt-kd: capture one TTT step as a CUDA graph and replay it for the other "
        "steps of a view (auto: on CUDA when safe; on: an error off CUDA; off: eager)",
    )
    split: str | None = setting(
        None, help="adapt on this cache split (default: every scene, or --scenes)"
    )
    scenes: tuple[str, ...] = setting(
        (), help="scene ids in stream order (comma list, repeatable) [default: all in --split]"
    )
    save_predictions: bool = setting(False, help="write predictions/<method>/<scene>.npy")
    save_ply: bool = setting(
        False,
        option="--ply",
        help="with --save-predictions: also a coloured .ply per scene (voxel points)",
    )
    extra: dict[str, Any] = setting(
        default_factory=dict, help="free-form notes recorded as given (config files only)"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "scenes", tuple(self.scenes))
        object.__setattr__(self, "device", resolve_device(self.device))
        if self.max_images == 0:  # 0 = all, as in tttkd-prep and tttkd-train
            object.__setattr__(self, "max_images", None)
        if not self.methods:
            raise AdaptConfigError("no method given; pass --method source,ttt-kd,...")
        if len(set(self.methods)) != len(self.methods):
            raise AdaptConfigError(f"a method is listed twice in {','.join(self.methods)}")
        checks = [
            (self.steps >= 0, "steps must be >= 0"),
            (self.lr >= 0, "lr must be >= 0"),
            (0 <= self.momentum < 1, "momentum must lie in [0, 1)"),
            (self.stride >= 1, "stride must be >= 1"),
            (self.online_steps >= 1, "online_steps must be >= 1"),
            (self.rotations >= 1, "rotations must be >= 1"),
            (
                self.rotation_protocol in ROTATION_PROTOCOLS,
                f"rotation_protocol must be one of {', '.join(ROTATION_PROTOCOLS)}",
            ),
            (self.bn_mode in BN_MODES, f"bn_mode must be one of {', '.join(BN_MODES)}"),
            (self.max_images is None or self.max_images >= 1, "max_images must be >= 1"),
            (self.divergence_ratio > 1, "divergence_ratio must be > 1"),
            (self.divergence_patience >= 1, "divergence_patience must be >= 1"),
            (self.bn_passes >= 1, "bn_passes must be >= 1"),
            (0 < self.bn_momentum <= 1, "bn_momentum must lie in (0, 1]"),
            (0 < self.bn_decay <= 1, "bn_decay must lie in (0, 1]"),
            (0 <= self.bn_min_momentum <= 1, "bn_min_momentum must lie in [0, 1]"),
            (self.tent_lr >= 0, "tent_lr must be >= 0"),
            (self.tent_steps >= 1, "tent_steps must be >= 1"),
            (self.tent_predict in ("adapt", "after"), "tent_predict must be adapt or after"),
            (self.ac_lr >= 0, "ac_lr must be >= 0"),
            (self.ac_steps >= 1, "ac_steps must be >= 1"),
            (0 <= self.ac_ema <= 1, "ac_ema must lie in [0, 1]"),
            (self.ac_neighbors >= 1, "ac_neighbors must be >= 1"),
            (self.ac_bank >= self.ac_samples, "ac_bank must be >= ac_samples"),
            (self.ac_temperature > 0, "ac_temperature must be > 0"),
            (self.ac_samples >= 2, "ac_samples must be >= 2"),
            (self.kd_loss in ("cosine", "l2"), "kd_loss must be cosine or l2"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
            (self.cuda_graphs in ("auto", "on", "off"), "cuda_graphs must be auto, on or off"),
            (
                self.cuda_graphs != "on" or self.device.startswith("cuda"),
                "cuda_graphs=on needs a CUDA device (--device cuda); use auto or off",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise AdaptConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able resolved config (tuples as lists)."""
        out = asdict(self)
        out["methods"] = list(self.methods)
        out["scenes"] = list(self.scenes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptConfig:
        """Inverse of :meth:`to_dict`; unknown keys are errors (a typo must not be ignored)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise AdaptConfigError(f"unknown adapt option(s) {unknown}; known: {sorted(names)}")
        return cls(**data)

    def with_(self, **changes: Any) -> AdaptConfig:
        """A copy with ``changes`` (sweeps vary one option at a time)."""
        return replace(self, **changes)
