"""The ScanNet meshes we write are the real layout, and our PLY reader agrees with plyfile."""

from __future__ import annotations

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from tttkd.core import DatasetError
from tttkd.pipeline.datasets.ply import read_elements, read_header, write_ply
from tttkd.synthetic.domain import Domain
from tttkd.synthetic.room import make_room
from tttkd.synthetic.scannet_writer import write_scannet_scene

HEADER = """ply
format binary_little_endian 1.0
comment VCGLIB generated
element vertex {n}
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
property uchar alpha{label}
element face {f}
property list uchar int vertex_indices
end_header
"""


def test_written_meshes_have_the_real_header_and_a_valid_mesh(tmp_path) -> None:
    t = write_scannet_scene(
        tmp_path, "scene0003_01", make_room(2), domain=Domain(spacing=0.1), frames=(), views=1
    )
    scan = tmp_path / "scans" / "scene0003_01"
    variants = (("_vh_clean_2.ply", ""), ("_vh_clean_2.labels.ply", "\nproperty ushort label"))
    for name, label in variants:
        data = (scan / f"scene0003_01{name}").read_bytes()
        want = HEADER.format(n=len(t.xyz), f=len(t.faces), label=label).encode()
        assert data.startswith(want)
        ply = PlyData.read(str(scan / f"scene0003_01{name}"))  # an independent parser
        v = ply["vertex"].data
        np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), t.xyz)
        assert (v["alpha"] == 255).all()
        faces = np.stack(ply["face"].data["vertex_indices"])
        np.testing.assert_array_equal(faces, t.faces)
    assert faces.min() >= 0 and faces.max() < len(t.xyz)
    assert (np.diff(np.sort(faces, 1), axis=1) > 0).all(), "no degenerate triangles"
    assert len(faces) > len(t.xyz)  # a mesh, not a point soup
    np.testing.assert_array_equal(v["label"], t.nyu40)
    edge = np.linalg.norm(t.xyz[faces[:, 0]] - t.xyz[faces[:, 1]], axis=1)
    assert edge.max() < 0.3  # triangles join neighbouring samples only


def test_reader_handles_ascii_big_endian_and_ragged_lists(tmp_path) -> None:
    vert = np.array([(0.0, 1.0, 2.0), (3.0, 4.0, 5.0), (6.0, 7.0, 8.0)], [(k, "f4") for k in "xyz"])
    faces = np.empty(2, dtype=[("vertex_indices", "O")])
    faces["vertex_indices"] = [np.array([0, 1, 2], "i4"), np.array([0, 1, 2, 0], "i4")]
    for i, (text, order) in enumerate([(True, "="), (False, ">"), (False, "<")]):
        p = tmp_path / f"m{i}.ply"
        els = [PlyElement.describe(faces, "face"), PlyElement.describe(vert, "vertex")]
        PlyData(els, text=text, byte_order=order).write(str(p))
        got = read_elements(p, ["vertex"])["vertex"]
        xyz = np.stack([got[k] for k in "xyz"], 1)
        np.testing.assert_array_equal(xyz, np.arange(9).reshape(3, 3))
    assert read_header(p).format == "binary_little_endian"
    with pytest.raises(DatasetError, match="no element 'edge'"):
        read_elements(p, ["edge"], scene="s")


def test_fixed_length_lists_round_trip(tmp_path) -> None:
    face = np.zeros(4, dtype=[("vertex_indices", "<i4", (3,)), ("category_id", "<i2")])
    face["vertex_indices"] = np.arange(12).reshape(4, 3)
    face["category_id"] = [5, -1, 7, 0]
    write_ply(tmp_path / "f.ply", {"face": face}, list_len_types={"vertex_indices": "u1"})
    got = read_elements(tmp_path / "f.ply", ["face"])["face"]
    np.testing.assert_array_equal(got["vertex_indices"], face["vertex_indices"])
    np.testing.assert_array_equal(got["category_id"], face["category_id"])
    ref = PlyData.read(str(tmp_path / "f.ply"))["face"].data
    np.testing.assert_array_equal(ref["category_id"], face["category_id"])
