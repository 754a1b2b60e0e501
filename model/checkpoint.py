"""Checkpoints: one ``.safetensors`` file = weights + everything needed to rebuild and check.

The JSON in the safetensors metadata (key ``tttkd``) holds the backbone architecture, the
head sizes, the label set and class names, the TeacherSpec, the resolved run config and the
sparse backend used in training. No pickle: a checkpoint is data. The parameter layout is
identical on every backend, so a checkpoint loads into any of them; loading is strict and a
mismatch (classes, teacher dimension, missing or extra weights) is a clear error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tttkd.model.mae import MAEConfig
from tttkd.model.minkunet import backbone_from_arch
from tttkd.model.network import KDHeadConfig, SegKDNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointInfo",
    "load_checkpoint",
    "read_checkpoint_info",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
_META_KEY = "tttkd"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message names the file and the fix."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Everything in a checkpoint except the weights."""

    arch: dict[str, Any]
    num_classes: int
    teacher_dim: int
    kd_head: dict[str, Any]
    backend: str
    label_set: str
    class_names: list[str]
    teacher_spec: dict[str, Any]
    config: dict[str, Any]
    format: int = CHECKPOINT_FORMAT
    mae: dict[str, Any] | None = None  # the MAE head's MAEConfig (tttkd-train --ssl mae)
    # the scenes whose validation score chose this checkpoint ([] for none: last, or no
    # validation); None: written before this was recorded (unknown)
    selected_on: list[str] | None = None


def _as_dict(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(obj)


def save_checkpoint(
    path: str | Path,
    net: SegKDNet,
    *,
    label_set: str,
    class_names: Sequence[str],
    teacher_spec: Mapping[str, Any] | Any,
    config: Mapping[str, Any] | Any,
    backend: str | None = None,
    selected_on: Sequence[str] = (),
) -> CheckpointInfo:
    """Write ``net``'s weights and metadata to ``path`` (a ``.safetensors`` file).

    ``selected_on``: the scenes whose validation score chose this checkpoint (adapt warns
    when it scores one of them)."""
    from safetensors.torch import save_file

    if len(class_names) != net.num_classes:
        raise CheckpointError(
            f"{len(class_names)} class names for a network with {net.num_classes} classes"
        )
    spec = _as_dict(teacher_spec)
    if "dim" in spec and int(spec["dim"]) != net.teacher_dim:
        raise CheckpointError(
            f"TeacherSpec dim {spec['dim']} != the network's teacher dimension {net.teacher_dim}"
        )
    info = CheckpointInfo(
        arch=dict(net.backbone.arch),
        num_classes=net.num_classes,
        teacher_dim=net.teacher_dim,
        kd_head=dataclasses.asdict(net.kd_head_config),
        backend=backend or net.backend,
        label_set=label_set,
        class_names=list(class_names),
        teacher_spec=spec,
        config=_as_dict(config),
        mae=net.mae_head.config.to_dict() if net.mae_head is not None else None,
        selected_on=list(selected_on),
    )
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    meta = json.dumps(dataclasses.asdict(info), default=str, sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={_META_KEY: meta})
    tmp.replace(path)
    return info


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The metadata of a checkpoint, without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path} is not a tttkd checkpoint (safetensors could not read it: {err}); "
            "pass a file written by tttkd-train"
        ) from err
    if _META_KEY not in meta:
        raise CheckpointError(
            f"{path} has no tttkd metadata; for MinkowskiEngine/Pointcept MinkUNet34C weights "
            "use tttkd.model.convert.convert_me_state_dict first"
        )
    raw = json.loads(meta[_META_KEY])
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {raw.get('format')}, this tttkd reads "
            f"{CHECKPOINT_FORMAT}; use the tttkd version that wrote it"
        )
    return CheckpointInfo(**raw)


def load_checkpoint(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str | torch.device = "cpu",
    expect_class_names: Sequence[str] | None = None,
    expect_teacher_dim: int | None = None,
) -> tuple[SegKDNet, CheckpointInfo]:
    """Rebuild the network, load the weights strictly, check what the caller expects.

    ``backend`` overrides the training backend (weights are backend-independent).
    """
    from safetensors.torch import load_file

    path = Path(path)
    info = read_checkpoint_info(path)
    if expect_class_names is not None and list(expect_class_names) != info.class_names:
        raise CheckpointError(
            f"{path} predicts {info.num_classes} classes of label set {info.label_set!r} "
            f"({info.class_names}), but {len(expect_class_names)} classes "
            f"({list(expect_class_names)}) are expected here; use a checkpoint trained on this "
            "label set, or evaluate on the classes the two share"
        )
    if expect_teacher_dim is not None and expect_teacher_dim != info.teacher_dim:
        teacher = info.teacher_spec.get("name", "?")
        raise CheckpointError(
            f"{path} distils into a {info.teacher_dim}-d teacher ({teacher}), but the cache "
            f"holds {expect_teacher_dim}-d features; rebuild the cache with the checkpoint's "
            "teacher or train with this cache's teacher"
        )
    backbone = backbone_from_arch(info.arch, backend=backend or info.backend)
    mae = MAEConfig(**info.mae) if info.mae else None
    net = SegKDNet(
        backbone, info.num_classes, info.teacher_dim, KDHeadConfig(**info.kd_head), mae=mae
    )
    state = load_file(str(path), device="cpu")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"weights in {path} do not fit the architecture its metadata describes: {err}"
        ) from err
    return net.to(device), info
