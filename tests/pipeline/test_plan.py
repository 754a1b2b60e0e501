"""The plan (pure, no Dask), the prep configuration, frame selection and size estimates.

The executors end to end are in ``test_run_serial.py``, ``test_run_dask.py`` and
``test_run_kill.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tttkd.core import Frame, ImageRef
from tttkd.pipeline.frames import ImagePolicy, frame_problem, select_frames
from tttkd.pipeline.plan import PrepConfig, estimate_scene_bytes, make_plan


def cfg(**kw) -> PrepConfig:
    return PrepConfig(**{"dataset": "scannet", "root": "/data", "out": "/x.zarr", **kw})


# ---- the plan, pure -----------------------------------------------------------------------
def test_plan_skips_complete_keeps_order_and_carries_config():
    c = cfg(voxel_size=0.05)
    p = make_plan(c, ["s2", "s0", "s1"], {"s0"}, teacher_spec={"name": "t"}, run_id="r1")
    assert p.scene_ids == ["s2", "s1"] and p.skipped == ["s0"]
    assert all(
        j.config is c and j.teacher_spec == {"name": "t"} and j.run_id == "r1" for j in p.jobs
    )
    assert make_plan(c, [], set()).jobs == []


def test_plan_scene_subset_and_errors():
    p = make_plan(cfg(scenes=("s1", "s3")), ["s1", "s2", "s3"], {"s3"})
    assert p.scene_ids == ["s1"] and p.skipped == ["s3"]
    with pytest.raises(ValueError, match="not found"):
        make_plan(cfg(scenes=("s9",)), ["s1"], set())
    with pytest.raises(ValueError, match="twice"):
        make_plan(cfg(), ["s1", "s1"], set())


def test_config_validation_and_image_policy():
    with pytest.raises(ValueError, match="unknown dataset"):
        cfg(dataset="kitti")
    with pytest.raises(ValueError, match="voxel_size"):
        cfg(voxel_size=0)
    with pytest.raises(ValueError, match="max_images"):
        cfg(max_images=-1)
    assert cfg().image_policy() == ImagePolicy(None, 0)  # ScanNet: every frame (25k subset)
    assert cfg(dataset="s3dis").image_policy() == ImagePolicy(50, 0)
    assert cfg(dataset="s3dis", max_images=0).image_policy().max_images is None
    assert cfg(max_images=5, seed=3).image_policy() == ImagePolicy(5, 3)
    rec = cfg(dataset="matterport3d", depth_abs_tol=0.1).image_policy_record()
    assert rec["selection"] == "random" and rec["max_images"] == 50
    assert rec["correspondence"]["depth_abs_tol"] == 0.1
    assert cfg(no_images=True).image_policy_record() == {"selection": "none", "no_images": True}
    assert cfg(no_images=True).load_options() == {"frames": None}
    # tttkd-prep --frames none reaches the reader as frames=None (no DeprecationWarning)
    assert cfg(reader_options={"frames": "none"}).load_options() == {"frames": None}


def _frame(name: str, c2w: np.ndarray | None = None) -> Frame:
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    return Frame(name, K, np.eye(4) if c2w is None else c2w, 64, 48, ImageRef("none.jpg"))


def test_select_frames_seeded_recorded_and_order_kept():
    frames = [_frame(f"{i:03d}") for i in range(80)]
    frames[5] = _frame("bad", np.full((4, 4), np.inf))
    frames[6] = _frame("flat", np.diag([1.0, 1.0, 0.0, 1.0]))
    pol = ImagePolicy(max_images=10, seed=7)
    a = select_frames(frames, pol, "sceneA")
    assert len(a.frames) == 10 and a.names == sorted(a.names)
    assert a.dropped == [("bad", "non-finite camera pose"), ("flat", "singular camera pose")]
    assert a.to_dict()["selected"] == a.names and a.available == 80
    assert select_frames(frames, pol, "sceneA").names == a.names  # seeded
    assert select_frames(frames, pol, "sceneB").names != a.names  # per scene
    assert select_frames(frames, ImagePolicy(10, 8), "sceneA").names != a.names
    assert len(select_frames(frames, ImagePolicy(None), "x").frames) == 78
    assert frame_problem(_frame("ok")) is None


def test_estimate_scene_bytes():
    b = estimate_scene_bytes(
        full_points=1000, voxels=100, images=2, pairs=50, grid_hw=(3, 4), dim=8
    )
    assert b == 100 * 17 + 1000 * 6 + 50 * 14 + 2 * 116 + 2 * 3 * 4 * 8 * 2
