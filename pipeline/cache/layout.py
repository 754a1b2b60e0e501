"""Zarr paths and group-level helpers shared by ``pipeline/cache/store.py`` (the layout's owner).

The diagram of the layout is in ``cache.py``'s docstring; this module holds the names, the
scene-id escaping, store opening, the CSR subset read and the per-group verification, so
``cache.py`` stays one class. Nothing outside ``cache*.py`` imports it.
"""

from __future__ import annotations

import asyncio
import os
import re
import string
import warnings
from typing import Any

import numpy as np

from tttkd.pipeline.cache.codecs import parse_codec
from tttkd.pipeline.cache.record_checks import record_problems
from tttkd.pipeline.cache.records import CacheMeta, SceneRecord

FORMAT = "tttkd-teacher-cache"
SCENES = "scenes"
PCA = "pca"
CHUNK_ROWS = 1 << 20  # rows per chunk of the per-point arrays (4-12 MB raw)
# (path inside a scene group, SceneRecord field)
POINT_ARRAYS = (
    ("points/xyz", "xyz"),
    ("points/rgb", "rgb"),
    ("points/label", "label"),
    ("full/voxel_of_point", "voxel_of_point"),
    ("full/label", "full_label"),
)
CAMERA_ARRAYS = (("images/K", "K"), ("images/c2w", "c2w"), ("images/size", "image_size"))
CORR_ARRAYS = (("corr/point", "corr_point"), ("corr/image", "corr_image"), ("corr/uv", "corr_uv"))
OFFSETS = "corr/offsets"
FEATURES = "images/features"
NAMES = "images/name"
_SAFE = frozenset(string.ascii_letters + string.digits + "-_.")


def encode_scene_id(scene_id: str) -> str:
    """Scene id -> group name: ``[A-Za-z0-9._-]`` kept, every other character as ``~XX``
    (its UTF-8 bytes); a leading ``.``/``_`` is escaped too (Zarr reserves ``__``)."""
    if not isinstance(scene_id, str) or not scene_id:
        raise ValueError(f"scene ids must be non-empty strings, got {scene_id!r}")
    out = []
    for i, ch in enumerate(scene_id):
        if ch in _SAFE and not (i == 0 and ch in "._"):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_scene_id(name: str) -> str:
    """Inverse of :func:`encode_scene_id`."""
    raw, i = bytearray(), 0
    while i < len(name):
        if name[i] == "~":
            raw.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(name[i].encode("utf-8"))
            i += 1
    return raw.decode("utf-8")


def scene_path(name: str) -> str:
    return f"{SCENES}/{name}"


def run_sync(coro: Any) -> Any:
    """Run a zarr store coroutine on zarr's own event loop."""
    from zarr.core.sync import sync

    return sync(coro)


def open_store(url: str, *, read_only: bool, storage_options: dict | None) -> Any:
    """A local path -> LocalStore (atomic writes); any other URL -> FsspecStore."""
    from zarr.storage import FsspecStore, LocalStore

    url = os.fspath(url)
    if "://" in url:
        opts = dict(storage_options or {})
        if url.startswith("file://"):
            opts.setdefault("auto_mkdir", True)
        return FsspecStore.from_url(url, storage_options=opts, read_only=read_only)
    return LocalStore(url, read_only=read_only)


