"""Synthetic cache contents for tests and benchmarks (no dataset, no teacher needed).

Training and adaptation tests can build a real cache in milliseconds with
``Cache.create(url, synthetic_meta())`` and ``write_scene(synthetic_record(...))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tttkd.pipeline.cache.records import CacheMeta, SceneRecord


def smooth_features(
    n_images: int,
    h: int,
    w: int,
    dim: int,
    *,
    rank: int = 16,
    noise: float = 0.05,
    seed: int = 0,
    teacher_seed: int = 0,
) -> np.ndarray:
    """float16 ``[I, h, w, D]`` feature maps shaped like a ViT's: spatially smooth fields of
    ``rank`` latent channels mixed into ``dim`` channels, an offset, and a little noise.

    ``teacher_seed`` fixes the mixing (the "teacher"), ``seed`` the scene, so scenes share a
    feature subspace as real teacher features do.
    """
    rng = np.random.default_rng(seed)
    lo_h, lo_w = max(2, h // 6), max(2, w // 6)
    latent = rng.normal(size=(n_images, lo_h, lo_w, rank))
    # bilinear upsampling of the coarse fields makes neighbouring patches alike
    ys, xs = np.linspace(0, lo_h - 1, h), np.linspace(0, lo_w - 1, w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, lo_h - 1), np.minimum(x0 + 1, lo_w - 1)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    top = latent[:, y0][:, :, x0] * (1 - fx) + latent[:, y0][:, :, x1] * fx
    bottom = latent[:, y1][:, :, x0] * (1 - fx) + latent[:, y1][:, :, x1] * fx
    fields = top * (1 - fy) + bottom * fy
    teacher = np.random.default_rng(10_000 + teacher_seed)
    mix = teacher.normal(size=(rank, dim)) / np.sqrt(rank)
    offset = teacher.normal(size=dim) * 0.5
    feats = fields @ mix + offset + noise * rng.normal(size=(n_images, h, w, dim))
    return feats.astype(np.float16)


def synthetic_record(
    scene_id: str,
    *,
    split: str | None = "train",
    n_points: int = 200,
    n_full: int = 500,
    n_images: int = 4,
    grid_hw: tuple[int, int] = (6, 8),
    dim: int = 16,
    num_classes: int = 5,
    corr_per_image: int = 40,
    seed: int = 0,
) -> SceneRecord:
    """A self-consistent scene: every array of the documented dtype, CSR offsets, uv in grid."""
    rng = np.random.default_rng(seed)
    h, w = grid_hw
    counts = rng.integers(0, 2 * corr_per_image + 1, n_images) * (n_points > 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    m = int(offsets[-1])
    c2w = np.tile(np.eye(4, dtype=np.float32), (n_images, 1, 1))
    c2w[:, :3, 3] = rng.normal(size=(n_images, 3))
    K = np.tile(np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1]], np.float32), (n_images, 1, 1))
    return SceneRecord(
        scene_id=scene_id,
        split=split,
        xyz=rng.uniform(-3, 3, (n_points, 3)).astype(np.float32),
        rgb=rng.integers(0, 256, (n_points, 3), dtype=np.uint8),
        label=rng.integers(-1, num_classes, n_points).astype(np.int16),
        voxel_of_point=rng.integers(0, max(n_points, 1), n_full if n_points else 0).astype(
            np.int32
        ),
        full_label=rng.integers(-1, num_classes, n_full if n_points else 0).astype(np.int16),
        features=smooth_features(n_images, h, w, dim, seed=seed),
        K=K,
        c2w=c2w,
        image_size=np.tile(np.array([640, 480], np.int32), (n_images, 1)),
        image_names=[f"frame_{i:05d}.jpg" for i in range(n_images)],
        corr_point=rng.integers(0, max(n_points, 1), m).astype(np.int32),
        corr_image=np.repeat(np.arange(n_images), counts).astype(np.int16),
        corr_uv=(rng.random((m, 2)) * [w - 1, h - 1]).astype(np.float32),
        corr_offsets=offsets,
        attrs={"source_files": [f"{scene_id}.ply"], "frames_seed": seed},
    )


def synthetic_meta(**overrides: object) -> CacheMeta:
    """A CacheMeta for a 5-class toy dataset and a tiny teacher; override any field."""
    fields = {
        "dataset": "synthetic",
        "voxel_size": 0.04,
        "image_policy": {"max_images": 50, "selection": "all"},
        "teacher": {"name": "vit_tiny_test", "sha256": None, "patch_size": 14, "feature_dim": 16},
        "label_set": "toy5",
        "class_names": ("floor", "wall", "chair", "table", "other"),
    }
    fields.update(overrides)
    return CacheMeta(**fields)


def write_synthetic_scenes(
    url: str, scene_ids: list[str], seed: int = 0, barrier: Any | None = None
) -> None:
    """Open the cache at ``url`` and write one synthetic scene per id (a worker's job).

    Module-level so a spawned process can run it; ``barrier`` (a multiprocessing Barrier)
    makes concurrent writers start together.
    """
    from tttkd.pipeline.cache.store import Cache

    cache = Cache.open(url)
    if barrier is not None:
        barrier.wait(timeout=60)
    for i, sid in enumerate(scene_ids):
        cache.write_scene(synthetic_record(sid, seed=seed + i, n_images=6))
