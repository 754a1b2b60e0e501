"""The modules behind every teacher: each maps normalised images (B, 3, H, W) to (B, h, w, D).

timm ViTs give their final-norm patch tokens (class and register tokens dropped); DINOv2 ViTs
resample their position grid exactly as the official code does; the SAM encoder gives its
neck output. The two demo teachers (`randconv-demo`, `noise-demo`) are stand-ins with no
labels in them, for the embedded benchmark where DINOv2 weights cannot ship.
"""

from __future__ import annotations

import hashlib
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# Official DINOv2 interpolates position embeddings with this scale-factor offset, bicubic,
# no antialiasing (dinov2/models/vision_transformer.py, interpolate_pos_encoding). timm's
# dynamic size uses antialiased bicubic to the exact size, which differs away from 518 px.
DINOV2_INTERPOLATE_OFFSET = 0.1


def _dinov2_pos_embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Replacement for timm `VisionTransformer._pos_embed` (NHWC patches in, tokens out)."""
    batch, rows, cols, dim = x.shape
    n_pos_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    prefix_pos, grid_pos = vit.pos_embed[:, :n_pos_prefix], vit.pos_embed[:, n_pos_prefix:]
    side = math.isqrt(grid_pos.shape[1])
    if (rows, cols) != (side, side):
        grid = grid_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
        scale = (
            (rows + DINOV2_INTERPOLATE_OFFSET) / side,
            (cols + DINOV2_INTERPOLATE_OFFSET) / side,
        )
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        assert grid.shape[-2:] == (rows, cols), (grid.shape, rows, cols)
        grid_pos = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(vit.pos_embed.dtype)
    x = x.reshape(batch, rows * cols, dim)
    prefix = []
    if vit.cls_token is not None:
        prefix.append(vit.cls_token.expand(batch, -1, -1))
    if vit.reg_token is not None:
        prefix.append(vit.reg_token.expand(batch, -1, -1))
    if vit.no_embed_class:  # registers: positions only on patches, prefix concatenated after
        x = torch.cat([*prefix, x + grid_pos], dim=1)
    else:
        x = torch.cat([*prefix, x], dim=1) + torch.cat([prefix_pos, grid_pos], dim=1)
    return vit.pos_drop(x)


class VitPatchTokens(nn.Module):
    """A timm VisionTransformer reduced to its final-norm patch tokens, as DINOv2's
    `x_norm_patchtokens`: the norm is applied to all tokens, then prefix tokens are dropped."""

    def __init__(self, vit: nn.Module, *, dinov2_pos_embed: bool) -> None:
        super().__init__()
        self.vit = vit
        self.patch = int(vit.patch_embed.patch_size[0])
        if dinov2_pos_embed:  # instance attribute shadows the method forward_features calls
            vit._pos_embed = partial(_dinov2_pos_embed, vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]
        return tokens.reshape(batch, height // self.patch, width // self.patch, -1)


class SamImageEmbedding(nn.Module):
    """timm's SAM ViT image encoder; its neck output (256 channels) is SAM's image embedding."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sam.forward_features(x).permute(0, 2, 3, 1)


def _seeded_normal(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


class RandConvDemo(nn.Module):
    """Frozen random conv stack, stride 4: 5x5 conv 3->32, ReLU, avgpool 2, 3x3 conv 32->64,
    ReLU, avgpool 2, 1x1 projection 64->64; features centred per image, L2-normalised.

    Weights come from a CPU `torch.Generator` with a fixed seed (He-scaled normals, zero
    biases), so every process on every machine builds the same teacher. It has seen no
    image and no label: it encodes local colour and texture, which is what the synthetic
    benchmark's colour-only classes need, and nothing more.
    """

    patch = 4

    def __init__(self, *, seed: int = 0, centre: bool = True, dim: int = 64) -> None:
        super().__init__()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.proj = nn.Conv2d(64, dim, 1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.proj):
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                gain = 1.0 if conv is self.proj else 2.0  # ReLU follows the two convs
                conv.weight.copy_(_seeded_normal(conv.weight.shape, math.sqrt(gain / fan_in), gen))
                conv.bias.zero_()
        self.centre = centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = self.proj(x).permute(0, 2, 3, 1)
        if self.centre:
            x = x - x.mean(dim=(1, 2), keepdim=True)
        return F.normalize(x, dim=-1)


class NoiseDemo(nn.Module):
    """Control teacher: unit-norm Gaussian noise per patch, unrelated to the image's content
    but seeded by a hash of it, so one image always gets the same noise (cache == on the fly).
    A correct TTT-KD must do better with `randconv-demo` than with this."""

    patch = 4

    def __init__(self, *, seed: int = 0, dim: int = 64) -> None:
        super().__init__()
        self.seed = seed
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[2] // self.patch, x.shape[3] // self.patch
        out = []
        for image in x.detach().float().cpu().contiguous():
            digest = hashlib.sha256(image.numpy().tobytes()).digest()
            gen = torch.Generator(device="cpu")
            gen.manual_seed(self.seed ^ int.from_bytes(digest[:8], "little"))
            out.append(torch.randn((rows, cols, self.dim), generator=gen))
        return F.normalize(torch.stack(out).to(x.device), dim=-1)
