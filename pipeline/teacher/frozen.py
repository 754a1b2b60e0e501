"""The frozen 2D teacher: a `TeacherSpec` that says exactly which teacher made a cache, and
`load_teacher` that builds it (timm, no network; weights only from a local file the user names).

Images are resized as a whole (no crop) so the short side is `image_size` and both sides are
multiples of the patch size; the pixel -> feature-grid map is therefore a pure per-axis scale,
`grid_size(H, W)[k] / (H, W)[k]`. An image already at that size is passed through untouched,
so features can be compared with an official implementation on the same weights.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tttkd.core import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_TOKENS = "x_norm_patchtokens"  # final norm over all tokens, then class/registers dropped
INIT_SEED = 0  # random-init (test) teachers are seeded: the same weights in every process


@dataclass(frozen=True)
class TeacherSpec:
    """Everything that decides a teacher's features; stored in every cache and checkpoint."""

    name: str
    arch: str
    weights: str | None
    weights_sha256: str | None
    patch_size: int
    image_size: int  # short side after resize; 0 = the image's own size (rounded to patch)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    tokens: str = PATCH_TOKENS

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherSpec:
        names = {f.name for f in fields(cls)}
        unknown, missing = set(data) - names, names - set(data) - {"tokens"}
        if unknown or missing:
            raise ValueError(
                f"not a TeacherSpec: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
            )
        values = dict(data)
        values["mean"] = tuple(float(v) for v in data["mean"])
        values["std"] = tuple(float(v) for v in data["std"])
        return cls(**values)

    def compatible_with(self, other: TeacherSpec) -> bool:
        """Same features for the same image: everything but where the weights file lies."""
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("weights"), theirs.pop("weights")
        return mine == theirs


@dataclass(frozen=True)
class _Entry:
    kind: str  # dinov2 | clip | sam | randconv | noise
    arch: str  # timm model name (or the demo module's name)
    patch_size: int
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    default_image_size: int = 448
    needs_weights: bool = True
    overrides: tuple[tuple[str, Any], ...] = ()  # timm kwargs of the tiny test variants


def _registry() -> dict[str, _Entry]:
    reg: dict[str, _Entry] = {}
    vits = [("s", "small", 384), ("b", "base", 768), ("l", "large", 1024), ("g", "giant", 1536)]
    for tag, size, dim in vits:
        reg[f"dinov2_vit{tag}14"] = _Entry("dinov2", f"vit_{size}_patch14_dinov2", 14, dim)
        reg[f"dinov2_vit{tag}14_reg"] = _Entry("dinov2", f"vit_{size}_patch14_reg4_dinov2", 14, dim)
    clip = {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD}
    for tag, arch, patch, dim in [
        ("b16", "base_patch16", 16, 768),
        ("l14", "large_patch14", 14, 1024),
    ]:
        # GELU towers (open_clip LAION/DataComp, timm .safetensors); OpenAI's use QuickGELU.
        # OpenAI mean/std, as timm records for all but LAION-2B ViT-L/14 (which used 0.5).
        reg[f"clip_vit{tag}"] = _Entry("clip", f"vit_{arch}_clip_224", patch, dim, **clip)
        reg[f"clip_vit{tag}_openai"] = _Entry(
            "clip", f"vit_{arch}_clip_quickgelu_224", patch, dim, **clip
        )
    for tag, size in [("b", "base"), ("l", "large"), ("h", "huge")]:
        reg[f"sam_vit{tag}16"] = _Entry("sam", f"samvit_{size}_patch16", 16, 256)
    # tiny DINOv2-style ViTs for tests; layer scale 1 so the blocks matter at random init
    tiny = (
        ("embed_dim", 32),
        ("depth", 2),
        ("num_heads", 2),
        ("img_size", 56),
        ("init_values", 1.0),
    )
    reg["test_vit_tiny"] = _Entry(
        "dinov2", "vit_small_patch14_dinov2", 14, 32, needs_weights=False, overrides=tiny
    )
    reg["test_vit_tiny_reg"] = _Entry(
        "dinov2", "vit_small_patch14_reg4_dinov2", 14, 32, needs_weights=False, overrides=tiny
    )
    demo = {"default_image_size": 0, "needs_weights": False}
    reg["randconv-demo"] = _Entry("randconv", "randconv_seed0", 4, 64, **demo)
    reg["noise-demo"] = _Entry("noise", "noise_seed0", 4, 64, **demo)
    return reg


TEACHERS: dict[str, _Entry] = _registry()


def _tokens(entry: _Entry, centre: bool) -> str:
    if entry.kind == "sam":
        return "image_embeddings"  # SAM neck output, 256 channels
    if entry.kind == "randconv":
        return "conv_centred_l2" if centre else "conv_l2"
    if entry.kind == "noise":
        return "noise_l2"
    return PATCH_TOKENS


