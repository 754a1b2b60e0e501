"""Turn a scene record into what ``Cache.write_scene`` stores: checked, encoded, described.

Kept apart from ``cache.py`` so the class stays about opening, listing, reading and the
write protocol (delete leftovers, write arrays, mark complete last).
"""

from __future__ import annotations

import numpy as np

from tttkd.pipeline.cache.codecs import (
    FeatureCodec,
    PcaBasis,
    decode_features,
    encode_features,
    feature_cosine,
)
from tttkd.pipeline.cache.record_checks import record_problems
from tttkd.pipeline.cache.records import CacheError, CacheMeta, SceneRecord, to_jsonable


def encode_scene(
    rec: SceneRecord, meta: CacheMeta, codec: FeatureCodec, pca: PcaBasis | None, url: str
) -> tuple[np.ndarray, float | None]:
    """Refuse an inconsistent record; its features as stored, and their cosine if lossy."""
    if rec.features is None:
        raise CacheError("the record has no features", file=url, scene=rec.scene_id)
    problems = record_problems(
        rec, num_classes=len(meta.class_names) or None, ignore_index=meta.ignore_index
    )
    if problems:
        raise CacheError(
            "refusing to write an inconsistent scene: " + "; ".join(problems),
            file=url,
            scene=rec.scene_id,
            fix="the prep stage built a bad record; report it with this message",
        )
    try:
        stored = encode_features(rec.features, codec, pca)
    except ValueError as e:
        raise CacheError(str(e), file=url, scene=rec.scene_id) from e
    if not all(np.isfinite(stored[i]).all() for i in range(len(stored))):
        raise CacheError(
            f"features overflow float16 under codec {codec.name}",
            file=url,
            scene=rec.scene_id,
            fix="the teacher's features exceed 65504; check the teacher weights",
        )
    cosine = (
        feature_cosine(rec.features, decode_features(stored, codec, pca)) if codec.lossy else None
    )
    return stored, cosine


def scene_attrs(rec: SceneRecord, codec: FeatureCodec, cosine: float | None, url: str) -> dict:
    """The scene group's attributes, with ``complete`` False until every array is written."""
    n_img, (h, w, dim) = len(rec.K), rec.features.shape[1:]
    try:
        info = to_jsonable(rec.attrs, "attrs")
    except TypeError as e:
        raise CacheError(str(e), file=url, scene=rec.scene_id) from e
    attrs = {
        "scene_id": rec.scene_id,
        "split": rec.split,
        "complete": False,
        "counts": {
            "points": rec.num_points,
            "full_points": len(rec.voxel_of_point),
            "images": n_img,
            "correspondences": rec.num_corr,
            "feature_grid": [h, w],
            "feature_dim": dim,
        },
        "feature_codec": codec.name,
        "feature_cosine": cosine,
        "info": info,
    }
    return attrs
