"""The scene record: lazy frames, byte-range images, intrinsics scaling, projection."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from tttkd.core import DatasetError, Frame, ImageRef, Scene, project, scale_intrinsics


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_image_ref_byte_range_inside_container(tmp_path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    depth = np.arange(48, dtype=np.uint16).reshape(6, 8) * 7
    png, z = _png_bytes(rgb), zlib.compress(depth.astype("<u2").tobytes())
    blob = tmp_path / "container.bin"
    blob.write_bytes(b"HEAD" + png + z + b"TAIL")
    color = ImageRef(str(blob), offset=4, length=len(png))
    dref = ImageRef(str(blob), 4 + len(png), len(z), codec="zlib_u16", shape=(6, 8))
    frame = Frame("f0", np.eye(3), np.eye(4), 8, 6, color, dref, depth_scale=1000.0)
    np.testing.assert_array_equal(frame.load_color(), rgb)
    d = frame.load_depth()
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, depth / 1000.0, rtol=1e-6)
    assert d[0, 0] == 0.0  # raw 0 means missing


def test_sixteen_bit_png_depth_and_invalid_values(tmp_path) -> None:
    raw = np.array([[0, 512, 65535], [1024, 256, 5]], dtype=np.uint16)
    p = tmp_path / "d.png"
    Image.fromarray(raw).save(p)
    frame = Frame(
        "f", np.eye(3), np.eye(4), 3, 2, ImageRef(str(p)), ImageRef(str(p)), 512.0, (0, 65535)
    )
    np.testing.assert_allclose(frame.load_depth(), [[0, 1, 0], [2, 0.5, 5 / 512]])


def test_truncated_range_and_size_mismatch_are_clear_errors(tmp_path) -> None:
    p = tmp_path / "c.png"
    p.write_bytes(_png_bytes(np.zeros((4, 5, 3), np.uint8)))
    with pytest.raises(DatasetError, match="truncated") as e:
        ImageRef(str(p), offset=0, length=10_000).read_bytes()
    assert str(p) in str(e.value)
    frame = Frame("f", np.eye(3), np.eye(4), 8, 6, ImageRef(str(p)))
    with pytest.raises(DatasetError, match="5x4 but frame f expects 8x6"):
        frame.load_color()
    with pytest.raises(DatasetError, match="not a readable image"):
        ImageRef(str(tmp_path / "c.png"), offset=3).decode()


def test_scale_intrinsics_maps_pixel_centres() -> None:
    K = np.array([[1170.0, 0, 647.75], [0, 1170.0, 483.75], [0, 0, 1]])
    K2 = scale_intrinsics(K, 1296, 968, 640, 480)
    # The same 3D point lands at corresponding continuous positions in both images.
    p = np.array([[0.3, -0.2, 2.0]])
    uv1, _ = project(p, K, np.eye(4))
    uv2, _ = project(p, K2, np.eye(4))
    np.testing.assert_allclose((uv2 + 0.5), (uv1 + 0.5) * [640 / 1296, 480 / 968], rtol=1e-9)
    np.testing.assert_allclose(scale_intrinsics(K2, 640, 480, 1296, 968), K)


def test_project_opencv_axes() -> None:
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, 3] = [1.0, 2.0, 3.0]
    uv, z = project(np.array([[1.0, 2.0, 5.0], [1.5, 2.0, 5.0], [1.0, 2.5, 5.0]]), K, c2w)
    np.testing.assert_allclose(z, [2, 2, 2])
    np.testing.assert_allclose(uv, [[50, 40], [75, 40], [50, 65]])  # +x right, +y down


def test_scene_validates_dtypes() -> None:
    xyz = np.zeros((3, 3), np.float32)
    rgb = np.zeros((3, 3), np.uint8)
    Scene("s", "scannet", None, xyz, rgb, np.zeros(3, np.int16))
    with pytest.raises(ValueError, match="label must be int16"):
        Scene("s", "scannet", None, xyz, rgb, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="xyz must be float32"):
        Scene("s", "scannet", None, xyz.astype(np.float64), rgb, np.zeros(3, np.int16))
