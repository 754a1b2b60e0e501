"""What we read is what we wrote: checksums, element counts and read-time checks of the cache.

Zarr returns the fill value (zeros) for a chunk file that is missing, so a deleted chunk would
otherwise read as good data. At write time :func:`scene_manifest` records, for EVERY array of a
scene group (found by walking the group, so new arrays are covered without a list here), its
shape, dtype, number of chunk files and a SHA-256 over its metadata and chunk bytes; the
manifest goes into the scene attrs that are written last (with ``complete``).

- ``verify`` recomputes everything (:func:`manifest_problems`; ``quick=True`` checks chunk
  presence, counts and shapes only, no chunk is read).
- The read paths of train and adapt open the scene through :class:`CheckedGroup`: it checks
  chunk presence and shapes before reading, turns any undecodable chunk into a ``CacheError``
  naming the scene and the array, and refuses non-finite floats and ``uv`` outside the
  feature grid.
- The root attrs (voxel size, classes, codec, ...) carry ``meta_sha256``, checked on open.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from tttkd.pipeline.cache.record_checks import UV_MARGIN
from tttkd.pipeline.cache.records import CacheError

MANIFEST = "integrity"  # scene attrs key
ROOT_DIGEST = "meta_sha256"  # root attrs key
UV_KEY, FEATURES_KEY = "corr/uv", "images/features"
REBUILD = (
    "the cache is damaged: run `tttkd-prep verify CACHE` to list the damaged scenes, then "
    "rebuild the cache with `tttkd-prep ... --overwrite` (or delete those scene groups and "
    "rerun tttkd-prep with the same --cache)"
)


# ---- root metadata ------------------------------------------------------------------------
def root_digest(attrs: dict) -> str:
    """SHA-256 of the root attrs (without the digest itself), canonical JSON."""
    body = {k: v for k, v in attrs.items() if k != ROOT_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def with_root_digest(attrs: dict) -> dict:
    return {**attrs, ROOT_DIGEST: root_digest(attrs)}


def check_root(attrs: dict, url: str) -> None:
    """Refuse root metadata that differs from what ``Cache.create`` wrote."""
    stored = attrs.get(ROOT_DIGEST)
    if stored is None or stored != root_digest(attrs):
        raise CacheError(
            "the cache's root metadata (voxel size, classes, codec, ...) "
            + ("has no checksum" if stored is None else "does not match its checksum")
            + ": it was edited after tttkd-prep wrote it",
            file=url,
            fix="rebuild the cache with `tttkd-prep ... --overwrite`",
        )


# ---- per-array manifest --------------------------------------------------------------------
def _run(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _keys_by_array(store: Any, prefix: str, arrays: list[str]) -> dict[str, list[str]]:
    """Array path -> sorted keys (its zarr.json and chunk files) below ``prefix``."""

    async def listing() -> list[str]:
        return [k async for k in store.list_prefix(prefix + "/")]

    out: dict[str, list[str]] = {a: [] for a in arrays}
    for key in _run(listing()):
        rel = key[len(prefix) + 1 :]
        for a in arrays:
            if rel.startswith(a + "/"):
                out[a].append(rel)
                break
    return {a: sorted(v) for a, v in out.items()}


def _chunk_count(keys: list[str], array: str) -> int:
    return sum(1 for k in keys if k != f"{array}/zarr.json")


def _digest(store: Any, prefix: str, keys: list[str]) -> str:
    from zarr.core.buffer import default_buffer_prototype

    async def read_all() -> list[bytes]:
        proto = default_buffer_prototype()
        out = []
        for k in keys:
            buf = await store.get(f"{prefix}/{k}", prototype=proto)
            out.append(b"" if buf is None else buf.to_bytes())
        return out

    h = hashlib.sha256()
    for k, data in zip(keys, _run(read_all())):
        h.update(f"{k}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _array_paths(group: Any) -> dict[str, Any]:
    import zarr

    return {
        path: node for path, node in group.members(max_depth=None) if isinstance(node, zarr.Array)
    }


def scene_manifest(store: Any, prefix: str, group: Any) -> dict:
    """Shape, dtype, chunk-file count and SHA-256 of every array below the group ``prefix``."""
    arrays = _array_paths(group)
    keys = _keys_by_array(store, prefix, sorted(arrays))
    return {
        "algorithm": "sha256 of each array's zarr.json and chunk files",
        "arrays": {
            a: {
                "shape": list(arrays[a].shape),
                "dtype": str(arrays[a].dtype),
                "chunks": _chunk_count(keys[a], a),
                "sha256": _digest(store, prefix, keys[a]),
            }
            for a in sorted(arrays)
        },
    }


def manifest_problems(store: Any, prefix: str, group: Any, attrs: dict, *, quick: bool) -> list:
    """Differences between the stored manifest and the group as it is now."""
    manifest = attrs.get(MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        return ["no integrity record (checksums) in the scene attrs: rebuild the scene"]
    want = manifest["arrays"]
    try:
        have = _array_paths(group)
    except Exception as e:  # an array's metadata was damaged
        return [f"cannot list its arrays: {type(e).__name__}: {e}"]
    p = [f"{a}: array is missing" for a in sorted(set(want) - set(have))]
    p += [f"{a}: array is not in the integrity record" for a in sorted(set(have) - set(want))]
    common = sorted(set(want) & set(have))
    keys = _keys_by_array(store, prefix, common)
    for a in common:
        w, arr = want[a], have[a]
        if list(arr.shape) != list(w.get("shape", [])) or str(arr.dtype) != w.get("dtype"):
            p.append(
                f"{a}: {arr.dtype} {list(arr.shape)}, written as {w.get('dtype')} {w.get('shape')}"
            )
        n = _chunk_count(keys[a], a)
        if n != w.get("chunks"):
            p.append(f"{a}: {n} chunk files, written with {w.get('chunks')} (missing or extra)")
        elif not quick and _digest(store, prefix, keys[a]) != w.get("sha256"):
            p.append(f"{a}: checksum differs from the one written (the data was altered)")
    return p


# ---- read-time checks ------------------------------------------------------------------------
class CheckedArray:
    """An array of a complete scene whose reads raise ``CacheError`` naming scene and array."""

    def __init__(self, owner: CheckedGroup, key: str, array: Any) -> None:
        self._owner, self._key, self._array = owner, key, array
        self.oindex = _Indexer(self, lambda sel: array.oindex[sel])

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def dtype(self) -> Any:
        return self._array.dtype

    @property
    def attrs(self) -> Any:
        return self._array.attrs

    def __len__(self) -> int:
        return self._array.shape[0]

    def __getitem__(self, sel: Any) -> np.ndarray:
        return self._read(lambda: self._array[sel])

    def _read(self, fn: Any) -> np.ndarray:
        try:
            data = fn()
        except Exception as e:  # a truncated, random or otherwise undecodable chunk
            raise self._owner.error(
                self._key, f"cannot be decoded ({type(e).__name__}: {e})"
            ) from e
        self._owner.check_values(self._key, np.asarray(data))
        return data


class _Indexer:
    def __init__(self, arr: CheckedArray, fn: Any) -> None:
        self._arr, self._fn = arr, fn

    def __getitem__(self, sel: Any) -> np.ndarray:
        return self._arr._read(lambda: self._fn(sel))


def _all_finite(data: np.ndarray) -> bool:
    """``np.isfinite(data).all()``; float16 by its exponent bits (numpy's f16 math is slow)."""
    if data.dtype == np.float16:
        bits = np.ascontiguousarray(data).view(np.uint16)
        return not bool(np.any((bits & 0x7C00) == 0x7C00))
    return bool(np.isfinite(data).all())


class CheckedGroup:
    """A complete scene group checked for chunk presence and shapes before any read."""

    def __init__(self, store: Any, prefix: str, group: Any, scene_id: str, url: str) -> None:
        self._store, self._prefix, self._group = store, prefix, group
        self.scene_id, self.url = scene_id, url
        self.attrs = group.attrs
        manifest = dict(group.attrs).get(MANIFEST)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
            raise CacheError(
                "the scene has no integrity record (checksums), so its data cannot be trusted",
                file=url,
                scene=scene_id,
                fix="rebuild the cache with this tttkd (`tttkd-prep ... --overwrite`)",
            )
        self._want = manifest["arrays"]
        keys = _keys_by_array(store, prefix, sorted(self._want))
        for a, w in sorted(self._want.items()):
            n = _chunk_count(keys[a], a)
            if f"{a}/zarr.json" not in keys[a]:
                raise self.error(a, "is missing")
            if n != w.get("chunks"):
                raise self.error(a, f"has {n} chunk files, {w.get('chunks')} were written")

    def error(self, key: str, problem: str) -> CacheError:
        return CacheError(f"array {key} {problem}", file=self.url, scene=self.scene_id, fix=REBUILD)

    def __getitem__(self, key: str) -> CheckedArray:
        try:
            arr = self._group[key]
        except Exception as e:
            raise self.error(key, f"cannot be opened ({type(e).__name__}: {e})") from e
        want = self._want.get(key)
        if want is None:
            raise self.error(key, "is not in the scene's integrity record")
        if list(arr.shape) != list(want.get("shape", [])) or str(arr.dtype) != want.get("dtype"):
            raise self.error(
                key,
                f"is {arr.dtype} {list(arr.shape)}, written as {want.get('dtype')} "
                f"{want.get('shape')}",
            )
        return CheckedArray(self, key, arr)

    def check_values(self, key: str, data: np.ndarray) -> None:
        """Refuse non-finite floats and uv outside the feature grid."""
        if data.dtype.kind == "f" and data.size and not _all_finite(data):
            raise self.error(key, f"holds {int((~np.isfinite(data)).sum())} non-finite values")
        if key == UV_KEY and data.size and FEATURES_KEY in self._want:
            h, w = self._want[FEATURES_KEY]["shape"][1:3]
            hi = np.array([w - 1 + UV_MARGIN, h - 1 + UV_MARGIN])
            out = ((data < -UV_MARGIN) | (data > hi)).any(axis=1)
            if out.any():
                raise self.error(key, f"holds {int(out.sum())} uv outside the {h}x{w} feature grid")


# ---- scenes the consumers skip -------------------------------------------------------------
class IncompleteScenesWarning(UserWarning):
    """Train or adapt skips scenes whose write was interrupted or whose metadata is unreadable."""


def warn_incomplete(cache: Any) -> int:
    """Warn, with the count and the ids, about the scenes a reader of ``cache`` skips."""
    import warnings

    skipped = sorted(set(cache.scene_ids(include_incomplete=True)) - set(cache.scene_ids()))
    if skipped:
        many = "s" if len(skipped) > 1 else ""
        warnings.warn(
            f"{len(skipped)} incomplete scene{many} in {cache.url} skipped: "
            f"{', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''} (rerun tttkd-prep "
            "with the same --cache to finish them; tttkd-prep verify lists them)",
            IncompleteScenesWarning,
            stacklevel=3,
        )
    return len(skipped)


# ---- root-level groups: the PCA basis ------------------------------------------------------
def _attrs_digest(attrs: dict) -> str:
    body = {k: v for k, v in attrs.items() if k != MANIFEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def seal_group(store: Any, prefix: str, group: Any) -> None:
    """Write a root-level group's integrity record (its arrays, as for a scene, and its attrs)
    into its attrs; the PCA basis decodes every scene's features, so it needs one too."""
    manifest = scene_manifest(store, prefix, group)
    manifest["attrs_sha256"] = _attrs_digest(dict(group.attrs))
    group.update_attributes({MANIFEST: manifest})


def group_problems(store: Any, prefix: str, group: Any, *, quick: bool) -> list[str]:
    """Problems of a sealed root-level group, each led by its path (``pca/mean: ...``)."""
    attrs = dict(group.attrs)
    manifest = attrs.get(MANIFEST)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        return [f"{prefix}: no integrity record (checksums): written by an older tttkd"]
    p = [f"{prefix}/{x}" for x in manifest_problems(store, prefix, group, attrs, quick=quick)]
    if manifest.get("attrs_sha256") != _attrs_digest(attrs):
        p.append(f"{prefix}: its attributes were edited after they were written")
    return p


def read_basis(store: Any, url: str, *, quick: bool = False) -> tuple[Any, list[str]]:
    """(PcaBasis or None, problems) of the cache's ``pca/`` group; None and no problems when
    there is no basis yet. ``quick`` checks chunk presence, counts and shapes only."""
    import zarr

    from tttkd.pipeline.cache.codecs import PcaBasis
    from tttkd.pipeline.cache.layout import PCA

    if not _run(store.exists(f"{PCA}/zarr.json")):
        return None, []
    try:
        group = zarr.open_group(store, path=PCA, mode="r")
        problems = group_problems(store, PCA, group, quick=quick)
        if problems:
            return None, problems
        ratio = tuple(group.attrs.get("explained_variance_ratio", []))
        return PcaBasis(group["mean"][...], group["components"][...], ratio), []
    except Exception as e:  # undecodable metadata or chunks
        return None, [f"{PCA}: cannot be read ({type(e).__name__}: {e})"]


def basis_error(problems: list[str], url: str, scene: str | None = None) -> CacheError:
    """A missing or damaged PCA basis: every scene's features decode with it."""
    return CacheError(
        "the PCA basis that decodes the features cannot be used: "
        + ("; ".join(problems) or "pca: the PCA basis is missing"),
        file=url,
        scene=scene,
        fix="rebuild the cache with `tttkd-prep ... --overwrite` (the scenes were encoded "
        "with this basis; another one cannot decode them)",
    )
