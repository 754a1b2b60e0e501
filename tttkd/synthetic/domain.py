"""Domain knobs for synthetic data: what differs between a "source" and a "target" sensor.

Only the reconstructed POINT colours and density change; camera images stay clean, as real
RGB frames are sharper than the colours baked into a reconstructed mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tttkd.synthetic.room import shift_colors


@dataclass(frozen=True)
class Domain:
    """Appearance of the point cloud in one domain."""

    name: str = "source"
    hue_deg: float = 0.0  # hue rotation of point colours
    saturation: float = 1.0  # saturation factor of point colours
    noise: float = 0.0  # std of Gaussian colour noise, 0..1 units
    spacing: float = 0.03  # surface sampling step in metres (point density)
    missing_color: bool = False  # points carry no colour (all mid-grey)

    def point_colors(self, rgb: np.ndarray, seed: int = 0) -> np.ndarray:
        if self.missing_color:
            return np.full_like(rgb, 128)
        if self.hue_deg == 0 and self.saturation == 1.0 and self.noise == 0:
            return rgb
        return shift_colors(
            rgb, hue_deg=self.hue_deg, saturation=self.saturation, noise=self.noise, seed=seed
        )


SOURCE = Domain()
# The shift of the demo benchmark (issue 7): hue +60 deg, saturation x0.7, noise 0.04.
TARGET = Domain(name="target", hue_deg=60.0, saturation=0.7, noise=0.04)
