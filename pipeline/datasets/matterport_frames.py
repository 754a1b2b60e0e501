"""Matterport3D frames: pair the ``.conf`` cameras with a region and make lazy frames.

Pairing (OpenScene's rule): the cameras whose centre lies strictly inside the region's
bounding box, else the ``nearest`` cameras to the box centre. Poses are converted from
OpenGL to OpenCV axes here, at the boundary; image sizes come from the files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tttkd.core import DatasetError, Frame, ImageRef
from tttkd.pipeline.datasets.matterport_formats import (
    DEPTH_SCALE,
    CameraConf,
    ConfImage,
    opengl_to_opencv,
)
from tttkd.pipeline.datasets.protocol import evenly_spaced


def pair_views(
    centres: np.ndarray, lo: np.ndarray, hi: np.ndarray, nearest: int = 100
) -> np.ndarray:
    """Indices of the cameras for a region: centre strictly inside [lo, hi], else the
    ``nearest`` cameras to the box centre (non-finite centres never count)."""
    centres = np.asarray(centres, dtype=np.float64)
    ok = np.isfinite(centres).all(axis=1)
    inside = ok & np.all((centres > lo) & (centres < hi), axis=1)
    if inside.any():
        return np.flatnonzero(inside)
    dist = np.linalg.norm(np.where(ok[:, None], centres, 0.0) - (lo + hi) / 2.0, axis=1)
    dist[~ok] = np.inf
    order = np.argsort(dist, kind="stable")[: max(0, nearest)]
    return np.sort(order[np.isfinite(dist[order])])


def _paired(
    conf: CameraConf, xyz: np.ndarray, *, max_views: int | None, nearest_views: int
) -> np.ndarray:
    """Indices of the cameras paired with the region whose points are ``xyz``, thinned to
    ``max_views``; a camera with a non-finite pose never pairs."""
    c2w_gl = np.stack([im.c2w_gl for im in conf.images])
    ok = np.isfinite(c2w_gl).all(axis=(1, 2))
    centres = np.where(ok[:, None], c2w_gl[:, :3, 3], np.nan)
    lo, hi = xyz.min(axis=0).astype(np.float64), xyz.max(axis=0).astype(np.float64)
    idx = pair_views(centres, lo, hi, nearest_views)
    return np.asarray(evenly_spaced(idx, max_views), dtype=idx.dtype)


def _frame(
    im: ConfImage, cpath: Path, depth_dir: Path | None, *, flip_cy: bool, scene: str
) -> Frame:
    """One lazy frame; its size comes from the colour file's header, and intrinsics that do
    not fit that size (resized or foreign images) are an error."""
    from PIL import Image

    try:
        with Image.open(cpath) as pil:
            width, height = pil.size
    except Exception as e:  # Pillow raises several unrelated types for bad files
        raise DatasetError(
            f"not a readable image ({e})", file=cpath, scene=scene, fix="extract it again"
        ) from e
    K = np.array(im.K, dtype=np.float64, copy=True)
    if flip_cy:
        K[1, 2] = height - 1 - K[1, 2]
    if abs(K[0, 2] - (width - 1) / 2) > width / 4 or abs(K[1, 2] - (height - 1) / 2) > height / 4:
        raise DatasetError(
            f"image is {width}x{height} but its intrinsics put the principal point at "
            f"({K[0, 2]:.1f}, {K[1, 2]:.1f})",
            file=cpath,
            scene=scene,
            fix="the images were resized or do not belong to this .conf; use the original "
            "undistorted images",
        )
    dpath = depth_dir / im.depth_name if depth_dir is not None else None
    return Frame(
        name=Path(im.color_name).stem,
        K=K,
        c2w=opengl_to_opencv(im.c2w_gl),
        width=int(width),
        height=int(height),
        color=ImageRef(str(cpath)),
        # a missing depth PNG fails the frame's load (naming it), never drops depth quietly
        depth=ImageRef(str(dpath)) if dpath is not None else None,
        depth_scale=DEPTH_SCALE,
        depth_invalid=(0,),
    )


def region_frames(
    conf: CameraConf,
    color_dir: Path | None,
    depth_dir: Path | None,
    xyz: np.ndarray,
    *,
    scene: str,
    house_dir: Path,
    max_views: int | None = None,
    nearest_views: int = 100,
    flip_cy: bool = False,
) -> list[Frame]:
    """Lazy frames of the cameras paired with the region whose points are ``xyz``; paired
    images that are missing are dropped with a warning (all of them missing is an error)."""
    idx = _paired(conf, xyz, max_views=max_views, nearest_views=nearest_views)
    if color_dir is None and len(idx):
        raise DatasetError(
            f"colour images not found ({conf.color_directory}/)",
            file=house_dir,
            scene=scene,
            fix="download and extract undistorted_color_images.zip into v1/scans, "
            "or call load_scene(..., frames=None)",
        )
    frames, missing_names = [], []
    for i in idx.tolist():
        im = conf.images[i]
        cpath = color_dir / im.color_name
        if not cpath.is_file():
            missing_names.append(str(cpath))
            continue
        frames.append(_frame(im, cpath, depth_dir, flip_cy=flip_cy, scene=scene))
    if missing_names:
        missing = len(missing_names)
        if not frames:
            raise DatasetError(
                f"none of the {missing} paired colour images exists",
                file=color_dir,
                scene=scene,
                fix="extract undistorted_color_images.zip of this house again",
            )
        warnings.warn(
            f"{scene}: {missing} of {missing + len(frames)} paired colour images are missing "
            f"(their frames are dropped): {', '.join(missing_names[:5])}",
            stacklevel=3,
        )
    return frames
