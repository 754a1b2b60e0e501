"""One small real cache and checkpoints per test session, shared by tests/adapt.

The cache is built by the real prep (synthetic ScanNet rooms in the exact on-disk format,
the real reader, the tiny DINOv2-style test teacher, a Zarr store on disk). The checkpoint is
a tiny MinkUNet trained jointly (segmentation + distillation) for a few steps on the
cache's train split and saved with ``model.checkpoint.save_checkpoint``; a second one with
the S3DIS label set serves the cross-dataset evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

VOXEL = 0.15
TRAIN_STEPS = 12


@dataclass(frozen=True)
class AdaptFixture:
    cache: str
    checkpoint: Path
    s3dis_checkpoint: Path
    val_scenes: tuple[str, ...]
    all_scenes: tuple[str, ...]


def _build_cache(root: Path, out: Path) -> None:
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    write_scannet_dataset(
        root,
        5,
        frames=("25k",),
        splits=["train"] * 2 + ["val"] * 3,
        image_size=(96, 72),
        views=3,
        domain=Domain(spacing=0.15),
    )
    cfg = PrepConfig(
        dataset="scannet",
        root=str(root),
        out=str(out),
        teacher="test_vit_tiny",
        image_size=56,
        voxel_size=VOXEL,
        reader_options={"frames": "25k"},
    )
    report = run_prep(cfg, progress=False, echo=lambda s: None)
    assert report.exit_code == 0 and len(report.done) == 5


def _train_tiny(url: str, steps: int) -> torch.nn.Module:
    """A few joint steps (L_Y + L_2D, AdamW) on the train split: a source model that is
    better than random, so adaptation has something to keep or lose."""
    from tttkd.model.config import AugmentConfig
    from tttkd.model.data import CacheSceneDataset, collate_items
    from tttkd.model.losses import distillation_loss, segmentation_loss
    from tttkd.model.minkunet import minkunet_test
    from tttkd.model.network import KDHeadConfig, SegKDNet

    torch.manual_seed(0)
    net = SegKDNet(minkunet_test(in_channels=3), 20, 32, KDHeadConfig(hidden=32))
    ds = CacheSceneDataset(
        url,
        "train",
        voxel_size=VOXEL,
        train=True,
        augment_cfg=AugmentConfig(enabled=False),
        max_images=0,
    )
    items = collate_items([ds[i] for i in range(len(ds))])
    batch = items.batch
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    net.train()
    ctx = net.context(batch.coords)
    for _ in range(steps):
        logits, kd = net(batch, ctx)
        loss = segmentation_loss(logits[batch.point_to_voxel], items.point_labels)
        loss = loss + distillation_loss(
            kd, batch.teacher_maps, batch.corr_point, batch.corr_image, batch.corr_uv
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread for tests/adapt: bitwise comparisons need it (with 2+ threads float
    sums may split differently between runs, ~1e-7) and on a busy 2-core box it is faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def adapt_fixture(tmp_path_factory) -> AdaptFixture:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _make_fixture(tmp_path_factory)
    finally:
        torch.set_num_threads(threads)


def _make_fixture(tmp_path_factory) -> AdaptFixture:
    from tttkd.core import get_label_set
    from tttkd.model.checkpoint import save_checkpoint
    from tttkd.model.minkunet import minkunet_test
    from tttkd.model.network import KDHeadConfig, SegKDNet
    from tttkd.pipeline.cache import Cache

    base = tmp_path_factory.mktemp("adapt")
    url = str(base / "feats.zarr")
    _build_cache(base / "scannet", Path(url))
    cache = Cache.open(url, read_only=True)
    net = _train_tiny(url, TRAIN_STEPS)
    ckpt = base / "tiny.safetensors"
    save_checkpoint(
        ckpt,
        net,
        label_set="scannet20",
        class_names=cache.meta.class_names,
        teacher_spec=cache.meta.teacher,
        config={"fixture": "tests/adapt"},
    )
    torch.manual_seed(1)
    s3dis = get_label_set("s3dis13")
    other = SegKDNet(minkunet_test(in_channels=3), s3dis.num_classes, 32, KDHeadConfig(hidden=32))
    s3dis_ckpt = base / "tiny_s3dis.safetensors"
    save_checkpoint(
        s3dis_ckpt,
        other.eval(),
        label_set="s3dis13",
        class_names=s3dis.class_names,
        teacher_spec=cache.meta.teacher,
        config={"fixture": "tests/adapt"},
    )
    return AdaptFixture(
        cache=url,
        checkpoint=ckpt,
        s3dis_checkpoint=s3dis_ckpt,
        val_scenes=tuple(cache.scene_ids("val")),
        all_scenes=tuple(cache.scene_ids()),
    )


@pytest.fixture
def scene_and_net(adapt_fixture):
    """The first val scene (CPU, torch backend, every image, seed 0) and the tiny
    checkpoint's network, freshly loaded and in eval mode."""
    from tttkd.adapt.scenes import load_scene
    from tttkd.model.checkpoint import load_checkpoint
    from tttkd.pipeline.cache import Cache

    net, _ = load_checkpoint(adapt_fixture.checkpoint)
    cache = Cache.open(adapt_fixture.cache, read_only=True)
    scene = load_scene(
        cache, adapt_fixture.val_scenes[0], device="cpu", backend="torch", max_images=None, seed=0
    )
    return scene, net.eval()
