"""What ``Cache.create`` and ``Cache.open`` find at a location's root, and when they refuse.

``create`` resumes a cache made with the same settings, rewrites one only when asked
(``overwrite``), and never touches a location that holds something other than a tttkd cache
(a mistyped ``--cache`` must not wipe someone's folder); ``open`` refuses anything but a
tttkd cache of this schema whose root metadata is intact.
"""

from __future__ import annotations

from typing import Any

from tttkd.pipeline.cache.integrity import check_root
from tttkd.pipeline.cache.layout import FORMAT, run_sync
from tttkd.pipeline.cache.records import SCHEMA_VERSION, CacheError, CacheMeta, schema_error


def root_attrs(store: Any) -> dict | None:
    """The root group's attributes; None when there is no root, {} when it is not a group."""
    import zarr

    if not run_sync(store.exists("zarr.json")):
        return None
    try:
        return dict(zarr.open_group(store, mode="r").attrs)
    except Exception:  # an array or unreadable metadata at the root: not ours
        return {}


def resumable_meta(store: Any, url: str, meta: CacheMeta, overwrite: bool) -> CacheMeta | None:
    """The existing cache's meta when ``create`` resumes it; None when a new root may be
    written; a ``CacheError`` when the location must be left alone."""
    existing = root_attrs(store)
    if existing is not None and existing.get("format") == FORMAT:
        if existing.get("schema") == SCHEMA_VERSION and not overwrite:
            check_root(existing, url)
            old = CacheMeta.from_dict(existing)
            diffs = old.conflicts_with(meta)
            if not diffs:
                return old
            raise CacheError(
                "the cache was made with different settings:\n    " + "\n    ".join(diffs),
                file=url,
                fix="rerun with --overwrite to delete it and start again, or choose "
                "another --cache",
            )
        if not overwrite:
            raise CacheError(
                f"the cache has schema {existing.get('schema')} (tttkd "
                f"{existing.get('tttkd_version')}); this tttkd writes schema {SCHEMA_VERSION}",
                file=url,
                fix="rerun with --overwrite to rebuild it, or choose another --cache",
            )
    elif not run_sync(store.is_empty("")):
        raise CacheError(
            "refusing to write: the location is not empty and is not a tttkd cache",
            file=url,
            fix="choose an empty or new --cache location",
        )
    return None


def checked_root_attrs(probe: Any, url: str) -> dict:
    """The root attributes of a tttkd cache that ``open`` may use (else a ``CacheError``)."""
    attrs = root_attrs(probe)
    if attrs is None or attrs.get("format") != FORMAT:
        raise CacheError(
            "no tttkd cache here" if attrs is None else "this Zarr store is not a tttkd cache",
            file=url,
            fix="pass the --cache of a tttkd-prep run (tttkd-prep DATASET --cache feats.zarr)",
        )
    if attrs.get("schema") != SCHEMA_VERSION:
        raise schema_error(attrs, url)
    check_root(attrs, url)
    return attrs
