"""``source``: the trained network as is (no adaptation); the baseline every gain is against."""

from __future__ import annotations

from tttkd.adapt.methods.base import Method

__all__ = ["SourceOnly"]


class SourceOnly(Method):
    """Predict with the trained weights and training BN statistics."""

    name = "source"
