"""2D-3D-S: the posed RGB-D frames that go with S3DIS rooms (used by the S3DIS reader).

What is converted here, at the boundary, so nothing downstream knows it (FORMATS.md §2.3-2.4):

* Files ``area_X/data/{rgb,depth,pose}/camera_<uuid>_<roomType>_<n>_frame_<k>_domain_*``;
  a frame is used only when its pose JSON, RGB PNG and depth PNG all exist.
* ``camera_rt_matrix`` is a 3x4 world->camera [R|t] in OpenCV axes: ``c2w = inv([[R,t],[0,1]])``.
* ``camera_k_matrix`` comes from Blender, whose principal point ``cx = W/2`` is measured with
  pixel *corners* at integers. Our convention (core/scene.py) puts pixel *centres* at
  integers, so the reader returns ``cx - 0.5, cy - 0.5`` (the same ray through the same pixel).
  An image whose size contradicts K (``cx = cy = 540`` means 1080 x 1080) is an error.
* Depth PNG: uint16, value / 512 = metres (z-depth); 65535 = missing and 0 = invalid.
* ``area_5b`` has its own frame; its cameras are moved into the S3DIS Area_5 (= ``area_5a``)
  frame with ``c2w_5 = [[M, t], [0, 1]] @ c2w_5b`` (:data:`AREA_5B_TO_5A`).

The poses are in the frame of the *non-aligned* ``Stanford3dDataset_v1.2`` point clouds; the
S3DIS reader moves them into the aligned version's frame when asked.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from tttkd.core import DatasetError, Frame, ImageRef, require_regular_file
from tttkd.pipeline.datasets.protocol import evenly_spaced

DEPTH_SCALE = 512.0  # raw depth units per metre
DEPTH_INVALID = (0, 65535)

# area_5b -> area_5a (= S3DIS Area_5) rigid transform, FORMATS.md §2.4.
AREA_5B_TO_5A = np.array(
    [
        [0.0, 1.0, 0.0, -4.0970],
        [-1.0, 0.0, 0.0, 6.2262],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)

_AREA_DIR = re.compile(r"^area_(?P<n>[1-9])(?P<part>[ab]?)$")
_POSE_NAME = re.compile(
    r"^camera_(?P<uuid>[0-9A-Za-z]+)_(?P<room>[A-Za-z]+_\d+)_frame_(?P<frame>\d+)_domain_pose\.json$"
)
_SUFFIX = {"pose": "_domain_pose.json", "rgb": "_domain_rgb.png", "depth": "_domain_depth.png"}


def find_area_dirs(images_root: str | Path) -> dict[str, Path]:
    """``{"area_1": path, "area_5a": path, ...}`` for every area folder holding ``data/pose``.

    Looks in ``images_root`` and one level below it (some downloads extract as
    ``<archive name>/area_X``).
    """
    root = Path(images_root).expanduser()
    found: dict[str, Path] = {}
    candidates = []
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir():
                candidates.append(child)
                if not _AREA_DIR.match(child.name):
                    candidates.extend(sorted(c for c in child.iterdir() if c.is_dir()))
    for c in candidates:
        if _AREA_DIR.match(c.name) and (c / "data" / "pose").is_dir() and c.name not in found:
            found[c.name] = c
    return found


def area_dirs_for(images_root: str | Path, area: int) -> list[Path]:
    """The 2D-3D-S folders of S3DIS ``Area_<area>`` (Area_5 -> area_5a and area_5b)."""
    dirs = find_area_dirs(images_root)
    out = []
    for name, path in sorted(dirs.items()):
        m = _AREA_DIR.match(name)
        if m and int(m.group("n")) == area:
            out.append(path)
    return out


def world_from_area_dir(area_dir: Path) -> np.ndarray:
    """4x4 taking a 2D-3D-S area folder's frame to the S3DIS area frame (identity but 5b)."""
    return AREA_5B_TO_5A.copy() if area_dir.name == "area_5b" else np.eye(4)


def _names(folder: Path, suffix: str) -> set[str]:
    """Frame stems in ``folder`` with ``suffix`` (one directory listing, no per-file stat)."""
    try:
        with os.scandir(folder) as it:
            return {e.name[: -len(suffix)] for e in it if e.name.endswith(suffix)}
    except FileNotFoundError:
        return set()


def list_frame_stems(area_dir: Path, room: str) -> list[str]:
    """Stems ``camera_<uuid>_<room>_frame_<k>`` of ``room`` with pose, RGB and depth present."""
    data = area_dir / "data"
    poses = []
    for stem in _names(data / "pose", _SUFFIX["pose"]):
        m = _POSE_NAME.match(stem + _SUFFIX["pose"])
        if m and m.group("room") == room:
            poses.append((m.group("uuid"), int(m.group("frame")), stem))
    if not poses:
        return []
    rgb = _names(data / "rgb", _SUFFIX["rgb"])
    depth = _names(data / "depth", _SUFFIX["depth"])
    posed = {stem for _, _, stem in poses}
    missing = [  # the file each incomplete frame lacks: dropped with a warning, never quietly
        data / kind / (stem + _SUFFIX[kind])
        for stem in sorted(posed | {s for s in rgb if _room_of(s) == room})
        for kind, have in (("pose", posed), ("rgb", rgb), ("depth", depth))
        if stem not in have
    ]
    if missing:
        warnings.warn(
            f"{len(missing)} file(s) of frames of {room} are missing (those frames are "
            f"dropped): {', '.join(map(str, missing[:5]))}",
            stacklevel=4,  # the caller of S3DIS load_scene (via load_frames)
        )
    return [stem for _, _, stem in sorted(poses) if stem in rgb and stem in depth]


