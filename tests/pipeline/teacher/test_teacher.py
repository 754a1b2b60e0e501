"""Teacher interface: sizes, the no-resize path, batching, specs, and the demo teachers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tttkd.core import DatasetError
from tttkd.pipeline.teacher import TEACHERS, Teacher, TeacherSpec, load_teacher


def _images(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def _normalised(teacher: Teacher, image: np.ndarray) -> torch.Tensor:
    # The same memory layout as Teacher.encode (a stacked NHWC batch viewed as NCHW): on some
    # CPUs the patch-embedding conv picks another kernel for another layout, a few ULPs apart.
    x = torch.from_numpy(np.stack([image])).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(teacher.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def tiny() -> Teacher:
    return load_teacher("test_vit_tiny", image_size=56)


@pytest.mark.parametrize(
    ("height", "width", "size", "patch", "expected"),
    [
        (480, 640, 448, 14, (448, 602)),  # 640 * 448/480 = 597.3 -> 43 patches
        (640, 480, 448, 14, (602, 448)),
        (448, 602, 448, 14, (448, 602)),  # already there: unchanged
        (97, 211, 448, 14, (448, 980)),  # 211 * 448/97 = 974.5 -> 70 patches
        (120, 160, 448, 16, (448, 592)),  # 597.3 / 16 = 37.3 -> 37 patches
        (120, 160, 450, 14, (448, 602)),  # short side rounded to the patch too
        (121, 163, 0, 4, (120, 164)),  # own size, rounded to the patch
        (3, 500, 0, 14, (14, 504)),  # never below one patch
    ],
)
def test_input_and_grid_size(height, width, size, patch, expected):
    spec = TeacherSpec("x", "x", None, None, patch, size, (0, 0, 0), (1, 1, 1), 8)
    teacher = Teacher(spec, torch.nn.Identity(), device=torch.device("cpu"), batch_size=1)
    assert teacher.input_size(height, width) == expected
    assert teacher.grid_size(height, width) == (expected[0] // patch, expected[1] // patch)


@pytest.mark.parametrize(("height", "width"), [(37, 53), (56, 56), (61, 113), (113, 61)])
def test_tiny_vit_shapes_for_odd_sizes(tiny, height, width):
    feats = tiny.encode(_images(2, height, width))
    rows, cols = tiny.grid_size(height, width)
    assert feats.shape == (2, rows, cols, 32)
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert min(tiny.input_size(height, width)) == 56


def test_register_tokens_are_dropped():
    teacher = load_teacher("test_vit_tiny_reg", image_size=56)
    vit = teacher.module.vit
    assert vit.num_prefix_tokens == 5  # class + 4 registers
    (image,) = _images(1, 56, 84)
    with torch.no_grad():
        tokens = vit.forward_features(_normalised(teacher, image))
    assert tokens.shape[1] == 5 + 4 * 6
    expected = tokens[:, 5:].reshape(1, 4, 6, 32)
    assert torch.equal(teacher.encode([image]), expected)


def test_no_resize_path_is_exact(tiny):
    (image,) = _images(1, 56, 84)  # short side 56 = configured size, both multiples of 14
    with torch.no_grad():
        direct = tiny.module(_normalised(tiny, image))
    assert torch.equal(tiny.encode([image]), direct)
    (other,) = _images(1, 57, 84)  # one pixel more: resized, so no longer the same computation
    assert tiny.input_size(57, 84) == (56, 84)
    with torch.no_grad():
        unresized = tiny.module(_normalised(tiny, other)[:, :, :56])
    assert not torch.allclose(tiny.encode([other]), unresized)


def test_dinov2_positions_at_native_grid_match_timm(tiny):
    """Our DINOv2 position resampling must leave the native grid (518 px for real models)
    exactly as timm computes it, so only the resampled sizes follow the official formula."""
    import timm

    reference = timm.create_model(
        "vit_small_patch14_dinov2",
        pretrained=False,
        num_classes=0,
        embed_dim=32,
        depth=2,
        num_heads=2,
        img_size=56,
        init_values=1.0,
    )
    reference.load_state_dict(tiny.module.vit.state_dict())
    reference.eval()
    (image,) = _images(1, 56, 56)
    x = _normalised(tiny, image)
    with torch.no_grad():
        expected = reference.forward_features(x)[:, 1:].reshape(1, 4, 4, 32)
    assert torch.equal(tiny.encode([image]), expected)


@pytest.mark.parametrize("name", ["test_vit_tiny", "randconv-demo", "noise-demo"])
def test_batching_matches_one_at_a_time(name):
    images = _images(5, 40, 52, seed=3)
    batched = load_teacher(name, image_size=56 if "vit" in name else None, batch_size=2)
    single = load_teacher(name, image_size=56 if "vit" in name else None, batch_size=1)
    together = batched.encode(images)
    one_by_one = torch.cat([single.encode([image]) for image in images])
    assert together.shape[0] == 5
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-5)


def test_features_can_be_used_as_autograd_targets(tiny):
    target = tiny.encode(_images(1, 56, 56))
    pred = torch.zeros_like(target, requires_grad=True)
    torch.nn.functional.cosine_similarity(pred + 1, target, dim=-1).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_encode_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match="share"):
        tiny.encode(_images(1, 56, 56) + _images(1, 56, 70))
    with pytest.raises(ValueError, match="uint8"):
        tiny.encode([np.zeros((56, 56, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="at least one"):
        tiny.encode([])


def test_spec_round_trips_through_json(tiny):
    data = json.loads(json.dumps(tiny.spec.to_dict()))
    assert TeacherSpec.from_dict(data) == tiny.spec
    with pytest.raises(ValueError, match="unknown keys"):
        TeacherSpec.from_dict({**data, "layer": 3})


def test_compatibility_ignores_the_path_only(tiny):
    spec = tiny.spec
    moved = TeacherSpec.from_dict({**spec.to_dict(), "weights": "/elsewhere/w.pth"})
    assert spec.compatible_with(moved)
    for field, value in [("weights_sha256", "ab" * 32), ("image_size", 448), ("dim", 64)]:
        other = TeacherSpec.from_dict({**spec.to_dict(), field: value})
        assert not spec.compatible_with(other), field


def test_real_teacher_without_weights_is_an_error():
    with pytest.raises(DatasetError, match="never downloaded"):
        load_teacher("dinov2_vitl14")
    with pytest.raises(ValueError, match="unknown teacher"):
        load_teacher("dinov3_vitl16")
    with pytest.raises(ValueError, match="takes no weights"):
        load_teacher("randconv-demo", weights="w.pth")
    with pytest.raises(ValueError, match="randconv-demo only"):
        load_teacher("test_vit_tiny", centre=False)


def test_registry_matches_timm_architectures():
    """Every registered architecture exists in timm with our dim and patch size, and our
    mean/std are the ones timm records for its pretrained weights (built on meta: no memory)."""
    import timm
    from timm.models import get_pretrained_cfg

    for name, entry in TEACHERS.items():
        if entry.kind in ("randconv", "noise"):
            continue
        extra = {} if entry.kind == "sam" else {"dynamic_img_size": True}
        model = timm.create_model(
            entry.arch, pretrained=False, num_classes=0, device="meta", **extra,
            **dict(entry.overrides),
        )  # fmt: skip
        assert model.num_features == entry.dim, name
        assert tuple(model.patch_embed.patch_size) == (entry.patch_size,) * 2, name
        weights_tag = {"dinov2": "lvd142m", "clip": "openai", "sam": "sa1b"}[entry.kind]
        cfg = get_pretrained_cfg(f"{entry.arch}.{weights_tag}")
        assert (cfg.mean, cfg.std) == (entry.mean, entry.std), name
        assert entry.needs_weights == (not name.startswith("test_")), name


def test_random_init_real_teacher_builds_and_encodes():
    teacher = load_teacher("dinov2_vits14_reg", random_init=True, image_size=28)
    feats = teacher.encode(_images(1, 30, 45))
    assert feats.shape == (1, 2, 3, 384)
    assert teacher.spec.weights is None and teacher.spec.weights_sha256 is None


def test_randconv_demo_is_unit_norm_and_centred():
    images = _images(3, 120, 160, seed=5)
    teacher = load_teacher("randconv-demo")
    feats = teacher.encode(images)
    assert feats.shape == (3, 30, 40, 64)  # own size, stride 4
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3, 30, 40))
    assert teacher.spec.tokens == "conv_centred_l2" and teacher.spec.image_size == 0
    raw = load_teacher("randconv-demo", centre=False)
    assert raw.spec.tokens == "conv_l2" and not raw.spec.compatible_with(teacher.spec)
    # without centring every feature shares one dominant direction; centring removes it
    mean_raw = raw.encode(images).mean(dim=(1, 2)).norm(dim=-1)
    mean_centred = feats.mean(dim=(1, 2)).norm(dim=-1)
    assert (mean_raw > 0.5).all() and (mean_centred < 0.5 * mean_raw).all()


_FINGERPRINT = """
import hashlib, numpy as np
from tttkd.pipeline.teacher.frozen import load_teacher
rng = np.random.default_rng(7)
images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
for name in ("randconv-demo", "noise-demo"):
    print(name, hashlib.sha256(load_teacher(name).encode(images).numpy().tobytes()).hexdigest())
