"""Load MinkUNet weights from the MinkowskiEngine ecosystem into our layout.

Source layouts: SpatioTemporalSegmentation ``Res16UNet*`` and Pointcept ``MinkUNet*``
(``conv0p1s1.kernel``, ``bn0.bn.weight``, ``block1.0.conv1.kernel``,
``block1.0.downsample.0.kernel``, ``final.kernel`` / ``final.bias``; optional prefixes such as
``module.`` or ``backbone.``). Our names are the same minus ``kernel`` -> ``weight`` and
``.bn.`` -> ``.``; ``final`` becomes ``seg_head`` (rho_Y).

Kernel order: MinkowskiEngine 0.5 stores ``[K^3, C_in, C_out]`` with the kernel index
``ix + K * iy + K^2 * iz`` (x fastest; ``kernel_region::coordinate_at``), ours is
``ix * K^2 + iy * K + iz`` (z fastest, ``base.kernel_offsets``); both use the same offsets per
axis (``-(K//2)..K//2`` odd, ``0..K-1`` even) and the same in/out convention for strided and
transposed convs, so conversion is a permutation of the first axis. 1x1 kernels are
``[C_in, C_out]`` in ME 0.5 and ``[1, C_in, C_out]`` here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tttkd.model.minkunet import MinkUNet, backbone_from_arch
from tttkd.model.network import KDHeadConfig, SegKDNet

__all__ = [
    "MEConversion",
    "convert_me_state_dict",
    "me_kernel_permutation",
    "read_me_state_dict",
    "segkdnet_from_me",
]

_PREFIXES = ("module.", "backbone.", "model.", "net.")


def me_kernel_permutation(kernel_size: int) -> Tensor:
    """``perm`` with ``ours[c] = me[perm[c]]`` (and ``me = ours[argsort(perm)]``)."""
    k = kernel_size
    ix, iy, iz = torch.meshgrid(
        torch.arange(k), torch.arange(k), torch.arange(k), indexing="ij"
    )  # our order: ix slowest, iz fastest
    return (ix + k * iy + k * k * iz).reshape(-1)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def _kernel_size(volume: int, key: str) -> int:
    k = round(volume ** (1 / 3))
    if k**3 != volume:
        raise ValueError(f"{key}: kernel volume {volume} is not a cube (hyper-cross kernels?)")
    return k


def _convert_kernel(key: str, w: Tensor) -> Tensor:
    if w.dim() == 2:  # ME 0.5 stores 1x1 kernels as [C_in, C_out]
        return w.unsqueeze(0).clone()
    if w.dim() != 3:
        raise ValueError(f"{key}: expected a [K^3, C_in, C_out] kernel, got {tuple(w.shape)}")
    k = _kernel_size(w.shape[0], key)
    return w[me_kernel_permutation(k)].clone()


@dataclass
class MEConversion:
    """Converted weights: ``backbone`` (MinkUNet keys), ``seg_head`` (may be empty), ``arch``."""

    backbone: dict[str, Tensor]
    seg_head: dict[str, Tensor]
    arch: dict


def _infer_arch(sd: Mapping[str, Tensor]) -> dict:
    blocks = {}
    for key in sd:
        m = re.match(r"block(\d)\.(\d+)\.", key)
        if m:
            stage, idx = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), idx + 1)
    if sorted(blocks) != list(range(1, 9)):
        raise ValueError(
            f"not a Res16UNet/MinkUNet state dict: found blocks {sorted(blocks)} (need 1..8)"
        )
    conv0 = sd["conv0p1s1.weight"]
    planes = [int(sd[f"block{i}.0.conv2.weight"].shape[2]) for i in range(1, 9)]
    return {
        "name": "converted_minkunet",
        "in_channels": int(conv0.shape[1]),
        "layers": [blocks[i] for i in range(1, 9)],
        "planes": planes,
        "init_dim": int(conv0.shape[2]),
        "stem_kernel": _kernel_size(conv0.shape[0], "conv0p1s1"),
        "bn_momentum": 0.1,
    }


def convert_me_state_dict(state_dict: Mapping[str, Tensor]) -> MEConversion:
    """Rename and permute a ME-ecosystem MinkUNet state dict into our layout."""
    backbone: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    for raw_key, value in state_dict.items():
        key = _strip(raw_key)
        if key.startswith("final."):
            if key == "final.kernel":
                w = value.reshape(-1, value.shape[-1]) if value.dim() == 3 else value
                head["weight"] = w.t().contiguous()
            elif key == "final.bias":
                head["bias"] = value.reshape(-1).clone()
            else:
                raise ValueError(f"unexpected key {raw_key!r} in the final layer")
            continue
        key = key.replace(".bn.", ".")
        if key.endswith(".kernel"):
            key = key[: -len(".kernel")] + ".weight"
            value = _convert_kernel(raw_key, value)
        backbone[key] = value
    for key in [k for k in backbone if k.endswith(".running_mean")]:
        # checkpoints from torch < 0.4.1 lack the counter; it only matters for momentum=None
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        backbone.setdefault(counter, torch.tensor(0, dtype=torch.int64))
    return MEConversion(backbone, head, _infer_arch(backbone))


def read_me_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict inside a ME-ecosystem checkpoint file (``torch.load``, weights only).

    Accepts a bare state dict or a training checkpoint holding one under ``state_dict``
    (SpatioTemporalSegmentation, Pointcept) or ``model``.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors have many types
        raise ValueError(
            f"cannot read {path} as weights only ({err}); re-save just its state_dict with "
            "torch.save(ckpt['state_dict'], 'weights.pth') in the environment that wrote it"
        ) from err
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return obj


def _load_strict(module: MinkUNet | torch.nn.Module, state: dict[str, Tensor], what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"converted {what} weights do not fit: {err}") from err


def segkdnet_from_me(
    state_dict: Mapping[str, Tensor],
    *,
    teacher_dim: int,
    num_classes: int | None = None,
    kd_head: KDHeadConfig = KDHeadConfig(),  # noqa: B008 (frozen dataclass)
    backend: str = "torch",
) -> SegKDNet:
    """A :class:`SegKDNet` with ME-ecosystem backbone (and classifier, if present) weights.

    ``rho_2D`` starts untrained (those models have none). Without ``final.*`` weights pass
    ``num_classes``; with them, a different ``num_classes`` is an error.
    """
    conv = convert_me_state_dict(state_dict)
    backbone = backbone_from_arch(conv.arch, backend=backend)
    _load_strict(backbone, conv.backbone, "backbone")
    if conv.seg_head:
        n = conv.seg_head["weight"].shape[0]
        if num_classes is not None and num_classes != n:
            raise ValueError(
                f"the checkpoint's classifier has {n} classes, not {num_classes}; pass "
                "num_classes=None to keep it"
            )
        num_classes = n
    elif num_classes is None:
        raise ValueError("the state dict has no final.* classifier: pass num_classes")
    net = SegKDNet(backbone, num_classes, teacher_dim, kd_head)
    if conv.seg_head:
        _load_strict(net.seg_head, conv.seg_head, "classifier")
    return net
