"""Byte-offset index of a ScanNet ``.sens`` RGB-D stream (FORMATS.md section 1.6).

Frames are read straight from the ``.sens`` (no export to disk): the header and the small
per-frame headers are parsed once, and each frame's JPEG and zlib depth become byte ranges
that :class:`~tttkd.core.scene.ImageRef` decodes on demand.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tttkd.core import DatasetError

SENS_VERSION = 4
COLOR_CODECS = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_CODECS = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi"}
_FRAME_HEADER = struct.Struct("<16f4Q")  # camera_to_world, ts_color, ts_depth, n_color, n_depth


@dataclass(frozen=True, eq=False)
class SensIndex:
    """Everything in a ``.sens`` except the image payloads, which stay on disk."""

    path: str
    sensor_name: str
    intrinsic_color: np.ndarray  # (4, 4)
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: str  # "jpeg" | "png" | "raw" | "unknown"
    depth_compression: str  # "zlib_ushort" | "raw_ushort" | "occi" | "unknown"
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float
    camera_to_world: np.ndarray  # (F, 4, 4) float64, may hold -inf rows
    color_offset: np.ndarray  # (F,) int64 byte offsets of each colour payload
    color_length: np.ndarray  # (F,) int64
    depth_offset: np.ndarray
    depth_length: np.ndarray
    timestamp_color: np.ndarray  # (F,) uint64
    timestamp_depth: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.color_offset)


def read_sens_index(path: str | Path, *, scene: str | None = None) -> SensIndex:
    """Parse the header and frame headers of ``path`` (cached per file size and mtime)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise DatasetError(
            f"cannot open .sens file ({e.strerror})",
            file=path,
            scene=scene,
            fix="download the scene's .sens (download-scannet.py --type .sens) or pick another "
            "frames= source",
        ) from e
    return _read_cached(str(path), st.st_size, st.st_mtime_ns, scene)


class _Stream:
    """A .sens opened for parsing: every problem is the same DatasetError naming the file."""

    def __init__(self, f: BinaryIO, path: str, scene: str | None) -> None:
        self.f, self.path, self.scene = f, path, scene

    def bad(self, problem: str) -> DatasetError:
        return DatasetError(
            problem,
            file=self.path,
            scene=self.scene,
            fix="the .sens is corrupt or incomplete; download it again",
        )

    def take(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise self.bad(f"truncated: file ends at byte {self.f.tell()} inside the header")
        return b


@dataclass(frozen=True)
class _Header:
    sensor: str
    mats: np.ndarray  # (4, 4, 4): colour K, colour extrinsic, depth K, depth extrinsic
    c_comp: int
    d_comp: int
    sizes: tuple[int, int, int, int]  # colour w, h, depth w, h
    shift: float
    n: int  # frames


def _read_header(s: _Stream, size: int) -> _Header:
    (version,) = struct.unpack("<I", s.take(4))
    if version != SENS_VERSION:
        raise s.bad(f"not a ScanNet .sens v{SENS_VERSION} file (version field is {version})")
    (name_len,) = struct.unpack("<Q", s.take(8))
    if name_len > 4096:
        raise s.bad(f"sensor name length {name_len} is implausible; not a .sens file")
    sensor = s.take(name_len).decode("utf-8", errors="replace")
    mats = np.frombuffer(s.take(4 * 64), dtype="<f4").astype(np.float64).reshape(4, 4, 4)
    c_comp, d_comp = struct.unpack("<ii", s.take(8))
    cw, ch, dw, dh = struct.unpack("<4I", s.take(16))
    (shift,) = struct.unpack("<f", s.take(4))
    (n,) = struct.unpack("<Q", s.take(8))
    if n > size // _FRAME_HEADER.size:
        raise s.bad(f"header claims {n} frames, more than the file can hold")
    return _Header(sensor, mats, c_comp, d_comp, (cw, ch, dw, dh), shift, n)


def _read_frame_table(s: _Stream, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Poses (n, 4, 4) and the columns c_off, c_len, d_off, d_len, ts_c, ts_d (6, n), found by
    hopping from frame header to frame header (the images are not read)."""
    poses = np.empty((n, 4, 4), dtype=np.float64)
    cols = np.empty((6, n), dtype=np.int64)
    pos = s.f.tell()
    for i in range(n):
        s.f.seek(pos)
        head = s.f.read(_FRAME_HEADER.size)
        if len(head) != _FRAME_HEADER.size:
            raise s.bad(f"truncated: frame {i} of {n} starts past the end of the file")
        vals = _FRAME_HEADER.unpack(head)
        poses[i] = np.asarray(vals[:16], dtype=np.float64).reshape(4, 4)
        ts_c, ts_d, n_c, n_d = vals[16:]
        c_off = pos + _FRAME_HEADER.size
        pos = c_off + n_c + n_d
        if pos > size:
            raise s.bad(f"truncated: frame {i} of {n} needs bytes up to {pos}, file has {size}")
        cols[:, i] = (c_off, n_c, c_off + n_c, n_d, ts_c, ts_d)
    return poses, cols


@lru_cache(maxsize=16)
def _read_cached(path: str, size: int, mtime_ns: int, scene: str | None) -> SensIndex:
    with open(path, "rb") as f:
        stream = _Stream(f, path, scene)
        h = _read_header(stream, size)
        poses, cols = _read_frame_table(stream, h.n, size)
    cw, ch, dw, dh = h.sizes
    return SensIndex(
        path=path,
        sensor_name=h.sensor,
        intrinsic_color=h.mats[0],
        extrinsic_color=h.mats[1],
        intrinsic_depth=h.mats[2],
        extrinsic_depth=h.mats[3],
        color_compression=COLOR_CODECS.get(h.c_comp, f"code {h.c_comp}"),
        depth_compression=DEPTH_CODECS.get(h.d_comp, f"code {h.d_comp}"),
        color_width=cw,
        color_height=ch,
        depth_width=dw,
        depth_height=dh,
        depth_shift=float(h.shift),
        camera_to_world=poses,
        color_offset=cols[0],
        color_length=cols[1],
        depth_offset=cols[2],
        depth_length=cols[3],
        timestamp_color=cols[4].astype(np.uint64),
        timestamp_depth=cols[5].astype(np.uint64),
    )
