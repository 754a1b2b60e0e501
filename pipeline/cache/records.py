"""What the teacher cache holds, independent of how Zarr lays it out.

``CacheMeta`` is the cache-wide description (root attributes); ``SceneRecord`` is one scene
as the prep stage writes it and training reads it; ``summarize`` is the ``inspect`` table.
What makes a record consistent is checked in ``pipeline/cache/record_checks.py``; the layout
itself lives in ``pipeline/cache/store.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath
from typing import Any

import numpy as np

import tttkd
from tttkd.core import DatasetError
from tttkd.pipeline.cache.codecs import parse_codec
from tttkd.pipeline.voxelize import point_grid_size

# 2: points are kept on a fine grid (``point_voxel_size``), finer than the network voxel;
# 1 kept one point per network voxel (refused: consumers would see holes after rotation)
SCHEMA_VERSION = 2


class CacheError(DatasetError):
    """A cache that cannot be used as asked: names the cache, the scene and the fix."""

    def __reduce__(self):  # stay a CacheError across Dask/pickle boundaries
        return (_rebuild_cache_error, (self.problem, self.file, self.scene, self.fix))


def _rebuild_cache_error(
    problem: str, file: str | None, scene: str | None, fix: str | None
) -> CacheError:
    return CacheError(problem, file=file, scene=scene, fix=fix)


def schema_error(attrs: dict, url: str) -> CacheError:
    """The refusal of a cache written with another schema, naming the command that rebuilds it."""
    found = attrs.get("schema")
    why = (
        " (schema 1 kept one point per network voxel, so views voxelized after a rotation had "
        "holes; schema 2 keeps the points on a finer grid)"
        if found == 1
        else ""
    )
    root = (attrs.get("options") or {}).get("root") or "DATA_ROOT"
    command = (
        f"tttkd-prep {attrs.get('dataset') or 'DATASET'} --root {root} --cache {url} --overwrite"
    )
    return CacheError(
        f"cache schema {found} (written by tttkd {attrs.get('tttkd_version')}); this tttkd reads "
        f"schema {SCHEMA_VERSION}{why}",
        file=url,
        fix=f"rebuild it with `{command}` (plus the options it was made with), or read it "
        "with the tttkd that wrote it",
    )


def to_jsonable(value: Any, where: str = "value") -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and paths; a clear error otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise TypeError(f"{where}: {f} is not valid JSON; store finite numbers or None")
        return f
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string (JSON needs string keys)")
            out[k] = to_jsonable(v, f"{where}.{k}")
        return out
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-safe; convert it first")


_COMPARED = (
    "dataset",
    "voxel_size",
    "point_voxel_size",
    "image_policy",
    "teacher",
    "label_set",
    "class_names",
    "ignore_index",
    "feature_codec",
)


@dataclass(frozen=True)
class CacheMeta:
    """Cache-wide facts, stored as the root attributes; a rerun must agree on ``_COMPARED``.

    ``voxel_size`` is the network's voxel (the default of every consumer); the stored points
    lie on the finer ``point_voxel_size`` grid (None: ``voxel_size / 4``, see
    ``pipeline.voxelize.point_grid_size``), and consumers voxelize them after augmenting.
    """

    dataset: str
    voxel_size: float
    image_policy: dict
    teacher: dict  # TeacherSpec.to_dict()
    label_set: str
    class_names: tuple[str, ...]
    ignore_index: int = -1
    feature_codec: str = "fp16"
    options: dict = field(default_factory=dict)
    tttkd_version: str = tttkd.__version__
    schema: int = SCHEMA_VERSION
    point_voxel_size: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "voxel_size", float(self.voxel_size))
        grid = point_grid_size(self.voxel_size, self.point_voxel_size)
        object.__setattr__(self, "point_voxel_size", grid)
        object.__setattr__(self, "ignore_index", int(self.ignore_index))
        object.__setattr__(self, "feature_codec", parse_codec(self.feature_codec).name)
        for name in ("image_policy", "teacher", "options"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise TypeError(f"CacheMeta.{name} must be a dict, got {type(value).__name__}")
            object.__setattr__(self, name, to_jsonable(value, f"CacheMeta.{name}"))

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self), "CacheMeta")

    @classmethod
    def from_dict(cls, d: dict) -> CacheMeta:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def conflicts_with(self, other: CacheMeta) -> list[str]:
        """One line per field that makes ``other`` a different cache (empty: compatible)."""
        mine, theirs = self.to_dict(), other.to_dict()
        out = []
        for name in _COMPARED:
            a, b = mine[name], theirs[name]
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys)
                out.append(f"{name} differs ({detail})")
            else:
                out.append(f"{name}: {a!r} -> {b!r}")
        return out


@dataclass(eq=False)
class SceneRecord:
    """One scene of the cache. Shapes: N stored points (one per cell of the cache's fine
    ``point_voxel_size`` grid), P full points, I images, M correspondences.

    ``corr_*`` are grouped by image (CSR): the pairs of image ``i`` are
    ``corr_offsets[i]:corr_offsets[i+1]``; ``corr_uv`` is in feature-grid coordinates.
    """

    scene_id: str
    split: str | None
    xyz: np.ndarray  # f32 [N,3]
    rgb: np.ndarray  # u8 [N,3]
    label: np.ndarray  # i16 [N]
    voxel_of_point: np.ndarray  # i32 [P]
    full_label: np.ndarray  # i16 [P]
    features: np.ndarray | None  # f16/f32 [I,h,w,D]
    K: np.ndarray  # f32 [I,3,3]
    c2w: np.ndarray  # f32 [I,4,4]
    image_size: np.ndarray  # i32 [I,2] (W, H of the original colour image)
    image_names: list[str]
    corr_point: np.ndarray  # i32 [M]
    corr_image: np.ndarray  # i16 [M]
    corr_uv: np.ndarray  # f32 [M,2]
    corr_offsets: np.ndarray  # i64 [I+1]
    attrs: dict = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return int(len(self.xyz))

    @property
    def num_images(self) -> int:
        return int(len(self.K))

    @property
    def num_corr(self) -> int:
        return int(len(self.corr_point))


def no_views() -> dict[str, Any]:
    """The camera and correspondence fields of a scene stored without images (points only)."""
    return dict(
        K=np.zeros((0, 3, 3), np.float32),
        c2w=np.zeros((0, 4, 4), np.float32),
        image_size=np.zeros((0, 2), np.int32),
        image_names=[],
        corr_point=np.zeros(0, np.int32),
        corr_image=np.zeros(0, np.int16),
        corr_uv=np.zeros((0, 2), np.float32),
        corr_offsets=np.zeros(1, np.int64),
    )


def summarize(
    meta: CacheMeta, scenes: list[tuple[str, dict | None]], sizes: list[int], total_bytes: int
) -> dict:
    """The ``inspect`` table from per-scene attrs and byte counts (no array is read)."""
    rows, splits = [], {}
    for (scene_id, attrs), nbytes in zip(scenes, sizes):
        a = attrs or {}
        c = a.get("counts", {})
        row = {
            "scene_id": scene_id,
            "split": a.get("split"),
            "complete": bool(a.get("complete")),
            "points": int(c.get("points", 0)),
            "full_points": int(c.get("full_points", 0)),
            "images": int(c.get("images", 0)),
            "correspondences": int(c.get("correspondences", 0)),
            "feature_cosine": a.get("feature_cosine"),
            "bytes": int(nbytes),
        }
        rows.append(row)
        if not row["complete"]:
            continue
        s = splits.setdefault(str(row["split"]), dict.fromkeys(_SUMMED, 0))
        s["scenes"] += 1
        for k in _SUMMED[1:]:
            s[k] += row[k]
    totals = dict.fromkeys(_SUMMED, 0)
    for s in splits.values():
        for k in _SUMMED:
            totals[k] += s[k]
        s["corr_per_point"] = s["correspondences"] / s["points"] if s["points"] else 0.0
    totals["corr_per_point"] = (
        totals["correspondences"] / totals["points"] if totals["points"] else 0.0
    )
    cosines = [r["feature_cosine"] for r in rows if r["feature_cosine"] is not None]
    return {
        "dataset": meta.dataset,
        "feature_codec": meta.feature_codec,
        "scenes_per_split": {k: v["scenes"] for k, v in splits.items()},
        "incomplete": sum(not r["complete"] for r in rows),
        "totals": totals,
        "splits": splits,
        "feature_cosine": sum(cosines) / len(cosines) if cosines else None,
        "bytes_total": int(total_bytes),
        "bytes_per_scene": {r["scene_id"]: r["bytes"] for r in rows},
        "scenes": rows,
    }


_SUMMED = ("scenes", "points", "full_points", "images", "correspondences", "bytes")