class Teacher:
    """A frozen encoder plus its spec; `encode` batches internally and never tracks gradients."""

    def __init__(
        self,
        spec: TeacherSpec,
        module: nn.Module,
        *,
        device: torch.device,
        batch_size: int | None,
        bf16_on_cuda: bool = True,
        compile: bool = False,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.module = module.to(device).eval().requires_grad_(False)
        if compile:  # opt-in: compile time is paid once per process; speed-up unmeasured
            self.module = torch.compile(self.module, dynamic=False)
        self.device = device
        self.batch_size = batch_size  # None: auto_batch_size per input size (CUDA), else 8
        self._auto: dict[tuple[int, int], int] = {}
        self._autocast = bf16_on_cuda and device.type == "cuda"
        self._mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') the encoder sees: short side `image_size`, both sides multiples of patch."""
        return input_size(self.spec, height, width)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the feature grid for an image of (height, width) pixels."""
        return grid_size(self.spec, height, width)

    def batch_for(self, height: int, width: int) -> int:
        """Images per forward pass for images of (height, width): given, or from free memory."""
        if self.batch_size is not None:
            return self.batch_size
        if (height, width) not in self._auto:
            self._auto[height, width] = auto_batch_size(self.spec, self.device, (height, width))
        return self._auto[height, width]

    def encode(
        self,
        images: list[np.ndarray],
        *,
        out_dtype: torch.dtype = torch.float32,
        pad_batches: bool | None = None,
    ) -> torch.Tensor:
        """uint8 (H, W, 3) images of one size -> CPU features (B, h, w, D) in ``out_dtype``.

        On CUDA the input goes through pinned memory with non-blocking copies and the output
        is cast to ``out_dtype`` on the device and copied back without a sync per batch (one
        at the end); fp16 output (the cache's dtype) skips the fp32 round trip. pad_batches
        (default: on CUDA) runs every batch at full ``batch_size`` (zero images fill the last
        one) so an image's features do not depend on which images share its batch.
        """
        if len(images) == 0:
            raise ValueError("encode() needs at least one image")
        first = images[0]
        for i, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
                raise ValueError(f"image {i}: expected a uint8 (H, W, 3) numpy array")
            if image.shape != first.shape or image.shape[2] != 3:
                raise ValueError(
                    f"image {i} has shape {image.shape}; all images in one call must share "
                    f"one (H, W, 3) shape, the first is {first.shape}"
                )
        height, width = first.shape[:2]
        size = self.input_size(height, width)
        rows, cols = self.grid_size(height, width)
        cuda = self.device.type == "cuda"
        pad = cuda if pad_batches is None else pad_batches
        bs = self.batch_for(height, width)
        out = torch.empty(
            (len(images), rows, cols, self.spec.dim), dtype=out_dtype, pin_memory=cuda
        )
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self._autocast
            else contextlib.nullcontext()
        )
        # `out` lives outside inference mode, so callers may use it as a target in autograd.
        with torch.inference_mode(), autocast:
            for start in range(0, len(images), bs):
                part = images[start : start + bs]
                n = len(part)
                if pad and n < bs:
                    part = part + [np.zeros_like(first)] * (bs - n)
                chunk = torch.from_numpy(np.stack(part))
                if cuda:
                    chunk = chunk.pin_memory()
                x = chunk.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
                if size != (height, width):
                    x = F.interpolate(x, size=size, mode="bicubic", antialias=True)
                    x = x.clamp(0.0, 1.0)
                feats = self.module((x - self._mean) / self._std)[:n]
                out[start : start + n].copy_(feats.to(out_dtype), non_blocking=cuda)
        if cuda:
            torch.cuda.synchronize(self.device)
        return out


def input_size(spec: TeacherSpec, height: int, width: int) -> tuple[int, int]:
    """(H', W') the encoder sees for an image of (height, width); needs only the spec, so the
    CPU stage of prep computes grids without building the teacher."""
    p, target = spec.patch_size, spec.image_size
    scale = 1.0 if target <= 0 else target / min(height, width)

    def side(n: int) -> int:
        exact = target if (target > 0 and n == min(height, width)) else n * scale
        return max(p, math.floor(exact / p + 0.5) * p)

    return side(height), side(width)


def grid_size(spec: TeacherSpec, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the feature grid for an image of (height, width) pixels."""
    rows, cols = input_size(spec, height, width)
    return rows // spec.patch_size, cols // spec.patch_size


def auto_batch_size(
    spec: TeacherSpec, device: torch.device, image_hw: tuple[int, int], cap: int = 64
) -> int:
    """Images per teacher call from the device's free memory (CUDA), 8 elsewhere.

    A deliberately rough bound, unmeasured on a GPU: per image the full-size float input and
    its resized copy, plus ~24 token x width activations in bf16 (inference keeps one block's
    activations alive; SDPA keeps attention linear in tokens), using half the free memory.
    """
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    rows, cols = input_size(spec, *image_hw)
    tokens = (rows // spec.patch_size) * (cols // spec.patch_size) + 5
    per_image = 4 * 3 * (image_hw[0] * image_hw[1] + rows * cols) + 24 * tokens * spec.dim * 2
    n = int(0.5 * free // per_image)
    return max(1, min(cap, 2 ** max(0, n.bit_length() - 1)))


def _build_timm(entry: _Entry, on_meta: bool) -> tuple[nn.Module, nn.Module]:
    """(raw timm model, patch-feature module); on_meta skips random init before a load."""
    import timm

    from tttkd.pipeline.teacher.backbones import SamImageEmbedding, VitPatchTokens

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, **dict(entry.overrides)}
    if entry.kind != "sam":
        kwargs["dynamic_img_size"] = True
    if on_meta:
        kwargs["device"] = "meta"
        model = timm.create_model(entry.arch, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            model = timm.create_model(entry.arch, **kwargs)
    if entry.kind == "sam":
        return model, SamImageEmbedding(model)
    return model, VitPatchTokens(model, dinov2_pos_embed=entry.kind == "dinov2")


def _checkpoint_filter(entry: _Entry):
    if entry.kind == "sam":
        from timm.models.vision_transformer_sam import checkpoint_filter_fn
    else:
        from timm.models.vision_transformer import checkpoint_filter_fn
    return checkpoint_filter_fn


def _arch_text(entry: _Entry) -> str:
    if not entry.overrides:
        return entry.arch
    return entry.arch + "(" + ",".join(f"{k}={v}" for k, v in entry.overrides) + ")"


def _checked_entry(
    name: str, weights: str | Path | None, *, random_init: bool, centre: bool
) -> _Entry:
    """The registry entry of ``name``, refusing option combinations that do not apply to it
    (a real teacher without weights is a user error that names the file to pass)."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(sorted(TEACHERS))}")
    entry = TEACHERS[name]
    if not centre and entry.kind != "randconv":
        raise ValueError("centre=False applies to randconv-demo only")
    demo = entry.kind in ("randconv", "noise")
    if weights is not None and (random_init or demo):
        raise ValueError(f"teacher {name} takes no weights file here (random_init or a demo)")
    if weights is None and entry.needs_weights and not random_init:
        raise DatasetError(
            f"teacher {name} needs its weights; they are never downloaded",
            fix=f"pass --teacher-weights FILE with the {entry.arch} checkpoint "
            "(official *_pretrain.pth, timm/HF .safetensors or a plain state dict)",
        )
    return entry


def _build_module(
    entry: _Entry, name: str, weights: str | Path | None, *, centre: bool
) -> tuple[nn.Module, str | None]:
    """The encoder (a demo teacher, a seeded random ViT, or a ViT loaded strictly from
    ``weights``) and the weights file's sha256 (None without a file)."""
    if entry.kind == "randconv":
        from tttkd.pipeline.teacher.backbones import RandConvDemo

        return RandConvDemo(seed=0, centre=centre, dim=entry.dim), None
    if entry.kind == "noise":
        from tttkd.pipeline.teacher.backbones import NoiseDemo

        return NoiseDemo(seed=0, dim=entry.dim), None
    if weights is None:
        return _build_timm(entry, on_meta=False)[1], None
    from tttkd.pipeline.teacher.weights import file_sha256, load_strict, read_state_dict

    state = read_state_dict(weights, name)
    model, module = _build_timm(entry, on_meta=True)
    load_strict(
        model,
        state,
        filter_fn=_checkpoint_filter(entry),
        file=weights,
        who=f"{name} ({_arch_text(entry)})",
        check_grid=entry.kind != "sam",
    )
    model.float()
    return module, file_sha256(weights)


def load_teacher(
    name: str,
    weights: str | Path | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    *,
    batch_size: int | None = 8,
    random_init: bool = False,
    centre: bool = True,
    compile: bool = False,
) -> Teacher:
    """Build teacher `name`; real teachers need `weights` (a local file), never the network.

    image_size: short side in pixels; None = the teacher's default (448 for ViTs, the image's
    own size for the demo teachers); 0 = the image's own size rounded to the patch size.
    random_init: seeded random weights for a real architecture (tests and benchmarks only).
    batch_size: None = chosen from free GPU memory per image size (8 on CPU).
    compile: wrap the encoder in ``torch.compile`` (off by default; unmeasured).
    centre: `randconv-demo` only: subtract each image's mean feature before normalising.
    """
    entry = _checked_entry(name, weights, random_init=random_init, centre=centre)
    demo = entry.kind in ("randconv", "noise")  # no weights at all; cheap and exact in fp32
    device = torch.device(device)
    size = entry.default_image_size if image_size is None else int(image_size)
    if size < 0:
        raise ValueError(f"image_size must be >= 0, got {size}")
    module, sha = _build_module(entry, name, weights, centre=centre)
    spec = TeacherSpec(
        name=name,
        arch=_arch_text(entry),
        weights=None if weights is None else str(weights),
        weights_sha256=sha,
        patch_size=entry.patch_size,
        image_size=size,
        mean=entry.mean,
        std=entry.std,
        dim=entry.dim,
        tokens=_tokens(entry, centre),
    )
    return Teacher(
        spec, module, device=device, batch_size=batch_size, bf16_on_cuda=not demo, compile=compile
    )
