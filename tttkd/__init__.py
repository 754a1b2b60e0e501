"""tttkd: test-time training for 3D semantic segmentation by distillation from 2D foundation models.

The library lives in the subpackages ``tttkd.pipeline`` (prep and cache), ``tttkd.model``
(3D network and training), ``tttkd.adapt`` (test-time training and evaluation) and
``tttkd.cli`` (commands).
"""

__version__ = "0.1.0"

# The Python API (tttkd/api.py), imported on first use so `import tttkd` stays cheap.
from tttkd._public import API_NAMES as _API

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        from tttkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'tttkd' has no attribute {name!r}")
