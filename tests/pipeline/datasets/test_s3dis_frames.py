"""2D-3D-S frames of S3DIS rooms: intrinsics, poses (area_5b, aligned frame), projection."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tttkd.core import DatasetError, get_label_set, project
from tttkd.pipeline.datasets import s3dis
from tttkd.pipeline.datasets.stanford2d3ds import AREA_5B_TO_5A
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.render import render
from tttkd.synthetic.s3dis_writer import (
    ALIGNED_DIR,
    S3DISGroundTruth,
    S3DISRoomTruth,
    write_s3dis_dataset,
)

SIZE = 96


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> S3DISGroundTruth:
    root = tmp_path_factory.mktemp("s3dis_frames")
    return write_s3dis_dataset(
        root, 4, views=4, image_size=(SIZE, SIZE), areas=(1, 5), domain=Domain(spacing=0.08)
    )


def _truth_c2w(truth: S3DISRoomTruth, name: str, version: str) -> np.ndarray:
    f = next(f for f in truth.frames if f.name == name)
    return f.c2w_aligned if version == "aligned" else f.c2w_raw


@pytest.mark.parametrize("version", ["aligned", "raw"])
def test_frames_round_trip(data: S3DISGroundTruth, version: str) -> None:
    area_dirs = set()
    for scene_id, truth in data.rooms.items():
        scene = s3dis.load_scene(data.root, scene_id, version=version)
        assert sorted(f.name for f in scene.frames) == sorted(f.name for f in truth.frames)
        for frame in scene.frames:
            t = next(f for f in truth.frames if f.name == frame.name)
            area_dirs.add(t.area_dir)
            assert (frame.width, frame.height) == (SIZE, SIZE)
            np.testing.assert_allclose(frame.K, t.K, atol=1e-9)
            assert frame.K[0, 2] == (SIZE - 1) / 2  # Blender's cx = W/2 moved to pixel centres
            np.testing.assert_allclose(frame.c2w, _truth_c2w(truth, frame.name, version), atol=1e-4)
            assert frame.depth_scale == 512.0 and 65535 in frame.depth_invalid
    assert {"area_1", "area_5a", "area_5b"} <= area_dirs


def test_area_5b_poses_are_stored_in_their_own_frame(data: S3DISGroundTruth) -> None:
    truth = data.rooms["Area_5/office_1"]
    f = next(f for f in truth.frames if f.area_dir == "area_5b")
    pose = json.loads(
        (data.root / "area_5b" / "data" / "pose" / f"{f.name}_domain_pose.json").read_text()
    )
    w2c = np.eye(4)
    w2c[:3] = np.asarray(pose["camera_rt_matrix"])
    c2w_5b = np.linalg.inv(w2c)
    np.testing.assert_allclose(AREA_5B_TO_5A @ c2w_5b, f.c2w_raw, atol=1e-9)
    assert np.abs(c2w_5b[:3, 3] - f.c2w_raw[:3, 3]).max() > 1.0  # the transform matters
    # R @ camera_location + t = 0 (Blender recipe), and K follows Blender (cx = W/2)
    np.testing.assert_allclose(w2c[:3, :3] @ pose["camera_location"] + w2c[:3, 3], 0, atol=1e-9)
    assert pose["camera_k_matrix"][0][2] == SIZE / 2


def test_images_and_depth_match_the_geometry(data: S3DISGroundTruth) -> None:
    truth = data.rooms["Area_5/copyRoom_1"]
    scene = s3dis.load_scene(data.root, truth.scene_id)
    for frame in scene.frames:
        t = next(f for f in truth.frames if f.name == frame.name)
        rgb, depth, _ = render(truth.room, t.camera)
        np.testing.assert_array_equal(frame.load_color(), rgb)
        got = frame.load_depth()
        holes = got == 0
        assert 0.002 < holes.mean() < 0.05  # the 65535 sentinels became "missing"
        assert np.abs(got[~holes] - depth[~holes]).max() <= 0.5 / 512 + 1e-6


@pytest.mark.parametrize("version", ["aligned", "raw"])
def test_visible_points_project_to_their_pixel(data: S3DISGroundTruth, version: str) -> None:
    """Ray-cast the true surface point of each pixel, move it into the version's frame, and
    project it with the reader's K and c2w: it must land on its pixel (within 0.5 px)."""
    for scene_id, truth in data.rooms.items():
        scene = s3dis.load_scene(data.root, scene_id, version=version)
        to_version = truth.raw_from_local
        if version == "aligned":
            to_version = truth.aligned_from_raw @ truth.raw_from_local
        for frame in scene.frames:
            cam = next(f for f in truth.frames if f.name == frame.name).camera
            _, depth, _ = render(truth.room, cam)
            v, u = np.mgrid[0:SIZE:3, 0:SIZE:3].reshape(2, -1)
            z = depth[v, u].astype(np.float64)
            ray = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1]], 1)
            p_cam = np.concatenate([ray * z[:, None], z[:, None]], axis=1)
            p_local = p_cam @ cam.c2w[:3, :3].T + cam.c2w[:3, 3]
            p = p_local @ to_version[:3, :3].T + to_version[:3, 3]
            uv, zz = project(p, frame.K, frame.c2w)
            err = np.linalg.norm(uv - np.stack([u, v], 1), axis=1)
            assert err.max() < 0.5, (scene_id, frame.name, err.max())
            assert err.max() < 1e-3  # exact up to float rounding
            np.testing.assert_allclose(zz, z, atol=1e-6)


