"""ScanNet RGB-D frames of a synthetic room, in the three forms users have them.

Cameras live in the room (= axis-aligned) frame for rendering; what is stored is the scan
(raw) frame ``A^-1 @ c2w``, as in real ScanNet where meshes and poses are un-aligned. The
raw poses are rounded to 6 decimals first (the ``%f`` of ScanNet's exporter) and the images
are rendered from exactly those poses, so every stored form agrees to float32 precision.
Sizes mirror the real sensor at a small scale: colour calibrated at ``image_size`` (real
1296x968), depth at about half of it (real 640x480), 25k-subset colour at the depth size.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tttkd.core import scale_intrinsics
from tttkd.synthetic.render import Camera, place_cameras, render
from tttkd.synthetic.room import Room

# Typical ScanNet calibration (FORMATS.md 1.6), scaled down to the synthetic image sizes.
REAL_COLOR = ((1296, 968), np.array([[1170.1875, 0, 647.75], [0, 1170.1875, 483.75], [0, 0, 1]]))
REAL_DEPTH = ((640, 480), np.array([[577.870605, 0, 319.5], [0, 577.870605, 239.5], [0, 0, 1]]))
FRAME_KINDS = ("sens", "25k", "exported")


@dataclass(eq=False)
class FrameTruth:
    """What was written for one key frame (``index`` is its ``.sens`` frame number)."""

    index: int
    name: str
    valid: bool  # False: stored with a -inf pose (readers must skip it)
    c2w: np.ndarray  # raw (scan) frame, as stored
    c2w_aligned: np.ndarray  # axisAlignment @ c2w, the frame the room was rendered in
    K: np.ndarray  # colour intrinsics at (width, height) (.sens and exported images)
    width: int
    height: int
    K_25k: np.ndarray
    size_25k: tuple[int, int]
    depth_K: np.ndarray
    depth_size: tuple[int, int]
    color: np.ndarray = field(repr=False)  # uint8 (height, width, 3) before JPEG
    color_25k: np.ndarray = field(repr=False)
    depth_mm: np.ndarray = field(repr=False)  # uint16 (H_d, W_d), as stored
    box_index: np.ndarray = field(repr=False)  # int32 (height, width): which box each pixel shows
    box_index_25k: np.ndarray = field(repr=False)


def _round8(K: np.ndarray) -> np.ndarray:
    """Intrinsics on a 1/8 grid: exact in float32 (.sens) and in %f text files."""
    return np.round(np.asarray(K, dtype=np.float64) * 8) / 8


def calibration(image_size: tuple[int, int]) -> dict:
    """Colour, depth and 25k sizes and intrinsics for a colour calibration size."""
    w, h = image_size
    dw = max(8, round(w * 640 / 1296))
    dh = max(6, round(h * 480 / 968))
    K = _round8(scale_intrinsics(REAL_COLOR[1], *REAL_COLOR[0], w, h))
    Kd = _round8(scale_intrinsics(REAL_DEPTH[1], *REAL_DEPTH[0], dw, dh))
    return {
        "size": (w, h),
        "K": K,
        "depth_size": (dw, dh),
        "depth_K": Kd,
        "size_25k": (dw, dh),
        "K_25k": scale_intrinsics(K, w, h, dw, dh),
    }


def make_frames(
    room: Room,
    A: np.ndarray,
    *,
    views: int,
    image_size: tuple[int, int],
    frame_step: int,
    invalid_keyframe: int | None = 1,
    seed: int = 0,
) -> list[FrameTruth]:
    """Render ``views`` valid key frames (+1 stored with a -inf pose) of ``room``."""
    cal = calibration(image_size)
    n = views + (invalid_keyframe is not None)
    cams = place_cameras(room, n, width=image_size[0], height=image_size[1], seed=seed)
    A_inv = np.linalg.inv(A)
    out = []
    for k, cam in enumerate(cams):
        raw = np.round(A_inv @ cam.c2w, 6)
        raw[3] = (0, 0, 0, 1)
        c2w = A @ raw
        (w, h), (dw, dh), (w25, h25) = cal["size"], cal["depth_size"], cal["size_25k"]
        color, _, box = render(room, Camera(cal["K"], c2w, w, h))
        _, depth, _ = render(room, Camera(cal["depth_K"], c2w, dw, dh))
        color25, _, box25 = render(room, Camera(cal["K_25k"], c2w, w25, h25))
        valid = k != invalid_keyframe
        out.append(
            FrameTruth(
                index=k * frame_step,
                name=f"{k * frame_step:06d}",
                valid=valid,
                c2w=raw if valid else np.full((4, 4), -np.inf),
                c2w_aligned=c2w if valid else np.full((4, 4), -np.inf),
                K=cal["K"],
                width=w,
                height=h,
                K_25k=cal["K_25k"],
                size_25k=(w25, h25),
                depth_K=cal["depth_K"],
                depth_size=(dw, dh),
                color=color,
                color_25k=color25,
                depth_mm=np.round(depth.astype(np.float64) * 1000).astype(np.uint16),
                box_index=box,
                box_index_25k=box25,
            )
        )
    return out


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png16(depth_mm: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(depth_mm.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _mat4(K: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = K
    return M


def _mat_text(M: np.ndarray) -> str:
    """Four lines of four ``%f`` numbers, as ScanNet's reader.py writes them."""
    return "".join(" ".join(f"{v:f}" for v in row) + "\n" for row in M)


