"""Pinhole cameras in a synthetic room and an exact ray-cast RGB-D renderer.

Conventions are the project's (core/scene.py): OpenCV camera axes, camera-to-world 4x4,
pixel centres at integer (u, v) with a top-left origin, depth = camera z in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tttkd.synthetic.room import Room, surface_color


@dataclass(frozen=True)
class Camera:
    K: np.ndarray  # (3, 3)
    c2w: np.ndarray  # (4, 4) OpenCV axes
    width: int
    height: int


def image_wh(image_size: tuple[int, int]) -> tuple[int, int]:
    """``image_size`` as ``(width, height)``; anything else is an error, never a square guess."""
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        raise ValueError(f"image_size={image_size!r} is not (width, height), e.g. (64, 48)")
    return int(image_size[0]), int(image_size[1])


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """K for a horizontal field of view, principal point at the image centre."""
    fx = (width / 2.0) / np.tan(np.deg2rad(fov_deg) / 2.0)
    return np.array([[fx, 0, (width - 1) / 2.0], [0, fx, (height - 1) / 2.0], [0, 0, 1.0]])


def look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world (OpenCV axes) for a camera at ``position`` looking at ``target``, +Z up."""
    f = np.asarray(target, float) - np.asarray(position, float)
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = r, d, f, position
    return c2w


def place_cameras(
    room: Room,
    n: int,
    *,
    width: int = 160,
    height: int = 120,
    fov_deg: float = 75.0,
    seed: int = 0,
) -> list[Camera]:
    """``n`` cameras near the walls, at head height, looking into the room."""
    rng = np.random.default_rng(seed)
    w, l, h = room.size
    K = intrinsics_from_fov(width, height, fov_deg)
    cams = []
    for i in range(n):
        wall = (i + int(rng.integers(4))) % 4
        t = rng.uniform(0.25, 0.75)
        off = rng.uniform(0.25, 0.45)
        pos = {
            0: (t * w, off, 0),
            1: (w - off, t * l, 0),
            2: (t * w, l - off, 0),
            3: (off, t * l, 0),
        }[wall]
        pos = np.array([pos[0], pos[1], rng.uniform(1.3, min(1.8, h - 0.3))])
        target = np.array(
            [w / 2 + rng.uniform(-0.5, 0.5), l / 2 + rng.uniform(-0.5, 0.5), rng.uniform(0.4, 0.9)]
        )
        cams.append(Camera(K=K.copy(), c2w=look_at(pos, target), width=width, height=height))
    return cams


def render(room: Room, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast ``room``: (rgb uint8 (H,W,3), depth float32 metres (H,W), box index int32 (H,W)).

    Pixels that hit nothing get depth 0 and box index -1 (cannot happen inside a closed room).
    """
    H, W = cam.height, cam.width
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    K = cam.K
    dirs_cam = np.stack(
        [(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1
    ).reshape(-1, 3)
    R, o = cam.c2w[:3, :3], cam.c2w[:3, 3]
    dirs = dirs_cam @ R.T  # with camera z = 1, the ray parameter t equals the depth z
    t_best = np.full(len(dirs), np.inf)
    idx_best = np.full(len(dirs), -1, dtype=np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        for bi, box in enumerate(room.boxes):
            t0 = (np.asarray(box.lo) - o) * inv
            t1 = (np.asarray(box.hi) - o) * inv
            tmin = np.nanmax(np.minimum(t0, t1), axis=1)
            tmax = np.nanmin(np.maximum(t0, t1), axis=1)
            hit = (tmax >= tmin) & (tmin > 1e-6) & (tmin < t_best)
            t_best[hit] = tmin[hit]
            idx_best[hit] = bi
    rgb = np.zeros((len(dirs), 3))
    valid = idx_best >= 0
    pts = o + dirs * t_best[:, None]
    for bi, box in enumerate(room.boxes):
        m = idx_best == bi
        if m.any():
            rgb[m] = surface_color(box, pts[m])
    depth = np.where(valid, t_best, 0.0).astype(np.float32)
    rgb8 = np.round(rgb * 255).astype(np.uint8)
    return rgb8.reshape(H, W, 3), depth.reshape(H, W), idx_best.reshape(H, W)
