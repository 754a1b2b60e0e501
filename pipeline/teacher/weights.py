"""Reading a teacher's weights from the one local file the user names, and loading them strictly.

Weights are data, not code: `.safetensors` through safetensors, anything else through
`torch.load(weights_only=True)`. Official checkpoints are converted to timm's key layout by
timm's own `checkpoint_filter_fn` for that model (kept next to the model, STYLE.md 3), then
loaded with `strict=True`. A file that does not fit is a `DatasetError` that names the file,
the teacher and what was expected; nothing is ever loaded partially or resampled silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tttkd.core import DatasetError

# Keys every supported format may carry that the patch-token teacher does not use: timm
# classifier / CLIP projection heads (the model is built with num_classes=0).
_UNUSED_PREFIXES = ("head.",)
_MAX_LISTED = 6

FilterFn = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed, so a cache can say exactly which weights made it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path, teacher: str) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a .safetensors or weights-only torch file."""
    path = Path(path)
    fix = (
        f"pass the checkpoint of {teacher} (official *_pretrain.pth, timm/HF .safetensors "
        "or a plain state dict saved with torch.save(model.state_dict()))"
    )
    if not path.is_file():
        raise DatasetError(f"teacher weights file for {teacher} does not exist", file=path, fix=fix)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise DatasetError(
                f"not a readable .safetensors file ({exc})", file=path, fix=fix
            ) from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a non-checkpoint file
            raise DatasetError(
                "not a PyTorch checkpoint that loads with weights_only=True "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                file=path,
                fix=fix,
            ) from exc
    if isinstance(state, dict):
        for wrapper in ("model", "state_dict"):  # common training-checkpoint wrappers
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state:
        raise DatasetError(
            f"expected a dict of tensors, found {type(state).__name__}", file=path, fix=fix
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise DatasetError(
            f"expected a dict of tensors; {len(bad)} entries are not tensors "
            f"(e.g. {bad[:_MAX_LISTED]})",
            file=path,
            fix=fix,
        )
    return state


def _refuse_resampling(state: dict[str, torch.Tensor], model: nn.Module, file: Path, who: str):
    """timm's filter resamples a patch kernel or position grid of another size without a word;
    for a teacher that would be a different model, so such a file is refused here."""
    patch = tuple(model.patch_embed.patch_size)
    grid = tuple(model.patch_embed.grid_size)
    for key, value in state.items():
        if key.endswith(("patch_embed.proj.weight", "visual.conv1.weight")) and value.ndim == 4:
            if tuple(value.shape[-2:]) != patch:
                raise DatasetError(
                    f"{key} has a {tuple(value.shape[-2:])} patch kernel; {who} uses {patch}",
                    file=file,
                    fix=f"pass the checkpoint of {who} (patch size {patch[0]})",
                )
        if key.endswith(("pos_embed", "positional_embedding")) and value.ndim in (2, 3):
            extra = value.shape[-2] - grid[0] * grid[1]
            if extra not in (0, 1):  # 1 = the class token's position
                raise DatasetError(
                    f"{key} holds {value.shape[-2]} positions; {who} expects a {grid[0]}x"
                    f"{grid[1]} grid (+ class token), i.e. a checkpoint trained at another size",
                    file=file,
                    fix=f"pass the checkpoint of {who} at its native resolution",
                )


def load_strict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    filter_fn: FilterFn | None,
    file: str | Path,
    who: str,
    check_grid: bool,
) -> None:
    """Convert `state` to the model's layout and load it with strict=True, or say what differs.

    The model may live on the meta device: tensors are assigned, so a large teacher is never
    randomly initialised first (ViT-L init alone costs ~5 s and a second copy of memory).
    """
    file = Path(file)
    if check_grid:
        _refuse_resampling(state, model, file, who)
    if filter_fn is not None:
        try:
            state = filter_fn(dict(state), model)
        except Exception as exc:  # the converter assumes a known layout; say which file broke it
            raise DatasetError(
                f"could not convert this checkpoint to {who}'s layout "
                f"({type(exc).__name__}: {exc})",
                file=file,
                fix=f"pass the checkpoint of {who}",
            ) from exc
    state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:_MAX_LISTED]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:_MAX_LISTED]})")
        if wrong:
            parts.append(f"{len(wrong)} wrong shapes (e.g. {wrong[:_MAX_LISTED]})")
        raise DatasetError(
            f"these weights do not fit {who}: " + "; ".join(parts),
            file=file,
            fix=f"pass the checkpoint of {who}, or pick the --teacher that matches this file",
        )
    state = {k: v.to(dtype=expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a non-persistent buffer would stay on meta: an internal error, not the user's
        raise RuntimeError(f"{who}: tensors not set by the checkpoint: {left[:_MAX_LISTED]}")