def write_sens(path: Path, frames: list[FrameTruth], frame_step: int, quality: int) -> int:
    """A version-4 ``.sens``: JPEG colour, zlib uint16 depth, ``frame_step`` frames per key
    frame (copies of it), IMU count 0. Returns the number of frames written."""
    f0 = frames[0]
    jpegs = [_jpeg(f.color, quality) for f in frames]
    depths = [zlib.compress(f.depth_mm.astype("<u2").tobytes()) for f in frames]
    name = b"StructureSensor"
    n = len(frames) * frame_step
    with open(path, "wb") as out:
        out.write(struct.pack("<IQ", 4, len(name)) + name)
        for M in (_mat4(f0.K), np.eye(4), _mat4(f0.depth_K), np.eye(4)):
            out.write(np.asarray(M, dtype="<f4").tobytes())
        out.write(struct.pack("<ii", 2, 1))  # jpeg colour, zlib_ushort depth
        out.write(struct.pack("<4I", f0.width, f0.height, *f0.depth_size))
        out.write(struct.pack("<fQ", 1000.0, n))
        for j in range(n):
            k = j // frame_step
            ts = j * 33333
            out.write(np.asarray(frames[k].c2w, dtype="<f4").tobytes())
            out.write(struct.pack("<4Q", ts, ts, len(jpegs[k]), len(depths[k])))
            out.write(jpegs[k])
            out.write(depths[k])
        out.write(struct.pack("<Q", 0))
    return n


def write_tree(folder: Path, frames: list[FrameTruth], layout: str, quality: int) -> None:
    """The 25k subset (``%06d`` names, ``intrinsics_*.txt`` at the root, colour at the 25k
    size) or a reader.py export (``<i>`` names, ``intrinsic/``, colour at full size)."""
    for sub in ("color", "depth", "pose"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    f0 = frames[0]
    if layout == "25k":
        (folder / "intrinsics_color.txt").write_text(_mat_text(_mat4(f0.K)))
        (folder / "intrinsics_depth.txt").write_text(_mat_text(_mat4(f0.depth_K)))
    else:
        (folder / "intrinsic").mkdir(exist_ok=True)
        for kind, K in (("color", f0.K), ("depth", f0.depth_K)):
            (folder / "intrinsic" / f"intrinsic_{kind}.txt").write_text(_mat_text(_mat4(K)))
            (folder / "intrinsic" / f"extrinsic_{kind}.txt").write_text(_mat_text(np.eye(4)))
    for f in frames:
        stem = f.name if layout == "25k" else str(f.index)
        color = f.color_25k if layout == "25k" else f.color
        (folder / "color" / f"{stem}.jpg").write_bytes(_jpeg(color, quality))
        (folder / "depth" / f"{stem}.png").write_bytes(_png16(f.depth_mm))
        (folder / "pose" / f"{stem}.txt").write_text(_mat_text(f.c2w))