def _room_of(stem: str) -> str | None:
    m = _POSE_NAME.match(stem + _SUFFIX["pose"])
    return m.group("room") if m else None


def _matrix(value: object, shapes: tuple[tuple[int, int], ...]) -> np.ndarray | None:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    for shape in shapes:
        if arr.shape == shape:
            return arr
        if arr.size == shape[0] * shape[1] and arr.ndim == 1:
            return arr.reshape(shape)
    return None


def read_pose(path: Path, *, scene: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(K as stored (3, 3), world->camera 4x4 OpenCV) from one ``*_domain_pose.json``."""
    require_regular_file(path, scene)  # a FIFO would block forever
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise DatasetError(
            f"cannot read pose JSON ({e})",
            file=path,
            scene=scene,
            fix="the file is missing or corrupt; extract it again from the 2D-3D-S archive",
        ) from e
    missing = [k for k in ("camera_k_matrix", "camera_rt_matrix") if k not in data]
    if not isinstance(data, dict) or missing:
        raise DatasetError(
            f"pose JSON lacks {', '.join(missing) or 'an object'} (needs camera_k_matrix 3x3 and "
            "camera_rt_matrix 3x4 world->camera)",
            file=path,
            scene=scene,
            fix="point images_root at the original 2D-3D-S area_X folders (data/pose/*.json)",
        )
    K = _matrix(data["camera_k_matrix"], ((3, 3),))
    rt = _matrix(data["camera_rt_matrix"], ((3, 4), (4, 4)))
    if K is None or rt is None:
        raise DatasetError(
            "camera_k_matrix must be 3x3 and camera_rt_matrix 3x4 (or 4x4)",
            file=path,
            scene=scene,
            fix="the pose file is not a 2D-3D-S pose; restore it from the dataset",
        )
    w2c = np.eye(4)
    w2c[:3, :4] = rt[:3, :4]
    return K, w2c


def blender_to_opencv_K(K: np.ndarray) -> np.ndarray:
    """Blender K (pixel corners at integers) -> ours (pixel centres at integers)."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 2] -= 0.5
    out[1, 2] -= 0.5
    return out


def _image_size(path: Path, scene: str | None) -> tuple[int, int]:
    from PIL import Image

    require_regular_file(path, scene)  # a FIFO would block forever
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # Pillow raises several unrelated types for bad files
        raise DatasetError(
            f"not a readable image ({e})",
            file=path,
            scene=scene,
            fix="the file is corrupt or not an image; restore it from the 2D-3D-S archive",
        ) from e


def load_frames(
    images_root: str | Path,
    area: int,
    room: str,
    *,
    scene: str | None = None,
    max_views: int | None = None,
) -> list[Frame]:
    """Frames of S3DIS room ``Area_<area>/<room>`` with ``c2w`` in the S3DIS raw area frame.

    ``max_views`` keeps that many evenly spaced frames (all when None). Frames whose pose has
    non-finite or non-rigid numbers are skipped with a warning.
    """
    items: list[tuple[Path, str]] = []
    for area_dir in area_dirs_for(images_root, area):
        stems = list_frame_stems(area_dir, room)  # not in a comprehension (its own stack frame)
        items.extend((area_dir, stem) for stem in stems)
    items = evenly_spaced(items, max_views)
    frames = []
    skipped = []
    for area_dir, stem in items:
        frame = _frame(area_dir, stem, scene)
        if frame is None:
            skipped.append(stem + _SUFFIX["pose"])
            continue
        frames.append(frame)
    if skipped:
        warnings.warn(
            f"{scene}: skipped {len(skipped)} frame(s) with non-finite or non-rigid poses "
            f"(first: {skipped[0]})",
            stacklevel=3,  # the caller of S3DIS load_scene
        )
    return frames


def _frame(area_dir: Path, stem: str, scene: str | None) -> Frame | None:
    """One lazy frame, posed in the S3DIS raw area frame; None when its pose is not a finite
    rigid transform. An image whose size contradicts its K is an error."""
    data = area_dir / "data"
    pose_path = data / "pose" / (stem + _SUFFIX["pose"])
    rgb_path = data / "rgb" / (stem + _SUFFIX["rgb"])
    depth_path = data / "depth" / (stem + _SUFFIX["depth"])
    K_file, w2c = read_pose(pose_path, scene=scene)
    R = w2c[:3, :3]
    if not (np.isfinite(w2c).all() and np.isfinite(K_file).all()) or not np.allclose(
        R @ R.T, np.eye(3), atol=1e-3
    ):
        return None
    width, height = _image_size(rgb_path, scene)
    cx, cy = K_file[0, 2], K_file[1, 2]
    if abs(cx - width / 2) > 1.0 or abs(cy - height / 2) > 1.0:
        raise DatasetError(
            f"RGB image is {width}x{height} but camera_k_matrix has principal point "
            f"({cx:g}, {cy:g}), i.e. a {2 * cx:g}x{2 * cy:g} image",
            file=rgb_path,
            scene=scene,
            fix=f"use the original (not resized) 2D-3D-S images, or fix {pose_path.name}",
        )
    return Frame(
        name=stem,
        K=blender_to_opencv_K(K_file),
        c2w=world_from_area_dir(area_dir) @ np.linalg.inv(w2c),
        width=int(width),
        height=int(height),
        color=ImageRef(str(rgb_path)),
        depth=ImageRef(str(depth_path)),
        depth_scale=DEPTH_SCALE,
        depth_invalid=DEPTH_INVALID,
    )