@pytest.mark.parametrize("version", ["aligned", "raw"])
def test_scene_points_agree_with_depth_and_classes(data: S3DISGroundTruth, version: str) -> None:
    """The reader's own points, projected with its own frames, pass the depth test and land on
    pixels that show their class."""
    for scene_id, truth in data.rooms.items():
        scene = s3dis.load_scene(data.root, scene_id, version=version)
        counts = np.array([s3dis.depth_agreement(scene.xyz, f) for f in scene.frames])
        # occluded points in view fail legitimately (one camera faces a box 25 cm away)
        assert counts[:, 1].min() > 1000 and counts[:, 0].sum() > 0.4 * counts[:, 1].sum()
        for frame in scene.frames:
            cam = next(f for f in truth.frames if f.name == frame.name).camera
            _, _, box = render(truth.room, cam)
            cls = np.array([b.class_name for b in truth.room.boxes])
            uv, z = project(scene.xyz, frame.K, frame.c2w)
            ui, vi = np.round(uv).astype(int).T
            inside = (z > 0) & (ui >= 0) & (ui < SIZE) & (vi >= 0) & (vi < SIZE)
            d = frame.load_depth()
            vis = np.zeros(len(z), bool)
            vis[inside] = np.abs(d[vi[inside], ui[inside]] - z[inside]) < 0.01
            names = np.array(get_label_set("s3dis13").class_names)[scene.label[vis]]
            shown = cls[box[vi[vis], ui[vis]]]
            shown = np.where(shown == "stairs", "clutter", shown)
            assert (names == shown).mean() > 0.97


def test_alignment_direction(data: S3DISGroundTruth) -> None:
    scene_id = "Area_1/office_1"  # theta = 90: the two directions differ
    truth = data.rooms[scene_id]
    assert truth.theta == 90
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto keeps the documented direction silently
        auto = s3dis.load_scene(data.root, scene_id)
    inverse = s3dis.load_scene(data.root, scene_id, align_direction="inverse")
    for a, b in zip(auto.frames, inverse.frames):
        np.testing.assert_allclose(a.c2w, _truth_c2w(truth, a.name, "aligned"), atol=1e-4)
        assert np.abs(a.c2w[:3, 3] - b.c2w[:3, 3]).max() > 0.5
    # theta = 0 and 180: both directions agree, nothing to choose
    c = np.array([1.0, 2.0, 3.0])
    for theta in (0, 180):
        doc = s3dis.aligned_from_raw(theta, c, "documented")
        np.testing.assert_array_equal(doc, s3dis.aligned_from_raw(theta, c, "inverse"))
    np.testing.assert_array_equal(
        s3dis.aligned_from_raw(90, c, "documented")[:3, :3], [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]
    )


