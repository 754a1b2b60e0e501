"""Rotations about the up axis for test-time augmentation (the paper's Algorithm 1).

For each of ``R`` rotations, TTT then predict, and the logits are summed. Rotation ``r`` turns
the scene by ``2 pi r / R`` about +Z through the centre of its bounding box, so rotation 0 is
the identity and reproduces the unrotated prediction exactly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["rotate_about_up", "rotation_angles"]


def rotation_angles(rotations: int) -> list[float]:
    """``[2 pi r / R for r in 0..R-1]`` in radians."""
    if rotations < 1:
        raise ValueError(f"rotations must be >= 1, got {rotations}")
    return [2.0 * math.pi * r / rotations for r in range(rotations)]


def rotate_about_up(xyz: np.ndarray, angle: float) -> np.ndarray:
    """``xyz`` ``[N, 3]`` turned by ``angle`` about +Z through the box centre, as float64.

    Angle 0 returns the points unchanged (no arithmetic), so the identity view is exactly
    the cached scene.
    """
    if angle == 0.0:
        return np.asarray(xyz, dtype=np.float64)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pts = xyz.astype(np.float64)
    centre = 0.5 * (pts.min(0) + pts.max(0)) if len(pts) else np.zeros(3)
    return (pts - centre) @ rot.T + centre