"""


def test_demo_teachers_are_deterministic_across_processes():
    runs = [
        subprocess.run(
            [sys.executable, "-c", _FINGERPRINT], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0].splitlines()) == 2
    images = _images(2, 48, 64)
    first, second = load_teacher("randconv-demo"), load_teacher("randconv-demo")
    assert torch.equal(first.encode(images), second.encode(images))


def test_noise_demo_follows_content_hash_not_content():
    teacher = load_teacher("noise-demo")
    (image,) = _images(1, 32, 48)
    nudged = image.copy()
    nudged[0, 0, 0] ^= 1  # one bit of one pixel
    a, b, again = (teacher.encode([x]) for x in (image, nudged, image))
    assert torch.equal(a, again)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(1, 8, 12))
    cosine = (a * b).sum(-1).mean().item()
    assert abs(cosine) < 0.1  # unrelated, though the images are nearly identical


def test_teacher_survives_pickling():
    """Dask ships objects between processes; the DINOv2 position override must travel too."""
    import pickle

    teacher = load_teacher("test_vit_tiny_reg", image_size=56)
    copy = pickle.loads(pickle.dumps(teacher))
    assert copy.module.vit._pos_embed.args[0] is copy.module.vit
    images = _images(1, 56, 70)  # 4x5 grid: not the native 4x4, so the override runs
    assert torch.equal(copy.encode(images), teacher.encode(images))
