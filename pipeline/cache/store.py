"""The teacher cache: the one module that knows its Zarr layout (DESIGN.md, "The cache").

```
feats.zarr/                    attrs: format, schema (2), dataset, voxel_size,
                               point_voxel_size, image_policy, teacher, label_set,
                               class_names, ignore_index, feature_codec, options, tttkd_version
  pca/mean f32 [D]  pca/components f32 [k,D]          (only for the "pca<k>" codecs)
  scenes/<encoded id>/         attrs: scene_id, split, counts, info, feature_codec,
                               feature_cosine, complete (written LAST)
    points/xyz f32 [N,3]  points/rgb u8 [N,3]  points/label i16 [N]
    full/voxel_of_point i32 [P]  full/label i16 [P]
    images/features f16 [I,h,w,D'] (one chunk per image; D' = k under PCA)
    images/K f32 [I,3,3]  images/c2w f32 [I,4,4]  images/size i32 [I,2]  images/name <U [I]
    corr/point i32 [M]  corr/image i16 [M]  corr/uv f32 [M,2]  corr/offsets i64 [I+1]
```
``points/*`` hold one point per cell of the fine ``point_voxel_size`` grid (default the
network's ``voxel_size`` / 4), not per network voxel: consumers voxelize them at ``voxel_size``
after their augmentation (``pipeline/voxelize.py``). ``full/voxel_of_point`` maps every
full-resolution point to its stored point; ``corr/point`` indexes stored points. A schema-1
cache (one point per network voxel) is refused with the command that rebuilds it.
Every array is zstd-compressed; no object or variable-length dtypes. Scene ids may contain
"/" (S3DIS ``Area_5/office_1``): group names escape every character outside ``[A-Za-z0-9._-]``
as ``~XX`` (UTF-8 bytes, e.g. ``Area_5~2Foffice_1``), reversibly; the id is also in the attrs.
Helpers (this package): paths and group-level checks in ``layout.py``, feature codecs in
``codecs.py``, ``CacheMeta``/``SceneRecord`` in ``records.py``, record checks in
``record_checks.py``, encoding before a write in ``encode.py``, root checks of create/open
in ``opening.py``, reads of a scene group in ``reading.py``.

Reliability: only the driver writes root metadata (``create``, ``set_pca``); ``write_scene``
touches only its own scene group, deletes a leftover incomplete group first, and sets
``complete`` after every array, so separate processes may write distinct scenes at once and a
killed writer leaves a group that readers refuse and a rerun redoes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tttkd.pipeline.cache.codecs import (
    FeatureCodec,
    PcaBasis,
    codec_fidelity,
    decode_features,
    feature_cosine,
    fit_pca,
    parse_codec,
)
from tttkd.pipeline.cache.encode import encode_scene, scene_attrs
from tttkd.pipeline.cache.integrity import (
    MANIFEST,
    basis_error,
    manifest_problems,
    read_basis,
    scene_manifest,
    seal_group,
    with_root_digest,
)
from tttkd.pipeline.cache.layout import (
    FORMAT,
    PCA,
    SCENES,
    decode_scene_id,
    encode_scene_id,
    list_scene_groups,
    open_store,
    read_group_attrs,
    run_sync,
    scene_path,
    verify_group,
    write_group_arrays,
)
from tttkd.pipeline.cache.opening import checked_root_attrs, resumable_meta
from tttkd.pipeline.cache.reading import complete_group, read_points_group, read_scene_group
from tttkd.pipeline.cache.record_checks import normalized
from tttkd.pipeline.cache.records import (
    SCHEMA_VERSION,
    CacheError,
    CacheMeta,
    SceneRecord,
    summarize,
)

__all__ = [
    "SCHEMA_VERSION",
    "Cache",
    "CacheError",
    "CacheMeta",
    "FeatureCodec",
    "PcaBasis",
    "SceneRecord",
    "codec_fidelity",
    "decode_scene_id",
    "encode_scene_id",
    "feature_cosine",
    "fit_pca",
    "parse_codec",
]


def _reopen(url: str, read_only: bool, storage_options: dict | None) -> Cache:
    return Cache.open(url, read_only=read_only, storage_options=storage_options)


class Cache:
    """A teacher cache at ``url`` (local path or fsspec URL); make one with create/open."""

    def __init__(
        self, store: Any, url: str, meta: CacheMeta, read_only: bool, storage_options: dict | None
    ) -> None:
        self._store = store
        self.url = str(url)
        self.meta = meta
        self.read_only = read_only
        self._storage_options = storage_options
        self._pca: PcaBasis | None = None

    def __reduce__(self) -> tuple:  # Dask ships the cache to workers; they reopen it
        return (_reopen, (self.url, self.read_only, self._storage_options))

    def __repr__(self) -> str:
        return (
            f"Cache({self.url!r}, dataset={self.meta.dataset!r}, codec={self.meta.feature_codec})"
        )

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        url: str,
        meta: CacheMeta,
        *,
        overwrite: bool = False,
        storage_options: dict | None = None,
    ) -> Cache:
        """New cache, or resume an existing one with the same meta; ``overwrite`` wipes it.

        Never deletes a store that is not a tttkd cache (a mistyped ``--cache`` must not wipe
        someone's folder).
        """
        import zarr

        store = open_store(url, read_only=False, storage_options=storage_options)
        old = resumable_meta(store, url, meta, overwrite)
        if old is not None:
            return cls(store, url, old, False, storage_options)
        attrs = with_root_digest({"format": FORMAT, **meta.to_dict()})
        root = zarr.open_group(store, mode="w", attributes=attrs)
        root.create_group(SCENES)
        return cls(store, url, meta, False, storage_options)

    @classmethod
    def open(
        cls, url: str, *, read_only: bool = False, storage_options: dict | None = None
    ) -> Cache:
        """Open an existing cache; workers write scenes through it (``read_only=False``)."""
        probe = open_store(url, read_only=True, storage_options=storage_options)
        attrs = checked_root_attrs(probe, url)
        store = (
            probe
            if read_only
            else open_store(url, read_only=False, storage_options=storage_options)
        )
        return cls(store, url, CacheMeta.from_dict(attrs), read_only, storage_options)

    # ---- PCA basis (driver only) ---------------------------------------------------------
    @property
    def codec(self) -> FeatureCodec:
        return parse_codec(self.meta.feature_codec)

    @property
    def pca(self) -> PcaBasis | None:
        """The stored basis (pca codecs; None until the driver called set_pca), checked
        against its integrity record, loaded once. A damaged one is a ``CacheError``, unless no
        scene was written yet (a set_pca cut short: the driver fits it again)."""
        if self._pca is None and self.codec.pca_k is not None:
            basis, problems = read_basis(self._store, self.url)
            if problems and self.scene_ids(include_incomplete=True):
                raise basis_error(problems, self.url)
            self._pca = basis
        return self._pca

    def _basis(self, scene_id: str) -> PcaBasis | None:
        """The basis a read of ``scene_id`` decodes with (None: not a pca codec)."""
        if self.codec.pca_k is None:
            return None
        if self._pca is None:
            basis, problems = read_basis(self._store, self.url)
            if basis is None:
                raise basis_error(problems, self.url, scene_id)
            self._pca = basis
        return self._pca

    def set_pca(self, basis: PcaBasis) -> None:
        """Store the PCA basis at the root; the driver calls it once, before any scene."""
        import zarr

        k = self.codec.pca_k
        if k is None or basis.k != k:
            raise CacheError(
                f"a PCA basis with k={basis.k} does not fit codec {self.meta.feature_codec}",
                file=self.url,
                fix=f"fit the basis with fit_pca(samples, {k})"
                if k
                else "create the cache with feature_codec='pca<k>'",
            )
        current = self.pca
        if current is not None and current == basis:
            return
        if current is not None and self.scene_ids(include_incomplete=True):
            raise CacheError(
                "the cache already holds scenes encoded with another PCA basis",
                file=self.url,
                fix="rerun with --overwrite to rebuild the cache with the new basis",
            )
        self._check_writable()
        ratio = list(basis.explained_variance_ratio)
        attrs = {"k": k, "dim": basis.dim, "explained_variance_ratio": ratio}
        g = zarr.open_group(self._store, path=PCA, mode="w", attributes=attrs)
        g.create_array("mean", data=basis.mean)
        g.create_array("components", data=basis.components)
        seal_group(self._store, PCA, g)  # checksums: every scene's features decode with it
        self._pca = basis

    # ---- listing ---------------------------------------------------------------------------
    def _entries(self) -> list[tuple[str, dict | None]]:
        """(group name, attrs or None when unreadable) for every scene group, sorted."""
        return list_scene_groups(self._store)

    def _group_attrs(self, name: str) -> dict | None:
        return read_group_attrs(self._store, name)

    @staticmethod
    def _entry_id(name: str, attrs: dict | None) -> str:
        return (attrs or {}).get("scene_id") or decode_scene_id(name)

    def scene_ids(self, split: str | None = None, *, include_incomplete: bool = False) -> list[str]:
        """Complete scenes (optionally of one split), sorted."""
        out = []
        for name, attrs in self._entries():
            done = bool(attrs and attrs.get("complete"))
            if not (done or include_incomplete):
                continue
            if split is not None and (attrs or {}).get("split") != split:
                continue
            out.append(self._entry_id(name, attrs))
        return sorted(out)

    def is_complete(self, scene_id: str) -> bool:
        attrs = self._group_attrs(encode_scene_id(scene_id))
        return bool(attrs and attrs.get("complete"))

    def scene_info(self, scene_id: str) -> dict:
        """The scene group's attributes (split, counts, info, codec, cosine, complete)."""
        attrs = self._group_attrs(encode_scene_id(scene_id))
        if attrs is None:
            raise CacheError("no such scene in the cache", file=self.url, scene=scene_id)
        return attrs

    # ---- writing ---------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.read_only:
            raise CacheError(
                "the cache was opened read-only",
                file=self.url,
                fix="open it with Cache.open(url, read_only=False)",
            )

    def write_scene(self, rec: SceneRecord, *, replace: bool = False) -> None:
        """Write every array of one scene, then mark it complete (last).

        An incomplete group left by a killed writer is deleted first; a complete one is an
        error unless ``replace`` (the runner skips complete scenes instead).
        """
        import zarr

        t0 = time.perf_counter()
        self._check_writable()
        rec = normalized(rec)
        codec = self.codec
        stored, cosine = encode_scene(rec, self.meta, codec, self.pca, self.url)
        name = encode_scene_id(rec.scene_id)
        path = scene_path(name)
        old = self._group_attrs(name)
        if old is not None and old.get("complete") and not replace:
            raise CacheError(
                "the scene is already complete in the cache",
                file=self.url,
                scene=rec.scene_id,
                fix="skip complete scenes (Cache.is_complete), or pass replace=True",
            )
        attrs = scene_attrs(rec, codec, cosine, self.url)
        run_sync(self._store.delete_dir(path))  # leftovers of an interrupted write go first
        group = zarr.create_group(self._store, path=path, attributes=attrs)
        write_group_arrays(group, rec, stored, codec.name)
        manifest = scene_manifest(self._store, path, group)  # checksums of every array
        group.update_attributes(
            {
                MANIFEST: manifest,
                "complete": True,
                "write_seconds": round(time.perf_counter() - t0, 3),
            }
        )

    # ---- reading ---------------------------------------------------------------------------
    def read_scene(
        self, scene_id: str, *, images: Sequence[int] | None = None, features: bool = True
    ) -> SceneRecord:
        """One complete scene; ``images`` reads only those feature chunks and re-indexes
        the correspondences to positions in ``images`` (order kept)."""
        g = complete_group(self._store, self.url, scene_id)

        def decode(stored: np.ndarray) -> np.ndarray:
            return decode_features(stored, self.codec, self._basis(scene_id))

        return read_scene_group(g, scene_id, self.url, images, decode if features else None)

    def read_points(self, scene_id: str) -> SceneRecord:
        """Points and full-resolution labels only (evaluation): no images, no correspondences."""
        return read_points_group(complete_group(self._store, self.url, scene_id), scene_id)

    # ---- inspection ------------------------------------------------------------------------
    def verify(
        self, scene_ids: Sequence[str] | None = None, *, quick: bool = False
    ) -> dict[str, list[str]]:
        """scene id -> problems (empty list: fine) for every scene, incomplete ones included.

        Checksums of every array are recomputed; ``quick`` checks chunk presence, counts and
        shapes only (no chunk is read).
        """
        if scene_ids is None:
            entries = self._entries()
        else:
            entries = [(n, self._group_attrs(n)) for n in map(encode_scene_id, scene_ids)]
        basis: list[str] = []  # the PCA basis's problems are every complete scene's
        if self.codec.pca_k is not None:
            found, basis = read_basis(self._store, self.url, quick=quick)
            basis = basis or ([] if found is not None else ["pca: the PCA basis is missing"])
        return {
            self._entry_id(n, a): self._verify_group(n, a, quick)
            + (basis if a and a.get("complete") else [])
            for n, a in entries
        }

    def _verify_group(self, name: str, attrs: dict | None, quick: bool = False) -> list[str]:
        import zarr

        if attrs is None:
            return ["the scene group is missing or its metadata is unreadable"]
        if not attrs.get("complete"):
            return ["incomplete: its write was interrupted; rerun tttkd-prep to redo it"]
        g = zarr.open_group(self._store, path=scene_path(name), mode="r")
        p = manifest_problems(self._store, scene_path(name), g, attrs, quick=quick)
        if quick:
            return p
        try:
            return p + verify_group(g, attrs, self.meta, self._entry_id(name, attrs))
        except Exception as e:  # an undecodable chunk (already named by the checksums)
            return p + [f"cannot decode its arrays: {type(e).__name__}: {e}"]

    def summary(self) -> dict:
        """Scenes per split, points, images, correspondences per point, bytes on disk."""
        entries = self._entries()

        async def sizes() -> tuple[list[int], int]:
            per = await asyncio.gather(
                *(self._store.getsize_prefix(scene_path(n)) for n, _ in entries)
            )
            return list(per), await self._store.getsize_prefix("")

        per_scene, total = run_sync(sizes())
        ids = [(self._entry_id(n, a), a) for n, a in entries]
        return summarize(self.meta, ids, per_scene, total)
