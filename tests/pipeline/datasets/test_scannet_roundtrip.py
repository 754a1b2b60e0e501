"""ScanNet v2: scenes written in the exact formats by the synthetic writer read back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tttkd.core import project
from tttkd.pipeline.datasets import scannet
from tttkd.pipeline.datasets.scannet_sens import read_sens_index
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.render import Camera, render
from tttkd.synthetic.scannet_writer import write_scannet_dataset

STEP = 4  # .sens frames per key frame in these fixtures (real ScanNet subsamples every 100th)
SOURCES = ("25k", "exported", "sens")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet")
    truths = write_scannet_dataset(
        root,
        3,
        seed=3,
        domain=Domain(spacing=0.08),
        splits=["train", "val", "test"],
        views=3,
        frame_step=STEP,
    )
    return root, {t.scene_id: t for t in truths}


def _load(root, sid, source, **kw):
    stride = None if source == "25k" else STEP
    return scannet.load_scene(root, sid, frames=source, frame_stride=stride, **kw)


def test_list_scenes_and_splits(dataset) -> None:
    root, truths = dataset
    assert scannet.list_scenes(root) == sorted(truths)
    for split in ("train", "val", "test"):
        assert scannet.list_scenes(root, split) == [t for t in truths if truths[t].split == split]
    assert scannet.list_scenes(root, "train", existing_only=True) == ["scene0000_00"]


def test_points_colours_and_labels_exact(dataset) -> None:
    root, truths = dataset
    for sid, t in truths.items():
        s = scannet.load_scene(root, sid, frames=None)
        assert (s.id, s.dataset, s.split, s.label_set) == (sid, "scannet", t.split, "scannet20")
        np.testing.assert_array_equal(s.xyz, t.xyz)
        np.testing.assert_array_equal(s.rgb, t.rgb)
        np.testing.assert_array_equal(s.label, t.label)
        assert s.frames == []
    train = truths["scene0000_00"]
    # unannotated segment and the ceiling (nyu40 22, not a benchmark class) are ignored
    assert (train.label == -1).sum() > (train.nyu40 == 0).sum() > 0
    assert len(np.unique(train.label)) >= 6
    assert (truths["scene0707_00"].label == -1).all()


@pytest.mark.parametrize("source", SOURCES)
def test_frames_round_trip(dataset, source) -> None:
    root, truths = dataset
    t = truths["scene0000_00"]
    s = _load(root, t.scene_id, source)
    want = t.valid_frames
    assert [f.name for f in s.frames] == [g.name for g in want]
    assert len(want) == len(t.frames) - 1, "the -inf key frame is skipped"
    for f, g in zip(s.frames, want):
        size = g.size_25k if source == "25k" else (g.width, g.height)
        assert (f.width, f.height) == size
        np.testing.assert_allclose(f.K, g.K_25k if source == "25k" else g.K, atol=1e-5)
        np.testing.assert_allclose(f.c2w, g.c2w, atol=1e-5)
        np.testing.assert_allclose(f.depth_K, g.depth_K, atol=1e-5)
        depth = f.load_depth()
        np.testing.assert_array_equal(np.round(depth * f.depth_scale).astype(np.uint16), g.depth_mm)
        color = f.load_color().astype(int)
        err = np.abs(color - (g.color_25k if source == "25k" else g.color))
        assert err.mean() < 4 and np.percentile(err, 99) < 48  # JPEG q95


def test_sources_agree_and_auto_prefers_25k(dataset) -> None:
    root, _ = dataset
    poses = {src: [f.c2w for f in _load(root, "scene0000_00", src).frames] for src in SOURCES}
    for src in SOURCES[1:]:
        np.testing.assert_allclose(np.stack(poses[src]), np.stack(poses["25k"]), atol=1e-5)
    auto = scannet.load_scene(root, "scene0000_00")
    assert (auto.frames[0].width, auto.frames[0].height) == (80, 60)
    # a test scan has no 25k subset: auto falls back to the export in the scan folder
    test_scene = scannet.load_scene(root, "scene0707_00", frame_stride=STEP)
    assert [f.name for f in test_scene.frames] == ["000000", "000008", "000012"]


def test_default_stride_is_every_100th_sens_frame(dataset) -> None:
    root, _ = dataset
    s = scannet.load_scene(root, "scene0001_00", frames="sens")
    assert [f.name for f in s.frames] == ["000000"]  # frames 0..15; frame 4 is -inf anyway


def _box_sdf(room, p: np.ndarray) -> np.ndarray:
    """Distance of each point to the nearest box surface of the room."""
    best = np.full(len(p), np.inf)
    for b in room.boxes:
        q = np.abs(p - (np.add(b.lo, b.hi) / 2)) - (np.subtract(b.hi, b.lo) / 2)
        outside = np.linalg.norm(np.maximum(q, 0), axis=1)
        sdf = outside + np.minimum(q.max(1), 0)
        best = np.minimum(best, np.abs(sdf))
    return best


@pytest.mark.parametrize("source", ["25k", "sens"])
def test_projection_lands_on_the_rendered_pixel(dataset, source) -> None:
    root, truths = dataset
    t = truths["scene0001_00"]
    aligned = _load(root, t.scene_id, source, align=True)
    raw = _load(root, t.scene_id, source)
    np.testing.assert_allclose(aligned.xyz, t.xyz_aligned, atol=1e-5)
    for fa, fr, g in zip(aligned.frames, raw.frames, t.valid_frames):
        np.testing.assert_allclose(fa.c2w, g.c2w_aligned, atol=1e-5)
        # pixel centres back-projected with the truth camera project back onto themselves
        K_true = g.K_25k if source == "25k" else g.K
        _, depth, box_px = render(t.room, Camera(K_true, g.c2w_aligned, fa.width, fa.height))
        v, u = np.mgrid[0 : fa.height, 0 : fa.width]
        cam = np.stack([(u - K_true[0, 2]) / K_true[0, 0], (v - K_true[1, 2]) / K_true[1, 1]], -1)
        pc = np.concatenate([cam * depth[..., None], depth[..., None]], -1).reshape(-1, 3)
        world = pc @ g.c2w_aligned[:3, :3].T + g.c2w_aligned[:3, 3]
        uv, _ = project(world, fa.K, fa.c2w)
        np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], 1), atol=0.01)
        # the scene's points project identically with and without axisAlignment; a visible
        # point lands within 0.5 px of a pixel that shows its own box
        uv_a, z_a = project(aligned.xyz, fa.K, fa.c2w)
        uv_r, z_r = project(raw.xyz, fr.K, fr.c2w)
        front = (z_a > 0.1) & (np.abs(uv_a - [fa.width / 2, fa.height / 2]) < fa.width).all(1)
        np.testing.assert_allclose(z_a, z_r, atol=1e-5)
        np.testing.assert_allclose(uv_a[front], uv_r[front], atol=1e-3)
        ui, vi = np.round(uv_a).astype(int).T
        inside = (z_a > 0) & (ui >= 0) & (ui < fa.width) & (vi >= 0) & (vi < fa.height)
        d = np.zeros(len(z_a))
        d[inside] = depth[vi[inside], ui[inside]]
        vis = inside & (np.abs(d - z_a) < 0.02)
        assert vis.sum() > 100
        assert np.abs(uv_a[vis] - np.stack([ui[vis], vi[vis]], 1)).max() <= 0.5
        assert (box_px[vi[vis], ui[vis]] == t.box_index[vis]).mean() > 0.97
        # depth pixels, back-projected with the reader's depth_K and pose, lie on the room
        dm = fa.load_depth()
        dv, du = np.nonzero(dm > 0)
        Kd = fa.depth_K
        z = dm[dv, du].astype(np.float64)
        pcd = np.stack([(du - Kd[0, 2]) / Kd[0, 0] * z, (dv - Kd[1, 2]) / Kd[1, 1] * z, z], 1)
        wd = pcd @ fa.c2w[:3, :3].T + fa.c2w[:3, 3]
        assert np.percentile(_box_sdf(t.room, wd), 99) < 2e-3


def test_written_alignment_is_a_real_transform(dataset) -> None:
    root, truths = dataset
    assert truths["scene0707_00"].axis_alignment is None
    a = truths["scene0000_00"].axis_alignment
    assert not np.allclose(a[:3, :3], np.eye(3)) and np.abs(a[:3, 3]).max() > 0


def test_sens_layout_matches_the_format_reference(dataset) -> None:
    root, truths = dataset
    path = root / "scans" / "scene0000_00" / "scene0000_00.sens"
    idx = read_sens_index(path)
    name_len = len(idx.sensor_name)
    assert idx.color_offset[0] == 296 + name_len + 8 + 96  # header, num_frames, frame header
    assert (idx.color_compression, idx.depth_compression) == ("jpeg", "zlib_ushort")
    sizes = (idx.color_width, idx.color_height, idx.depth_width, idx.depth_height)
    assert sizes == (162, 121, 80, 60)
    assert idx.depth_shift == 1000.0 and idx.num_frames == 4 * STEP
    finite = np.isfinite(idx.camera_to_world).all((1, 2))
    assert (~finite).nonzero()[0].tolist() == list(range(STEP, 2 * STEP))
    # after the last frame: a uint64 IMU count of 0 and nothing else
    end = int(idx.depth_offset[-1] + idx.depth_length[-1])
    assert path.stat().st_size == end + 8 and path.read_bytes()[end:] == bytes(8)
    meta = scannet.read_meta(path.with_suffix(".txt"), "scene0000_00")
    assert list(meta) == sorted(meta) and meta["numColorFrames"] == str(4 * STEP + 1)