def chunks_for(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (max(1, min(shape[0], CHUNK_ROWS)), *(max(1, s) for s in shape[1:]))


# A LocalStore writes ``zarr.json`` via ``zarr.<uuid4 hex>.partial`` + rename; a process killed
# between the two leaves that file beside the scene groups. It is not a scene.
_ZARR_TEMP = re.compile(r"^zarr\.[0-9a-f]{32}\.partial$")


def list_scene_groups(store: Any) -> list[tuple[str, dict | None]]:
    """(group name, attrs or None when unreadable) of every scene group, sorted, read
    concurrently (one small metadata read per scene)."""
    import zarr.api.asynchronous as za

    async def run() -> list[tuple[str, dict | None]]:
        try:
            names = [n async for n in store.list_dir(SCENES)]
        except FileNotFoundError:
            return []
        names = sorted(n for n in names if n != "zarr.json" and not _ZARR_TEMP.match(n))

        async def one(name: str) -> dict | None:
            try:
                return dict(
                    (await za.open_group(store=store, path=scene_path(name), mode="r")).attrs
                )
            except Exception:  # no or unreadable metadata: a write that never got far
                return None

        return list(zip(names, await asyncio.gather(*(one(n) for n in names))))

    return run_sync(run())


def read_group_attrs(store: Any, name: str) -> dict | None:
    """A scene group's attrs, or None when it is absent or unreadable."""
    import zarr

    try:
        return dict(zarr.open_group(store, path=scene_path(name), mode="r").attrs)
    except Exception:
        return None


def write_group_arrays(group: Any, rec: SceneRecord, stored: np.ndarray, codec: str) -> None:
    """Every array of a scene into its (new) group; ``stored`` are the encoded features."""
    from zarr.codecs import ZstdCodec
    from zarr.errors import UnstableSpecificationWarning

    zstd = [ZstdCodec(level=3, checksum=True)]  # a damaged chunk fails to decode, loudly
    for key, field_name in POINT_ARRAYS + CAMERA_ARRAYS + CORR_ARRAYS:
        data = getattr(rec, field_name)
        group.create_array(key, data=data, chunks=chunks_for(data.shape), compressors=zstd)
    group.create_array(OFFSETS, data=rec.corr_offsets, compressors=zstd)
    group.create_array(
        FEATURES,
        data=stored,
        chunks=(1, *(max(1, s) for s in stored.shape[1:])),  # one chunk per image
        compressors=zstd,
        attributes={"codec": codec, "decoded_dim": int(rec.features.shape[-1])},
    )
    width = max([1, *(len(s) for s in rec.image_names)])
    with warnings.catch_warnings():  # fixed-width unicode has no v3 spec entry yet
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        names = np.array(rec.image_names, dtype=f"<U{width}")
        group.create_array(NAMES, data=names, chunks=chunks_for(names.shape))


def read_corr_subset(g: Any, offsets: np.ndarray, idx: np.ndarray) -> tuple[dict, np.ndarray]:
    """Correspondences of images ``idx`` (in that order), re-indexed to 0..len(idx)-1.

    Reads one contiguous range covering the chosen images, so a subset costs at most the
    chunks between its first and last image.
    """
    starts, ends = offsets[idx], offsets[idx + 1]
    counts = ends - starts
    new_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if not counts.sum():
        corr = {f: g[k][0:0] for k, f in CORR_ARRAYS}
    else:
        lo, hi = int(starts[counts > 0].min()), int(ends[counts > 0].max())
        take = np.concatenate([np.arange(s - lo, e - lo) for s, e in zip(starts, ends)])
        corr = {f: g[k][lo:hi][take] for k, f in CORR_ARRAYS}
    corr["corr_image"] = np.repeat(np.arange(len(idx)), counts).astype(np.int16)
    return corr, new_offsets


def verify_group(g: Any, attrs: dict, meta: CacheMeta, scene_id: str) -> list[str]:
    """Problems of one complete scene group as stored (arrays, counts, codec, finiteness)."""
    try:
        arrays = {f: g[k][...] for k, f in POINT_ARRAYS + CAMERA_ARRAYS + CORR_ARRAYS}
        arrays["corr_offsets"] = g[OFFSETS][...]
        names = [str(s) for s in g[NAMES][...]]
        feats = g[FEATURES]
    except Exception as e:  # a missing or undecodable array
        return [f"cannot read its arrays: {type(e).__name__}: {e}"]
    rec = SceneRecord(
        scene_id=scene_id, split=attrs.get("split"), features=None, image_names=names, **arrays
    )
    counts = attrs.get("counts", {})
    if feats.dtype != np.float16 or feats.ndim != 4:
        return [f"features: {feats.dtype} {feats.shape}, expected float16 [I, h, w, D]"]
    p = []
    want_dim = parse_codec(meta.feature_codec).stored_dim(int(counts.get("feature_dim", -1)))
    if feats.shape[0] != len(rec.K) or feats.shape[3] != want_dim:
        p.append(f"features: shape {feats.shape}, expected [{len(rec.K)}, h, w, {want_dim}]")
    p += record_problems(
        rec,
        num_classes=len(meta.class_names) or None,
        ignore_index=meta.ignore_index,
        grid_hw=feats.shape[1:3],
    )
    bad = [i for i in range(feats.shape[0]) if not np.isfinite(feats[i]).all()]
    if bad:
        p.append(f"features: non-finite values in images {bad[:10]}")
    have = {
        "points": rec.num_points,
        "full_points": len(rec.voxel_of_point),
        "images": rec.num_images,
        "correspondences": rec.num_corr,
    }
    p += [
        f"counts.{k}: attrs say {counts.get(k)}, arrays hold {v}"
        for k, v in have.items()
        if counts.get(k) != v
    ]
    if attrs.get("feature_codec") != meta.feature_codec:
        p.append(f"feature_codec {attrs.get('feature_codec')!r} differs from the cache's")
    return p
