"""The one scene record every reader produces and every later stage consumes.

Conventions (documented once, here and in DESIGN.md):

* World frame: metres, +Z up. ``xyz`` float32 (N, 3); ``rgb`` uint8 (N, 3);
  ``label`` int16 (N,) in the dataset's train ids, ``IGNORE_INDEX`` (-1) = unlabelled.
* Cameras: ``c2w`` is camera-to-world 4x4 in OpenCV axes (x right, y down, z forward).
  ``K`` is 3x3 at the resolution of the colour image actually stored on disk; pixel (u, v)
  has a top-left origin and pixel centres at integer coordinates:
  ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
* Depth: ``Frame.load_depth()`` returns float32 metres (z-depth) at the depth image's own
  resolution (``depth_K`` are its intrinsics), with 0.0 wherever the sensor had no value.

Frames are lazy: they hold references to bytes on disk (a file, or a byte range inside a
container such as ScanNet's ``.sens``), so a scene with 50 frames holds no image until asked.
Everything here is plain data (no closures), so scenes cross process boundaries (Dask) intact.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tttkd.core.errors import DatasetError
from tttkd.core.files import require_regular_file

IGNORE_INDEX = -1

Codec = Literal["image", "zlib_u16", "raw_u16"]


@dataclass(frozen=True)
class ImageRef:
    """Where an image's bytes are: a whole file, or ``length`` bytes at ``offset`` inside one.

    ``codec="image"`` is anything Pillow decodes (JPEG, PNG incl. 16-bit); ``"zlib_u16"`` and
    ``"raw_u16"`` are little-endian uint16 arrays of ``shape`` (H, W), zlib-compressed or not
    (ScanNet ``.sens`` depth).
    """

    path: str
    offset: int = 0
    length: int | None = None
    codec: Codec = "image"
    shape: tuple[int, int] | None = None

    def read_bytes(self) -> bytes:
        require_regular_file(self.path)  # a FIFO in place of an image would block forever
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read() if self.length is None else f.read(self.length)
        except OSError as e:
            raise DatasetError(
                f"cannot read image bytes ({e.strerror})",
                file=self.path,
                fix="check that the dataset folder is complete and readable",
            ) from e
        if self.length is not None and len(data) != self.length:
            raise DatasetError(
                f"truncated: expected {self.length} bytes at offset {self.offset}, got {len(data)}",
                file=self.path,
                fix="the file is incomplete; download or extract it again",
            )
        return data

    def decode(self) -> np.ndarray:
        """Decode to a numpy array: (H, W, C) or (H, W) as stored (uint8 or uint16)."""
        data = self.read_bytes()
        if self.codec == "image":
            from PIL import Image

            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    if im.mode in ("I;16", "I;16B", "I;16L"):
                        return np.asarray(im, dtype=np.uint16)
                    if im.mode == "I":
                        return np.asarray(im).astype(np.uint16)
                    return np.asarray(im)
            except Exception as e:  # Pillow raises several unrelated types for bad files
                raise DatasetError(
                    f"not a readable image ({e})",
                    file=self.path,
                    fix="the file is corrupt or not an image; restore it from the dataset",
                ) from e
        if self.shape is None:
            raise DatasetError(f"codec {self.codec} needs a shape", file=self.path)
        raw = zlib.decompress(data) if self.codec == "zlib_u16" else data
        h, w = self.shape
        if len(raw) != h * w * 2:
            raise DatasetError(
                f"depth payload has {len(raw)} bytes, expected {h}x{w} uint16",
                file=self.path,
                fix="the depth frame is corrupt; re-download the scene",
            )
        return np.frombuffer(raw, dtype="<u2").reshape(h, w).copy()


@dataclass(frozen=True, eq=False)
class Frame:
    """One posed RGB(-D) image of a scene (lazy)."""

    name: str
    K: np.ndarray  # (3, 3) float64, at the colour image's resolution
    c2w: np.ndarray  # (4, 4) float64, camera-to-world, OpenCV axes
    width: int  # colour image width in pixels
    height: int  # colour image height in pixels
    color: ImageRef
    depth: ImageRef | None = None
    depth_scale: float = 1000.0  # raw depth units per metre
    depth_invalid: tuple[int, ...] = (0,)  # raw values that mean "no depth"
    depth_K: np.ndarray | None = None  # (3, 3) at the depth image's resolution; None = K scaled

    def load_color(self) -> np.ndarray:
        """RGB uint8 (H, W, 3); an image whose size contradicts the intrinsics is an error."""
        img = self.color.decode()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (img // 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
        if img.shape[:2] != (self.height, self.width):
            raise DatasetError(
                f"colour image is {img.shape[1]}x{img.shape[0]} but frame {self.name} expects "
                f"{self.width}x{self.height} (intrinsics are for that size)",
                file=self.color.path,
                fix="the image and its calibration disagree; re-export the frame",
            )
        return np.ascontiguousarray(img)

    def load_depth(self) -> np.ndarray | None:
        """float32 metres (H_d, W_d), 0.0 = missing; ``None`` if the frame has no depth."""
        if self.depth is None:
            return None
        raw = self.depth.decode()
        if raw.ndim != 2:
            raise DatasetError(
                "depth image must have one channel",
                file=self.depth.path,
                fix="point the reader at the 16-bit depth PNGs",
            )
        problem = _depth_problem(raw, self)
        if problem:
            raise DatasetError(
                problem,
                file=self.depth.path,
                fix="use the dataset's own 16-bit depth PNG of this frame (restore it)",
            )
        depth = raw.astype(np.float32) / np.float32(self.depth_scale)
        for bad in self.depth_invalid:
            depth[raw == bad] = 0.0
        return depth

    def intrinsics_for(self, width: int, height: int) -> np.ndarray:
        """K rescaled to an image of ``width`` x ``height`` (pixel-centre convention)."""
        return scale_intrinsics(self.K, self.width, self.height, width, height)

    def depth_intrinsics(self, depth_width: int, depth_height: int) -> np.ndarray:
        if self.depth_K is not None:
            return np.asarray(self.depth_K, dtype=np.float64)
        return self.intrinsics_for(depth_width, depth_height)


def _depth_problem(raw: np.ndarray, frame: Frame) -> str | None:
    """Why a decoded depth image contradicts its frame (bit depth, size), or None."""
    if raw.dtype != np.uint16:
        return (
            f"depth image is {raw.dtype.itemsize * 8}-bit; depth must be 16-bit "
            f"(units of 1/{frame.depth_scale:g} m)"
        )
    h, w = raw.shape
    want = frame.depth.shape if frame.depth is not None else None
    if frame.depth.codec == "image" and want is not None and (h, w) != tuple(want):
        return f"depth image is {w}x{h}, but the depth intrinsics are for {want[1]}x{want[0]}"
    aspect = frame.width / frame.height
    if frame.depth_K is None and abs(w / h - aspect) > 0.02 * aspect:
        return (
            f"depth image is {w}x{h}, another aspect than its {frame.width}x{frame.height} "
            "colour image (the colour intrinsics cannot be scaled to it)"
        )
    return None


def scale_intrinsics(
    K: np.ndarray, from_width: int, from_height: int, to_width: int, to_height: int
) -> np.ndarray:
    """Rescale intrinsics between resolutions of the same view (pixel centres at integers)."""
    sx = to_width / from_width
    sy = to_height / from_height
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5
    return out


@dataclass(eq=False)
class Scene:
    """One scan: points with colours and labels, plus the posed frames it was built from."""

    id: str
    dataset: str  # "scannet" | "s3dis" | "matterport3d" | "pointcept"
    split: str | None
    xyz: np.ndarray  # (N, 3) float32, metres, +Z up
    rgb: np.ndarray  # (N, 3) uint8
    label: np.ndarray  # (N,) int16 train ids, -1 = ignore
    frames: list[Frame] = field(default_factory=list)
    label_set: str = ""  # name of the label set in data_cards/label_table.tsv, e.g. "scannet20"
    source_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.xyz)
        want = {"xyz": (np.float32, (n, 3)), "rgb": (np.uint8, (n, 3)), "label": (np.int16, (n,))}
        for name, (dtype, shape) in want.items():
            arr = getattr(self, name)
            if arr.dtype != dtype or arr.shape != shape:
                raise ValueError(
                    f"scene {self.id}: {name} must be {np.dtype(dtype).name} {shape}, "
                    f"got {arr.dtype} {arr.shape}"
                )

    @property
    def num_points(self) -> int:
        return len(self.xyz)


def project(xyz: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points -> (uv (N, 2) float64 pixels, z (N,) camera depth). The one projection."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    pc = np.asarray(xyz, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * pc[:, 0] / z + K[0, 2]
        v = K[1, 1] * pc[:, 1] / z + K[1, 2]
    return np.stack([u, v], axis=1), z


def as_path(p: str | Path) -> Path:
    return Path(p).expanduser()
