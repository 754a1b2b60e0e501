"""Matterport3D reader against houses written in the exact format by the synthetic writer."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import DatasetError, project
from tttkd.pipeline.datasets import matterport3d as mp
from tttkd.pipeline.datasets.matterport_formats import read_conf
from tttkd.synthetic.matterport_writer import MatterportTruth, write_matterport_dataset

IMAGE = (96, 80)


@pytest.fixture(scope="module")
def house(tmp_path_factory) -> MatterportTruth:
    """One house, region0 with 8 views (two panorama cameras), region1 with none."""
    root = tmp_path_factory.mktemp("mp")
    return write_matterport_dataset(
        root, 2, regions_per_house=2, views=[8, 0], spacing=0.12, image_size=IMAGE,
        seed=3,
    )  # fmt: skip


def naive_vote(faces: np.ndarray, face_label: np.ndarray, n: int) -> np.ndarray:
    """Majority per vertex in plain Python: -1 (unlabelled) wins ties, then the lowest id."""
    votes: list[dict[int, int]] = [{} for _ in range(n)]
    for tri, lab in zip(faces.tolist(), face_label.tolist()):
        for v in tri:
            votes[v][lab] = votes[v].get(lab, 0) + 1
    out = np.full(n, -1, dtype=np.int16)
    for v, d in enumerate(votes):
        if d:
            best = max(d.values())
            out[v] = min(k for k, c in d.items() if c == best)
    return out


def test_points_and_labels_round_trip(house: MatterportTruth) -> None:
    for sid, truth in house.regions.items():
        scene = mp.load_scene(house.scans_root, sid, frames=None)
        assert scene.id == sid and scene.dataset == "matterport3d" and scene.split == "train"
        assert scene.label_set == "matterport21" and scene.frames == []
        np.testing.assert_array_equal(scene.xyz, truth.mesh.xyz)
        np.testing.assert_array_equal(scene.rgb, truth.mesh.rgb)
        np.testing.assert_array_equal(scene.label, truth.label)
    # The vote itself, against a plain-Python count on one region.
    t = house.regions[house.scene_ids[0]]
    scene = mp.load_scene(house.scans_root, t.scene_id, frames=None)
    np.testing.assert_array_equal(
        scene.label, naive_vote(t.mesh.faces, t.mesh.face_label, len(t.mesh.xyz))
    )
    # It had work to do: vertices shared by faces of different labels, and unlabelled patches.
    labels_at = [set() for _ in range(len(t.mesh.xyz))]
    for tri, lab in zip(t.mesh.faces.tolist(), t.mesh.face_label.tolist()):
        for v in tri:
            labels_at[v].add(lab)
    mixed = np.array([len(s) > 1 for s in labels_at])
    assert mixed.sum() > 50
    pure = np.array([next(iter(s)) if len(s) == 1 else -99 for s in labels_at])
    np.testing.assert_array_equal(scene.label[~mixed], pure[~mixed])  # one class -> that class
    cats = set(np.unique(t.mesh.category).tolist())
    assert {-1, 0, 1240, 1241} <= cats  # -1, 0, storage (empty nyu40id), lamp (not in the 21)
    assert ((scene.label == -1) & ~mixed).sum() > 20
    assert set(np.unique(scene.label).tolist()) >= {0, 1, 20}  # wall, floor, ceiling


def test_frames_round_trip(house: MatterportTruth) -> None:
    sid = house.scene_ids[0]
    scene = mp.load_scene(house.scans_root, sid)
    truth = house.regions[sid]
    assert [f.name for f in scene.frames] == truth.views and len(truth.views) == 8
    for f in scene.frames:
        v = house.views[f.name]
        np.testing.assert_allclose(f.K, v.K, atol=1e-5)
        np.testing.assert_allclose(f.c2w, v.c2w, atol=1e-5)
        assert (f.width, f.height) == IMAGE and f.depth_scale == 4000.0
        assert f.load_color().shape == (IMAGE[1], IMAGE[0], 3)
        depth = f.load_depth()
        assert depth.dtype == np.float32 and depth.shape == (IMAGE[1], IMAGE[0])
        assert 0 < (depth == 0).mean() < 0.05  # the written dropouts read as "no depth"
    # Two cameras of one panorama: each intrinsics_matrix applies to the scans after it.
    assert not np.allclose(scene.frames[0].K, scene.frames[-1].K)


def test_conf_opengl_axes_become_opencv(house: MatterportTruth) -> None:
    h = next(iter(house.houses))
    conf = read_conf(house.scans_root / h / "undistorted_camera_parameters" / f"{h}.conf")
    scene = mp.load_scene(house.scans_root, house.scene_ids[0])
    by_name = {Path(im.color_name).stem: im for im in conf.images}
    for f in scene.frames:
        gl = by_name[f.name].c2w_gl
        np.testing.assert_array_equal(f.c2w[:3, 0], gl[:3, 0])
        np.testing.assert_array_equal(f.c2w[:3, 1:3], -gl[:3, 1:3])  # y down, z forward
        np.testing.assert_array_equal(f.c2w[:, 3], gl[:, 3])
        assert np.linalg.det(f.c2w[:3, :3]) == pytest.approx(1.0, abs=1e-4)


def _surface_distance(x: np.ndarray, boxes) -> np.ndarray:
    """Distance from each point to the nearest box surface."""
    best = np.full(len(x), np.inf)
    for b in boxes:
        lo, hi = np.asarray(b.lo), np.asarray(b.hi)
        outside = np.linalg.norm(np.maximum(np.maximum(lo - x, x - hi), 0), axis=1)
        inside = np.min(np.minimum(x - lo, hi - x), axis=1)
        best = np.minimum(best, np.where(outside > 0, outside, np.abs(inside)))
    return best


def test_projection_points_land_on_their_pixel(house: MatterportTruth) -> None:
    sid = house.scene_ids[0]
    scene = mp.load_scene(house.scans_root, sid)
    t = house.regions[sid]
    boxes = house.houses[t.house].boxes
    owner = np.full(len(t.mesh.xyz), -2)
    for tri, b in zip(t.mesh.faces, t.mesh.face_box):  # vertices of exactly one box
        owner[tri] = np.where((owner[tri] == -2) | (owner[tri] == b), b, -1)
    n_visible = 0
    for f in scene.frames:
        v = house.views[f.name]
        depth = f.load_depth()
        uv, z = project(scene.xyz, f.K, f.c2w)
        uv_true, _ = project(scene.xyz, v.K, v.c2w)
        ui, vi = np.round(uv).astype(int).T
        inside = (z > 0) & (ui >= 0) & (ui < f.width) & (vi >= 0) & (vi < f.height)
        d = np.zeros(len(z))
        d[inside] = depth[vi[inside], ui[inside]]
        visible = inside & (d > 0) & (np.abs(d - z) < 0.01)
        n_visible += visible.sum()
        # Visible points project back to the pixel where the renderer put them ...
        assert np.abs(uv[visible] - uv_true[visible]).max() < 0.5
        # Away from box edges in the image, the pixel shows the vertex's own box.
        bi = np.pad(v.box_index, 1, mode="edge")
        flat = np.ones(v.box_index.shape, bool)
        for dy in range(3):
            for dx in range(3):
                flat &= bi[dy : dy + f.height, dx : dx + f.width] == v.box_index
        one = visible & (owner >= 0)
        one[one] = flat[vi[one], ui[one]]
        assert one.sum() > 50
        assert (v.box_index[vi[one], ui[one]] == owner[one]).mean() > 0.99
        # ... and every valid depth pixel lifts onto a surface of the house (flip, scale, z).
        vv, uu = np.nonzero(depth > 0)
        K = f.K
        pc = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones(len(uu))], 1)
        xw = (pc * depth[vv, uu, None]) @ f.c2w[:3, :3].T + f.c2w[:3, 3]
        assert np.quantile(_surface_distance(xw, boxes), 0.99) < 2e-3
    assert n_visible > 1000


def test_pairing_by_bounding_box_and_nearest_fallback(house: MatterportTruth) -> None:
    s0, s1 = house.scene_ids
    assert len(house.regions[s1].views) == 0
    scene = mp.load_scene(house.scans_root, s1, nearest_views=3)
    lo, hi = scene.xyz.min(0), scene.xyz.max(0)
    centre = (lo.astype(float) + hi) / 2
    names = house.regions[s0].views  # the only cameras of the house, in file order
    dist = [np.linalg.norm(house.views[n].c2w[:3, 3] - centre) for n in names]
    want = [names[i] for i in sorted(np.argsort(dist, kind="stable")[:3])]
    assert [f.name for f in scene.frames] == want
    # max_views keeps evenly spaced frames in file order.
    few = mp.load_scene(house.scans_root, s0, max_views=3)
    assert [f.name for f in few.frames] == [names[0], names[4], names[7]]


def test_pair_views_rules() -> None:
    c = np.array([[0.5, 0.5, 0.5], [1.0, 0.5, 0.5], [np.nan, 0, 0], [3.0, 3, 3], [2.0, 2, 2]])
    lo, hi = np.zeros(3), np.ones(3)
    assert mp.pair_views(c, lo, hi).tolist() == [0]  # strictly inside; a face does not count
    assert mp.pair_views(c[1:], lo, hi, nearest=2).tolist() == [0, 3]  # nearest, file order
    assert mp.pair_views(c[2:3], lo, hi, nearest=5).tolist() == []  # non-finite never pairs


def test_flip_cy_option(house: MatterportTruth) -> None:
    sid = house.scene_ids[0]
    a = mp.load_scene(house.scans_root, sid, max_views=1).frames[0]
    b = mp.load_scene(house.scans_root, sid, max_views=1, flip_cy=True).frames[0]
    assert b.K[1, 2] == pytest.approx(a.height - 1 - a.K[1, 2])
    assert b.K[0, 2] == a.K[0, 2]


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                   hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*")) if p.is_file()
    }  # fmt: skip


def test_reading_leaves_the_folder_unmodified(house: MatterportTruth) -> None:
    before = _snapshot(house.root)
    for sid in mp.list_scenes(house.scans_root, "train"):
        for f in mp.load_scene(house.scans_root, sid).frames:
            f.load_color(), f.load_depth()
    assert _snapshot(house.root) == before


def test_splits_layouts_and_metadata_locations(house: MatterportTruth, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(house.root, root)
    scans = root / "v1" / "scans"
    h = next(iter(house.houses))
    ids = [f"{h}/region0", f"{h}/region1"]
    assert mp.list_scenes(scans) == ids == mp.list_scenes(root)  # the folder above v1 works too
    assert mp.list_scenes(scans, "train") == ids
    bench = scans / "tasks" / "benchmark"
    (bench / "scenes_val.txt").write_bytes(f"XXXXXXXXXXX\r\n{h}".encode())  # CRLF, no final EOL
    (bench / "scenes_train.txt").write_text("")
    with pytest.warns(UserWarning, match="1 of 2 houses"):
        assert mp.list_scenes(scans, "val") == ids
    assert mp.load_scene(scans, ids[0], frames=None).split == "val"
    # Metadata beside v1/ (a clone of github.com/niessner/Matterport) and splits_dir=.
    shutil.move(scans / "metadata", root / "metadata")
    shutil.move(scans / "tasks", root / "tasks")
    assert mp.load_scene(scans, ids[0], frames=None).split == "val"
    with pytest.warns(UserWarning, match="not on disk"):
        assert mp.list_scenes(scans, "val", splits_dir=root / "tasks" / "benchmark") == ids
    # The doubled <house>/<house>/ layout of zips unzipped inside the house folder.
    inner = scans / h / h
    inner.mkdir()
    for d in list((scans / h).iterdir()):
        if d != inner:
            shutil.move(d, inner / d.name)
    a = mp.load_scene(scans, ids[0])
    b = mp.load_scene(house.scans_root, ids[0])
    np.testing.assert_array_equal(a.label, b.label)
    assert [f.name for f in a.frames] == [f.name for f in b.frames]
    a.frames[0].load_color()


def _write_ply_without_category(path: Path) -> None:
    from plyfile import PlyData, PlyElement

    ply = PlyData.read(str(path), mmap=False)
    face = ply["face"].data
    keep = [n for n in face.dtype.names if n != "category_id"]
    new = np.empty(len(face), dtype=[(n, face.dtype[n]) for n in keep])
    for n in keep:
        new[n] = face[n]
    PlyData([ply["vertex"], PlyElement.describe(new, "face")]).write(str(path))


@pytest.mark.parametrize(
    "case, match",
    [
        ("bad_id", "bad scene id"),
        ("unknown_house", "house NOPE not found"),
        ("unknown_region", "region 7 not found"),
        ("truncated_ply", "not a readable PLY"),
        ("not_ply", "not a readable PLY"),
        ("no_category", "lacks category_id"),
        ("conf_without_scans", "no 'scan' lines"),
        ("conf_bad_scan", "scan needs 2 names and 16 numbers"),
        ("no_conf", "camera parameter file not found"),
        ("mapping_nan_index", "'index' is 'nan'"),
        ("mapping_no_column", "no column 'nyu40id'"),
        ("mapping_bad_nyu", "nyu40id 'wall' is not an NYU40 id"),
        ("mapping_missing_row", "category_id 3 that"),
        ("no_mapping", "category_mapping.tsv not found"),
        ("house_folder", "one house's folder"),
        ("resized_images", "principal point"),
        ("unknown_split", "unknown split"),
        ("no_split_file", "scenes_val.txt not found"),
    ],
)
def test_bad_input_names_file_scene_and_fix(
    house: MatterportTruth, tmp_path: Path, case, match
) -> None:
    root = tmp_path / "bad"
    shutil.copytree(house.scans_root, root)
    h = next(iter(house.houses))
    sid = f"{h}/region0"
    ply = root / h / "region_segmentations" / "region0.ply"
    conf = root / h / "undistorted_camera_parameters" / f"{h}.conf"
    mapping = root / "metadata" / "category_mapping.tsv"
    rows = mapping.read_text().split("\n")
    call = lambda: mp.load_scene(root, sid)  # noqa: E731
    if case == "bad_id":
        call = lambda: mp.load_scene(root, "region0")  # noqa: E731
    elif case == "unknown_house":
        call = lambda: mp.load_scene(root, "NOPE/region0")  # noqa: E731
    elif case == "unknown_region":
        call = lambda: mp.load_scene(root, f"{h}/region7")  # noqa: E731
    elif case == "truncated_ply":
        ply.write_bytes(ply.read_bytes()[:-1000])
    elif case == "not_ply":
        ply.write_bytes(b"hello\n")
    elif case == "no_category":
        _write_ply_without_category(ply)
    elif case == "conf_without_scans":
        conf.write_text(
            "\n".join(ln for ln in conf.read_text().splitlines() if not ln.startswith("scan"))
        )
    elif case == "conf_bad_scan":
        conf.write_text(conf.read_text().replace(" 0 0 0 1\n", " 0 0 1\n", 1))
    elif case == "no_conf":
        conf.unlink()
    elif case == "mapping_nan_index":
        mapping.write_text(
            "\n".join(rows[:2] + ["nan" + rows[2][rows[2].index("\t") :]] + rows[3:])
        )
    elif case == "mapping_no_column":
        mapping.write_text("\n".join([rows[0].replace("nyu40id", "nyu40")] + rows[1:]))
    elif case == "mapping_bad_nyu":
        cells = rows[1].split("\t")
        cells[5] = "wall"
        mapping.write_text("\n".join([rows[0], "\t".join(cells)] + rows[2:]))
    elif case == "mapping_missing_row":
        mapping.write_text("\n".join([rows[0]] + rows[2:]))  # drops index 3 (wall)
    elif case == "no_mapping":
        mapping.unlink()
    elif case == "house_folder":
        call = lambda: mp.list_scenes(root / h)  # noqa: E731
    elif case == "resized_images":
        from PIL import Image

        for p in (root / h / "undistorted_color_images").iterdir():
            Image.open(p).resize((IMAGE[0] * 3, IMAGE[1] * 3)).save(p)
    elif case == "unknown_split":
        call = lambda: mp.list_scenes(root, "training")  # noqa: E731
    elif case == "no_split_file":
        (root / "tasks" / "benchmark" / "scenes_val.txt").unlink()
        call = lambda: mp.list_scenes(root, "val")  # noqa: E731
    with pytest.raises(DatasetError, match=match) as err:
        call()
    assert err.value.fix, "every error says what to do"
    assert err.value.file or err.value.scene
