"""Teacher weights: only from the named local file, strictly, with the file's sha256 recorded."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tttkd.core import DatasetError
from tttkd.pipeline.teacher import load_teacher

SIZE = 56


@pytest.fixture(scope="module")
def trained() -> tuple[dict[str, torch.Tensor], torch.Tensor, list[np.ndarray]]:
    """A tiny teacher whose weights differ from the seeded init, and its features."""
    teacher = load_teacher("test_vit_tiny", image_size=SIZE)
    gen = torch.Generator().manual_seed(1)
    state = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen)
        for k, v in teacher.module.vit.state_dict().items()
    }
    teacher.module.vit.load_state_dict(state)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (SIZE, 70, 3), dtype=np.uint8) for _ in range(2)]
    return state, teacher.encode(images), images


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("filename", ["tiny.pth", "tiny.safetensors", "tiny.bin"])
def test_saved_weights_reload_to_identical_features(trained, tmp_path, filename):
    state, expected, images = trained
    path = _save(state, tmp_path / filename)
    teacher = load_teacher("test_vit_tiny", weights=path, image_size=SIZE)
    assert torch.equal(teacher.encode(images), expected)
    assert teacher.spec.weights == str(path)
    assert teacher.spec.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_wrapped_and_half_precision_checkpoints_load(trained, tmp_path):
    state, expected, images = trained
    path = tmp_path / "train.pth"
    torch.save({"model": state, "epoch": 3}, path)
    teacher = load_teacher("test_vit_tiny", weights=path, image_size=SIZE)
    assert torch.equal(teacher.encode(images), expected)
    half = _save({k: v.half() for k, v in state.items()}, tmp_path / "half.safetensors")
    feats = load_teacher("test_vit_tiny", weights=half, image_size=SIZE).encode(images)
    assert next(load_teacher("test_vit_tiny", weights=half).module.parameters()).dtype == (
        torch.float32
    )
    torch.testing.assert_close(feats, expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("registers", [False, True])
def test_official_dinov2_key_layout_converts(trained, tmp_path, registers):
    """The official `*_pretrain.pth` layout: same block names, plus `mask_token`; with
    registers, `register_tokens` and a class position folded into timm's cls_token."""
    name = "test_vit_tiny_reg" if registers else "test_vit_tiny"
    source = load_teacher(name, image_size=SIZE)
    timm_state = source.module.vit.state_dict()
    official = {k: v.clone() for k, v in timm_state.items()}
    official["mask_token"] = torch.zeros(1, 32)
    if registers:
        cls_pos = 0.3 * torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(2))
        official["register_tokens"] = official.pop("reg_token")
        official["pos_embed"] = torch.cat([cls_pos, official["pos_embed"]], dim=1)
        official["cls_token"] = official["cls_token"] - cls_pos
    path = _save(official, tmp_path / "official_pretrain.pth")
    loaded = load_teacher(name, weights=path, image_size=SIZE)
    images = trained[2]
    torch.testing.assert_close(loaded.encode(images), source.encode(images), atol=1e-6, rtol=0)


def test_no_network_is_touched(trained, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    path = _save(trained[0], tmp_path / "tiny.safetensors")
    assert load_teacher("test_vit_tiny", weights=path).spec.weights_sha256 is not None
    load_teacher("dinov2_vits14", random_init=True)


def _error(path: Path, name: str = "test_vit_tiny") -> str:
    with pytest.raises(DatasetError) as info:
        load_teacher(name, weights=path)
    text = str(info.value)
    assert str(path) in text and "fix:" in text
    return text


def test_wrong_files_are_clear_errors(trained, tmp_path):
    state = trained[0]
    assert "does not exist" in _error(tmp_path / "absent.pth")
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    assert "weights_only=True" in _error(tmp_path / "notes.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    assert "safetensors" in _error(tmp_path / "bad.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    assert "dict of tensors" in _error(tmp_path / "list.pth")
    torch.save({"lr": 0.1, **state}, tmp_path / "mixed.pth")
    assert "not tensors" in _error(tmp_path / "mixed.pth")

    missing = _save({k: v for k, v in state.items() if k != "norm.weight"}, tmp_path / "m.pth")
    assert "missing keys" in _error(missing) and "norm.weight" in _error(missing)
    extra = _save({**state, "blocks.9.attn.qkv.weight": torch.zeros(3)}, tmp_path / "x.pth")
    assert "unexpected keys" in _error(extra)
    # a wider model of the same family (as ViT-B weights given for ViT-S): shapes differ
    import timm

    wider = timm.create_model(
        "vit_small_patch14_dinov2", num_classes=0, embed_dim=48, depth=2, num_heads=2, img_size=56
    )
    text = _error(_save(wider.state_dict(), tmp_path / "wider.pth"))
    assert (
        "wrong shapes" in text
        and "file (48, 48) vs model (32, 32)" in text
        and "test_vit_tiny" in text
    )


def test_other_patch_or_grid_is_refused_not_resampled(trained, tmp_path):
    state = trained[0]
    other_patch = {**state, "patch_embed.proj.weight": torch.zeros(32, 3, 16, 16)}
    assert "patch kernel" in _error(_save(other_patch, tmp_path / "p16.pth"))
    other_grid = {**state, "pos_embed": torch.zeros(1, 1 + 9, 32)}  # 3x3 instead of 4x4
    assert "another size" in _error(_save(other_grid, tmp_path / "grid.pth"))


def test_sam_official_layout_and_clip_head_load(tmp_path):
    """SAM's `sam_vit_b_*.pth` (image_encoder.* next to the prompt/mask decoders, mlp.lin*) and
    a timm CLIP file carrying its projection head both load onto the patch-feature model."""
    (image,) = [np.random.default_rng(4).integers(0, 256, (32, 48, 3), dtype=np.uint8)]
    sam = load_teacher("sam_vitb16", random_init=True, image_size=32)
    official = {
        "image_encoder." + k.replace("mlp.fc", "mlp.lin"): v
        for k, v in sam.module.sam.state_dict().items()
    }
    official["mask_decoder.output_upscaling.0.weight"] = torch.zeros(256, 64, 2, 2)
    loaded = load_teacher(
        "sam_vitb16", weights=_save(official, tmp_path / "sam.pth"), image_size=32
    )
    expected = sam.encode([image])
    assert expected.shape == (1, 2, 3, 256)
    assert torch.equal(loaded.encode([image]), expected)

    clip = load_teacher("clip_vitb16", random_init=True, image_size=32)
    state = {**clip.module.vit.state_dict(), "head.weight": torch.zeros(512, 768)}
    _save(state, tmp_path / "clip.safetensors")
    loaded = load_teacher("clip_vitb16", weights=tmp_path / "clip.safetensors", image_size=32)
    assert torch.equal(loaded.encode([image]), clip.encode([image]))
