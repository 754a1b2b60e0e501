"""S3DIS text repairs must be plausible, and clipped colours are counted (issue #13 item 3).

Before: a control byte in place of a decimal point was "repaired" to x = -17337 m and stored,
and colours outside 0..255 were clipped without a word.
"""

from __future__ import annotations

import numpy as np

from tttkd.pipeline.datasets.s3dis_text import parse_xyzrgb


def _room(n: int = 60) -> list[bytes]:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 5, (n, 3))
    return [f"{x:.3f} {y:.3f} {z:.3f} 10 20 30".encode() for x, y, z in pts]


def test_a_repair_far_outside_the_room_is_dropped_with_its_line_number():
    lines = _room()
    lines[40] = b"-17\x01337 1.000 2.000 10 20 30"  # a control byte where the '.' was
    lines[41] = b"1.5\x0100 2.000 1.000 10 20 30"  # a lost digit: 1.500 -> 1.50, plausible
    cloud = parse_xyzrgb(b"\n".join(lines) + b"\n")
    assert cloud.implausible == (41,)  # line numbers count from 1
    assert cloud.repaired == 1 and len(cloud.xyz) == 59
    assert cloud.xyz[:, 0].min() > -1 and [1.5, 2.0, 1.0] in cloud.xyz.tolist()


def test_colours_outside_0_255_are_counted():
    lines = _room()
    lines[3] = b"1.000 1.000 1.000 300 20 30"
    lines[4] = b"1.000 1.000 1.000 -4 20 30"
    cloud = parse_xyzrgb(b"\n".join(lines))
    assert cloud.clipped == 2 and cloud.rgb[3].tolist() == [255, 20, 30]
