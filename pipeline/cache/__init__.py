"""The teacher cache (a Zarr store): ``Cache`` writes and reads it; nothing else knows its layout.

Import from ``tttkd.pipeline.cache`` only. Inside: ``store`` (the ``Cache`` class and the layout
it owns), ``opening`` (what create/open find at the root), ``reading`` (reads of one scene
group), ``layout`` (paths and group helpers), ``records`` (``CacheMeta``, ``SceneRecord``),
``record_checks`` (a record's consistency), ``codecs`` (feature codecs and the PCA basis),
``encode`` (checks before a write), ``integrity`` (checksums and checked reads); ``testing``
makes synthetic records for tests and benchmarks.
"""

from tttkd.pipeline.cache.codecs import PcaBasis, fit_pca, parse_codec
from tttkd.pipeline.cache.integrity import IncompleteScenesWarning, warn_incomplete
from tttkd.pipeline.cache.layout import FORMAT, decode_scene_id, encode_scene_id
from tttkd.pipeline.cache.records import (
    SCHEMA_VERSION,
    CacheError,
    CacheMeta,
    SceneRecord,
    no_views,
)
from tttkd.pipeline.cache.store import Cache

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "Cache",
    "CacheError",
    "CacheMeta",
    "IncompleteScenesWarning",
    "PcaBasis",
    "SceneRecord",
    "decode_scene_id",
    "encode_scene_id",
    "fit_pca",
    "no_views",
    "parse_codec",
    "warn_incomplete",
]
