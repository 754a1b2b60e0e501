"""Adaptation methods by name. Explicit imports, one line per method (no import side effects).

A new method subclasses :class:`~tttkd.adapt.methods.base.Method` in its own module and gets
one line here.
"""

from __future__ import annotations

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods.adacontrast import AdaContrast
from tttkd.adapt.methods.base import Method, SceneOutcome
from tttkd.adapt.methods.dua import DUAStatistics
from tttkd.adapt.methods.source import SourceOnly
from tttkd.adapt.methods.tent import Tent
from tttkd.adapt.methods.ttt_kd import TTTKD, TTTKDOnline
from tttkd.adapt.methods.ttt_mae import TTTMAE
from tttkd.model.network import SegKDNet

__all__ = ["METHODS", "Method", "SceneOutcome", "make_method"]

METHODS: dict[str, type[Method]] = {
    "source": SourceOnly,
    "ttt-kd": TTTKD,
    "ttt-kd-online": TTTKDOnline,
    "bn": DUAStatistics,
    "tent": Tent,
    "ttt-mae": TTTMAE,
    "adacontrast": AdaContrast,
}


def make_method(name: str, net: SegKDNet, cfg: AdaptConfig) -> Method:
    """A fresh instance of method ``name`` holding its own copy of ``net``."""
    if name not in METHODS:
        raise ValueError(f"unknown adaptation method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name](net, cfg)
