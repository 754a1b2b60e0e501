"""Reading one complete scene group: all of it, a subset of its images (only those feature
chunks are read), or its points only. ``Cache.read_scene`` / ``read_points`` call these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tttkd.pipeline.cache.integrity import CheckedGroup
from tttkd.pipeline.cache.layout import (
    CAMERA_ARRAYS,
    CORR_ARRAYS,
    FEATURES,
    NAMES,
    OFFSETS,
    POINT_ARRAYS,
    encode_scene_id,
    read_corr_subset,
    scene_path,
)
from tttkd.pipeline.cache.records import CacheError, SceneRecord, no_views


def complete_group(store: Any, url: str, scene_id: str) -> CheckedGroup:
    """The scene's group, refused when missing or incomplete; its reads check chunks exist."""
    import zarr

    path = scene_path(encode_scene_id(scene_id))
    try:
        g = zarr.open_group(store, path=path, mode="r")
    except Exception as e:
        raise CacheError(
            "no such scene in the cache",
            file=url,
            scene=scene_id,
            fix="list the scenes with Cache.scene_ids() / tttkd-prep inspect",
        ) from e
    if not g.attrs.get("complete"):
        raise CacheError(
            "the scene is incomplete (its write was interrupted)",
            file=url,
            scene=scene_id,
            fix="rerun tttkd-prep with the same --cache; it redoes incomplete scenes",
        )
    return CheckedGroup(store, path, g, scene_id, url)  # chunks present


def read_scene_group(
    g: Any,
    scene_id: str,
    url: str,
    images: Sequence[int] | None,
    decode: Callable[[np.ndarray], np.ndarray] | None,
) -> SceneRecord:
    """The scene in group ``g``; ``images`` as in ``Cache.read_scene``; ``decode`` turns the
    stored features into float features (None: features are not read)."""
    arrays = {f: g[k][...] for k, f in POINT_ARRAYS + CAMERA_ARRAYS}
    names = [str(s) for s in g[NAMES][...]]
    offsets = g[OFFSETS][...]
    n_img = len(arrays["K"])
    if images is None:
        idx = None
        corr = {f: g[k][...] for k, f in CORR_ARRAYS}
    else:
        idx = np.asarray(images, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_img):
            raise CacheError(
                f"image indices must lie in 0..{n_img - 1}, got {idx.tolist()}",
                file=url,
                scene=scene_id,
            )
        for f in ("K", "c2w", "image_size"):
            arrays[f] = arrays[f][idx]
        names = [names[i] for i in idx]
        corr, offsets = read_corr_subset(g, offsets, idx)
    feats = None if decode is None else decode(_stored_features(g, idx))
    return SceneRecord(
        scene_id=scene_id,
        split=g.attrs.get("split"),
        features=feats,
        image_names=names,
        corr_offsets=offsets,
        attrs=dict(g.attrs.get("info", {})),
        **arrays,
        **corr,
    )


def _stored_features(g: Any, idx: np.ndarray | None) -> np.ndarray:
    """The stored feature chunks of images ``idx`` (None: every image)."""
    arr = g[FEATURES]
    if idx is None:
        return arr[...]
    if idx.size:
        return arr.oindex[idx]
    return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)


def read_points_group(g: Any, scene_id: str) -> SceneRecord:
    """Points and full-resolution labels only: no images, no correspondences."""
    return SceneRecord(
        scene_id=scene_id,
        split=g.attrs.get("split"),
        features=None,
        **no_views(),
        attrs=dict(g.attrs.get("info", {})),
        **{f: g[k][...] for k, f in POINT_ARRAYS},
    )
