"""The public names of the Python API (``tttkd/api.py``), in one place.

``tttkd/__init__.py`` imports them from here, not from ``tttkd.api``, so ``import tttkd``
stays cheap (no torch, no zarr); ``tttkd.api`` uses them as its ``__all__``.
"""

API_NAMES = (
    "AdaptedScene",
    "CacheReader",
    "LoadedModel",
    "SceneRef",
    "adapt_scene",
    "create_backbone",
    "load_checkpoint",
    "open_cache",
)
