"""collate shifts every index by the right offsets."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.batch import Sample, collate


def _sample(n: int, n_img: int, seed: int) -> Sample:
    g = torch.Generator().manual_seed(seed)
    return Sample(
        coords=torch.randint(0, 50, (n, 3), generator=g).int(),
        feats=torch.randn(n, 3, generator=g),
        labels=torch.randint(-1, 4, (n,), generator=g),
        point_to_voxel=torch.randint(0, n, (2 * n,), generator=g),
        corr_point=torch.arange(n) % n,
        corr_image=torch.arange(n) % n_img,
        corr_uv=torch.rand(n, 2, generator=g),
        teacher_maps=[torch.full((2, 3, 4), float(seed * 10 + i)) for i in range(n_img)],
        scene_id=f"s{seed}",
    )


def test_collate_offsets_every_index():
    a, b = _sample(5, 2, 1), _sample(7, 3, 2)
    batch = collate([a, b])
    assert batch.coords.dtype == torch.int32 and batch.coords.shape == (12, 4)
    assert batch.coords[:5, 0].eq(0).all() and batch.coords[5:, 0].eq(1).all()
    assert torch.equal(batch.coords[5:, 1:], b.coords)
    assert batch.offsets.tolist() == [0, 5, 12]
    assert batch.image_offsets.tolist() == [0, 2, 5]
    assert batch.point_offsets.tolist() == [0, 10, 24]
    assert torch.equal(batch.point_to_voxel[10:], b.point_to_voxel + 5)
    assert torch.equal(batch.corr_point[5:], b.corr_point + 5)
    assert torch.equal(batch.corr_image[5:], b.corr_image + 2)
    # a pair still names the same teacher map after the shift
    m = 5 + 4
    assert batch.teacher_maps[int(batch.corr_image[m])][0, 0, 0] == 20 + int(b.corr_image[4])
    assert batch.scene_ids == ["s1", "s2"] and batch.batch_size == 2
    moved = batch.to("cpu")
    assert moved is not batch and torch.equal(moved.feats, batch.feats)


def test_collate_refuses_mixed_and_bad_samples():
    a = _sample(4, 1, 1)
    b = Sample(coords=torch.zeros(2, 3, dtype=torch.int32), feats=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="some samples have labels"):
        collate([a, b])
    with pytest.raises(ValueError, match="teacher maps"):
        Sample(
            coords=torch.zeros(1, 3, dtype=torch.int32),
            feats=torch.zeros(1, 3),
            corr_point=torch.tensor([0]),
            corr_image=torch.tensor([1]),
            corr_uv=torch.zeros(1, 2),
            teacher_maps=[torch.zeros(1, 1, 2)],
        )
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        Sample(coords=torch.zeros(2, 4, dtype=torch.int32), feats=torch.zeros(2, 3))
