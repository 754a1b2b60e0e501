"""The typed configuration of one ``tttkd-adapt`` run (CLI options map one to one onto fields).

Defaults come from the paper (METHOD.md, "Test-time training") where it gives them and are
marked "our choice" where it does not. The resolved config is stored in every results file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

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

    methods: tuple[str, ...] = ("source", "ttt-kd")
    # TTT-KD (offline and online): SGD on L_2D, psi_3D only
    steps: int = 100
    lr: float = 1.0
    momentum: float = 0.0
    stride: int = 1  # online: update on every stride-th scene of the stream
    online_steps: int = 1  # online: steps per updated scene (the paper: 1)
    kd_loss: Literal["cosine", "l2"] = "cosine"
    rotations: int = 1  # R rotations about +Z (2 pi r / R); logits summed
    # offline TTT-KD over the R rotations: "paper" = Algorithm 1 (reset once per scene; per
    # rotation, steps on the rotated copy, predict the UNROTATED scene; weights carried);
    # "ensemble" = reset per rotation, steps and prediction on the rotated view
    rotation_protocol: RotationProtocol = "paper"
    bn_mode: BnMode = "eval"  # BatchNorm during TTT steps and prediction (METHOD.md)
    max_images: int | None = None  # images read per scene (seeded subset); None: all cached
    # safety: stop a scene's TTT when the KD loss is non-finite or exceeds this x its first value
    # (for divergence_patience consecutive steps), and fall back when the adapted weights'
    # loss ends above it.
    # 4: the first SGD steps at a high lr may overshoot (x1.5-2.5 seen on the demo benchmark)
    # and then recover; a cosine loss 4x its first value is near random (measured, README)
    divergence_ratio: float = 4.0
    divergence_patience: int = 1
    # DUA-style BN statistics (method "bn"); our choices follow DUA's schedule
    bn_passes: int = 16
    bn_momentum: float = 0.1
    bn_decay: float = 0.94
    bn_min_momentum: float = 0.005
    bn_augment: bool = True  # random rotation about +Z and mirror per pass
    # False: statistics reset per scene, the schedule restarts per scene (ours, offline);
    # True: DUA's online form, statistics kept and the momentum decayed over the whole stream
    bn_online: bool = False
    # TENT (method "tent"): entropy minimisation on BN affine parameters, Adam
    tent_lr: float = 1e-3
    tent_steps: int = 1
    tent_episodic: bool = False  # False: the original online TENT (weights carried)
    # "adapt": the logits of the adapting forward (the original TENT: predict, then step);
    # "after": predict again with the weights after the last step
    tent_predict: Literal["adapt", "after"] = "adapt"
    # AdaContrast (method "adacontrast", Chen et al. CVPR 2022): online, EMA teacher, k-NN
    # refined pseudo-labels, InfoNCE with a key queue, diversity term. AdaContrast's values
    # where it has one; ours (3D) where marked
    ac_lr: float = 2e-4  # SGD, momentum 0.9, nesterov, weight decay 1e-4 (AdaContrast)
    ac_steps: int = 1  # steps per scene (AdaContrast: one per batch)
    ac_ema: float = 0.999  # teacher momentum
    ac_neighbors: int = 10  # soft k-NN voting in the feature bank
    ac_bank: int = 16384  # feature bank and key queue length (voxels)
    ac_temperature: float = 0.07  # InfoNCE
    ac_samples: int = 2048  # voxels per scene in the losses and the bank (ours)
    # run
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads; 1 makes CPU runs bitwise repeatable
    backend: str | None = None  # sparse backend; None: the checkpoint's; auto: per device
    # CUDA-graph capture of TTT-KD steps (adapt/graph_step.py): auto = on CUDA where the step
    # is capture-safe, eager elsewhere; on = the same, but an error off CUDA; off = eager
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    split: str | None = None  # cache split to adapt on; None with no scenes: every scene
    scenes: tuple[str, ...] = ()
    save_predictions: bool = False
    save_ply: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded as given

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "scenes", tuple(self.scenes))
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
