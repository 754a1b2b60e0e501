"""The prep stages' pure parts: teacher tasks cut across scenes, batch-independent features,
the local cluster's worker layout (one teacher per GPU, whatever the CPU workers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tttkd.pipeline.cluster import CPU, GPU, worker_specs
from tttkd.pipeline.prep_batching import Batcher, Piece
from tttkd.pipeline.teacher import auto_batch_size, grid_size, load_teacher


def test_batcher_cuts_tasks_across_scenes_one_shape_each():
    b = Batcher(4)
    assert b.add(0, 3, (48, 64, 3)) == []
    assert b.add(1, 2, (40, 30, 3)) == []  # another size: its own task
    full = b.add(2, 6, (48, 64, 3))
    assert full == [
        [Piece(0, 0, 3), Piece(2, 0, 1)],
        [Piece(2, 1, 5)],
    ]
    assert b.pieces_of == {0: 1, 1: 1, 2: 3}
    assert sorted(b.flush(), key=len) == [[Piece(1, 0, 2)], [Piece(2, 5, 6)]]
    assert b.flush() == []
    with pytest.raises(ValueError, match="size"):
        Batcher(0)


def test_features_do_not_depend_on_batch_mates_and_come_out_fp16():
    torch.set_num_threads(1)
    t = load_teacher("test_vit_tiny", image_size=28, batch_size=4)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(7)]
    alone = np.concatenate([t.encode([im]).numpy() for im in imgs])
    mixed = t.encode(imgs[3:] + imgs[:3]).numpy()  # other batch-mates, other positions
    np.testing.assert_array_equal(np.concatenate([mixed[4:], mixed[:4]]), alone)
    padded = t.encode(imgs[:2], pad_batches=True).numpy()  # the CUDA default, here on CPU
    np.testing.assert_array_equal(padded, alone[:2])
    half = t.encode(imgs[:2], out_dtype=torch.float16)
    assert half.dtype == torch.float16
    np.testing.assert_array_equal(half.numpy(), alone[:2].astype(np.float16))
    assert grid_size(t.spec, 48, 64) == t.grid_size(48, 64) == (2, 3)
    assert auto_batch_size(t.spec, torch.device("cpu"), (48, 64)) == 8


@pytest.mark.parametrize("workers, gpus", [(1, 0), (3, 0), (4, 2)])
def test_local_cluster_has_one_teacher_worker_per_gpu(workers, gpus):
    specs = worker_specs(workers, gpus, memory_limit="1GB")
    cpu = [s["options"] for s in specs.values() if s["options"]["resources"] == {CPU: 1}]
    teachers = [s["options"] for s in specs.values() if s["options"]["resources"] == {GPU: 1}]
    assert (
        len(cpu) == workers
        and len(teachers) == max(gpus, 1)
        and len(specs) == len(cpu) + len(teachers)
    )
    assert all(o["env"]["CUDA_VISIBLE_DEVICES"] == "" for o in cpu)  # CPU workers see no GPU
    visible = [o["env"]["CUDA_VISIBLE_DEVICES"] for o in teachers]
    assert visible == ([str(g) for g in range(gpus)] if gpus else [""])  # one device each
    assert all(o["host"] == "127.0.0.1" and o["nthreads"] == 1 for o in cpu + teachers)
    with pytest.raises(ValueError):
        worker_specs(0, 1)


def test_expected_hours_are_bound_by_the_slower_stage():
    from tttkd.pipeline.dry_run import estimate_hours

    # points only: 3600 scenes at 2 s each on 4 workers = 0.5 h
    e = estimate_hours(3600, 0, 2.0, None, [], workers=4)
    assert e["scenes_per_s"] == 2.0 and e["hours"] == 0.5 and "CPU stage (4 worker" in e["text"]
    t = load_teacher("test_vit_tiny", image_size=28)
    imgs = [np.zeros((48, 64, 3), np.uint8)] * 4
    e = estimate_hours(1, 1e9, 1.0, t, imgs, workers=1)  # a billion images: the teacher bounds
    assert 0 < e["images_per_s"] < 1e7 and "bound by the teacher" in e["text"]
    assert e["hours"] == pytest.approx(1e9 / e["images_per_s"] / 3600)


def test_teacher_attention_is_pytorch_sdpa():
    """timm's fused path calls F.scaled_dot_product_attention (flash kernels on CUDA)."""
    t = load_teacher("test_vit_tiny", image_size=28)
    assert all(block.attn.fused_attn for block in t.module.vit.blocks)


def test_a_teacher_task_recomputed_after_its_scene_completed_is_not_a_failure():
    """Dask recomputes lost tasks from their lineage: when a killed worker held a scene's
    images after the scene was written, the CPU stage re-runs, finds the scene complete and
    has no images. The recomputed teacher task must pass that on (the write then says
    "skipped"), not fail the scene with a TypeError (CI saw this once in the SIGKILL test)."""
    from types import SimpleNamespace

    from tttkd.pipeline.prep_dask import encode_slices
    from tttkd.pipeline.prep_scene import PreparedScene, SceneResult, images_of, write_prepared

    done = SceneResult("scene0001_00", "skipped", "complete already")
    prep = PreparedScene(SimpleNamespace(scene_id="scene0001_00"), result=done)
    pieces = encode_slices(prep.job, [(images_of(prep), 0, 4)])
    assert len(pieces) == 1 and len(pieces[0].features) == 0
    assert write_prepared(prep, pieces) == done


def test_local_clusters_run_with_quiet_housekeeping_unless_the_user_set_it(monkeypatch):
    """An idle local cluster must not eat the cores its work needs (Dask's 10 ms profiler and
    20 ms tick: a fifth of a core for 2 idle workers); a value the user chose is kept."""
    import dask

    from tttkd.pipeline.cluster import QUIET_SETTINGS, Cluster, quiet_settings

    assert quiet_settings() == {k: ours for k, (_, ours) in QUIET_SETTINGS.items()}
    with dask.config.set({"distributed.admin.tick.interval": "50ms"}):
        assert "distributed.admin.tick.interval" not in quiet_settings()
    assert "distributed.worker.profile.enabled" not in quiet_settings(dashboard=True)
    keys = list(QUIET_SETTINGS)
    with Cluster(1, cpu_teacher=False, echo=lambda _: None) as c:
        seen = c.client.run(lambda: [dask.config.get(k) for k in keys])
        tick = c.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval)
    assert list(seen.values()) == [[QUIET_SETTINGS[k][1] for k in keys]]
    assert tick == 0.2  # seconds: the scheduler (in this process) read it when it started
    assert dask.config.get("distributed.admin.tick.interval") == "20ms"  # ours only there
