"""Synthetic rooms: sampled points and rendered RGB-D views agree exactly."""

from __future__ import annotations

import numpy as np

from tttkd.core import project
from tttkd.synthetic.domain import TARGET
from tttkd.synthetic.render import place_cameras, render
from tttkd.synthetic.room import make_room, sample_points, shift_colors


def test_points_project_onto_their_own_surface() -> None:
    room = make_room(7)
    xyz, rgb, box = sample_points(room, spacing=0.04, seed=1)
    seen = np.zeros(len(xyz), bool)
    for cam in place_cameras(room, 4, seed=2):
        image, depth, box_px = render(room, cam)
        assert (depth > 0).all(), "a closed room has no holes"
        uv, z = project(xyz, cam.K, cam.c2w)
        ui, vi = np.round(uv).astype(int).T
        inside = (z > 0) & (ui >= 0) & (ui < cam.width) & (vi >= 0) & (vi < cam.height)
        d = np.zeros(len(xyz))
        d[inside] = depth[vi[inside], ui[inside]]
        visible = inside & (np.abs(d - z) < 0.01)
        assert visible.sum() > 500
        # A visible point's pixel shows the point's own box and (up to edge pixels) its colour.
        assert (box_px[vi[visible], ui[visible]] == box[visible]).mean() > 0.98
        err = np.abs(image[vi[visible], ui[visible]].astype(int) - rgb[visible].astype(int))
        assert np.median(err) <= 2
        seen |= visible
    assert 0.2 < seen.mean() < 0.9


def test_room_is_seeded_and_furniture_does_not_overlap() -> None:
    a, b = make_room(3), make_room(3)
    assert a == b
    furniture = [bx for bx in a.boxes if bx.class_name not in ("floor", "ceiling", "wall")]
    for i, p in enumerate(furniture):
        for q in furniture[i + 1 :]:
            overlap = all(p.lo[k] < q.hi[k] and q.lo[k] < p.hi[k] for k in range(2))
            assert not overlap


def test_colour_shift_is_a_hue_rotation() -> None:
    red = np.array([[255, 0, 0]], np.uint8)
    np.testing.assert_array_equal(shift_colors(red, hue_deg=120), [[0, 255, 0]])
    np.testing.assert_array_equal(shift_colors(red, hue_deg=-120), [[0, 0, 255]])
    grey = np.full((10, 3), 128, np.uint8)
    np.testing.assert_array_equal(shift_colors(grey, hue_deg=60, saturation=0.7), grey)
    shifted = TARGET.point_colors(np.tile(red, (1000, 1)), seed=0)
    assert abs(shifted[:, 2].astype(float).std() / 255 - 0.04) < 0.005  # an unclipped channel