def test_auto_direction_falls_back_when_the_data_says_so(
    data: S3DISGroundTruth, tmp_path: Path
) -> None:
    """If the Aligned clouds had been turned the other way, auto must notice and follow."""
    scene_id = "Area_1/office_1"
    truth = data.rooms[scene_id]
    root = tmp_path / "flipped"
    shutil.copytree(data.root, root, symlinks=True)
    centre = (truth.xyz_raw.min(0) + truth.xyz_raw.max(0)) / 2
    flip = s3dis.aligned_from_raw(truth.theta, centre, "inverse")
    raw_ann = root / "Stanford3dDataset_v1.2" / "Area_1" / "office_1" / "Annotations"
    al_ann = root / ALIGNED_DIR / "Area_1" / "office_1" / "Annotations"
    for f in sorted(raw_ann.glob("*.txt")):
        cloud = s3dis.read_xyzrgb(f)
        p = cloud.xyz @ flip[:3, :3].T + flip[:3, 3]
        rows = [
            f"{a[0]:.3f} {a[1]:.3f} {a[2]:.3f} {c[0]} {c[1]} {c[2]}" for a, c in zip(p, cloud.rgb)
        ]
        (al_ann / f.name).write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"only with Rz\(\+θ\)") as caught:
        scene = s3dis.load_scene(root, scene_id)
    assert [w.filename for w in caught] == [__file__]  # the line that called load_scene
    for frame in scene.frames:
        want = flip @ next(f for f in truth.frames if f.name == frame.name).c2w_raw
        np.testing.assert_allclose(frame.c2w, want, atol=1e-4)


def test_frame_options(data: S3DISGroundTruth, tmp_path: Path) -> None:
    sid = "Area_5/office_1"
    assert s3dis.load_scene(data.root, sid, frames=None).frames == []
    assert len(s3dis.load_scene(data.root, sid, max_views=2).frames) == 2
    # explicit images_root, also one level above the area folders; an empty one gives no frames
    nested = tmp_path / "2D-3D-S"
    nested.mkdir()
    (nested / "noXYZ").symlink_to(data.root)
    names = [f.name for f in s3dis.load_scene(data.root, sid).frames]
    moved = s3dis.load_scene(data.root / ALIGNED_DIR, sid, images_root=nested)
    assert [f.name for f in moved.frames] == names
    assert s3dis.load_scene(data.root / ALIGNED_DIR, sid, images_root=tmp_path).frames == []


def _copy_one_room(data: S3DISGroundTruth, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(data.root, dst)
    pose = sorted((dst / "area_1" / "data" / "pose").glob("*office_1_frame_0*"))[0]
    return dst, pose


def test_bad_frames_raise_clear_errors(data: S3DISGroundTruth, tmp_path: Path) -> None:
    sid = "Area_1/office_1"
    root, pose = _copy_one_room(data, tmp_path / "a")
    content = json.loads(pose.read_text())
    del content["camera_rt_matrix"]
    pose.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match="lacks camera_rt_matrix") as e:
        s3dis.load_scene(root, sid)
    assert e.value.file == str(pose) and e.value.scene == sid

    root, pose = _copy_one_room(data, tmp_path / "b")
    rgb = Path(str(pose).replace("/pose/", "/rgb/").replace("_pose.json", "_rgb.png"))
    Image.new("RGB", (SIZE // 2, SIZE // 2)).save(rgb)
    with pytest.raises(DatasetError, match=f"principal point .* {SIZE}x{SIZE} image") as e:
        s3dis.load_scene(root, sid)
    assert e.value.file == str(rgb)

    root, pose = _copy_one_room(data, tmp_path / "c")
    Path(str(pose).replace("/pose/", "/depth/").replace("_pose.json", "_depth.png")).unlink()
    n = len(data.rooms[sid].frames)
    assert len(s3dis.load_scene(root, sid).frames) == n - 1  # needs pose, rgb AND depth

    root, _ = _copy_one_room(data, tmp_path / "d")
    (root / ALIGNED_DIR / "Area_1" / "Area_1_alignmentAngle.txt").unlink()
    assert len(s3dis.load_scene(root, sid).frames) == n  # v1.2's copy of the file is used
    (root / "Stanford3dDataset_v1.2" / "Area_1" / "Area_1_alignmentAngle.txt").unlink()
    with pytest.raises(DatasetError, match="alignment angles"):
        s3dis.load_scene(root, sid)
    assert len(s3dis.load_scene(root, sid, version="raw").frames) == n


def test_reading_frames_does_not_modify_the_folder(data: S3DISGroundTruth) -> None:
    def snap() -> dict[str, str]:
        return {
            str(p): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(data.root.rglob("*"))
            if p.is_file()
        }

    before = snap()
    for sid in data.rooms:
        for frame in s3dis.load_scene(data.root, sid).frames:
            frame.load_color(), frame.load_depth()
    assert snap() == before
