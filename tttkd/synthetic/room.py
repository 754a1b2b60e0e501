"""Synthetic indoor rooms: axis-aligned boxes with classes and colours, one geometry for all.

The same ``Room`` gives the 3D points (sampled on visible surfaces) and, through
:mod:`tttkd.synthetic.render`, the RGB-D images, so projection between them is exact
by construction. Writers in this package store a room in each dataset's on-disk format.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

# Object kinds a room can hold: (class name in Table 2, size range (min xyz, max xyz) in metres,
# base colour RGB 0..1, texture). Colours are deliberately distinct per class.
FURNITURE = {
    "bed": ((1.4, 1.9, 0.45), (1.8, 2.1, 0.6), (0.85, 0.80, 0.70), "plain"),
    "bookshelf": ((0.8, 0.3, 1.6), (1.2, 0.4, 2.0), (0.55, 0.35, 0.20), "planks"),
    "table": ((0.8, 0.8, 0.72), (1.4, 1.0, 0.78), (0.60, 0.45, 0.30), "plain"),
    "chair": ((0.45, 0.45, 0.85), (0.5, 0.5, 0.95), (0.20, 0.25, 0.60), "plain"),
    "sofa": ((1.6, 0.8, 0.7), (2.0, 0.9, 0.85), (0.45, 0.55, 0.45), "plain"),
    "cabinet": ((0.6, 0.5, 0.9), (0.6, 0.5, 0.9), (0.80, 0.15, 0.15), "plain"),
    "desk": ((1.0, 0.6, 0.74), (1.4, 0.7, 0.76), (0.35, 0.35, 0.35), "plain"),
    # Same geometry as "cabinet", told apart by colour alone (the demo benchmark needs classes
    # that only appearance separates, so a colour shift hurts a 3D-only model).
    "refrigerator": ((0.6, 0.5, 0.9), (0.6, 0.5, 0.9), (0.15, 0.70, 0.20), "plain"),
    "otherfurniture": ((0.6, 0.5, 0.9), (0.6, 0.5, 0.9), (0.15, 0.25, 0.85), "plain"),
}

SHELL_THICKNESS = 0.1


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: ``lo`` and ``hi`` corners (metres), its class and appearance."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    class_name: str
    color: tuple[float, float, float]  # RGB in 0..1
    texture: str = "plain"  # "plain" | "planks"
    instance: int = 0

    def contains(self, p: np.ndarray, margin: float = 1e-4) -> np.ndarray:
        lo = np.asarray(self.lo) + margin
        hi = np.asarray(self.hi) - margin
        return np.all((p > lo) & (p < hi), axis=-1)


@dataclass
class Room:
    """A room of size ``size`` (x, y, z) with its shell (floor, ceiling, walls) and furniture."""

    name: str
    size: tuple[float, float, float]
    boxes: list[Box] = field(default_factory=list)

    def interior(self, p: np.ndarray, margin: float = 1e-4) -> np.ndarray:
        s = np.asarray(self.size)
        return np.all((p >= -margin) & (p <= s + margin), axis=-1)

    def class_names(self) -> list[str]:
        return sorted({b.class_name for b in self.boxes})


def surface_color(box: Box, p: np.ndarray) -> np.ndarray:
    """Colour (0..1) of ``box``'s surface at points ``p``; shared by sampling and rendering."""
    base = np.broadcast_to(np.asarray(box.color, dtype=np.float64), p.shape).copy()
    if box.texture == "planks":
        # Planks 15 cm wide along x with a darker seam and a slow grain along y.
        stripe = np.floor(p[:, 0] / 0.15).astype(np.int64)
        shade = 0.85 + 0.15 * ((stripe * 7919) % 5) / 4.0
        seam = (np.mod(p[:, 0], 0.15) < 0.012).astype(np.float64)
        shade = shade * (1.0 - 0.35 * seam) * (0.95 + 0.05 * np.sin(p[:, 1] * 9.0))
        base = base * shade[:, None]
    return np.clip(base, 0.0, 1.0)


def _shell(w: float, l: float, h: float, wall_color: tuple[float, float, float]) -> list[Box]:
    """Floor, ceiling and four walls (instances 1..6), each ``SHELL_THICKNESS`` thick."""
    t = SHELL_THICKNESS
    return [
        Box((0, 0, -t), (w, l, 0), "floor", (0.62, 0.48, 0.33), "planks", 1),
        Box((0, 0, h), (w, l, h + t), "ceiling", (0.93, 0.93, 0.92), "plain", 2),
        Box((-t, -t, 0), (0, l + t, h), "wall", wall_color, "plain", 3),
        Box((w, -t, 0), (w + t, l + t, h), "wall", wall_color, "plain", 4),
        Box((0, -t, 0), (w, 0, h), "wall", wall_color, "plain", 5),
        Box((0, l, 0), (w, l + t, h), "wall", wall_color, "plain", 6),
    ]


def _furniture_spec(
    cls: str,
    colors: dict[str, tuple[float, float, float]] | None,
    sizes: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] | None,
) -> tuple:
    """(min size, max size, colour, texture) of ``cls``: FURNITURE's, overridden per class."""
    lo_size, hi_size, color, texture = FURNITURE.get(cls, (None, None, None, "plain"))
    if sizes and cls in sizes:
        lo_size, hi_size = sizes[cls]
    if colors and cls in colors:
        color = colors[cls]
    if lo_size is None or color is None:
        raise ValueError(f"class {cls!r} is not in FURNITURE: pass its colour and size")
    return lo_size, hi_size, color, texture


def _free_spot(
    rng: np.random.Generator,
    dims: np.ndarray,
    floor: tuple[float, float],
    placed: list[tuple[float, float, float, float]],
) -> tuple[float, float] | None:
    """A corner for a footprint of ``dims`` keeping 0.1 m from every ``placed`` one (200 tries;
    None when the room is too full). Appends the footprint taken to ``placed``."""
    w, l = floor
    for _ in range(200):
        x0 = rng.uniform(0.05, max(0.06, w - dims[0] - 0.05))
        y0 = rng.uniform(0.05, max(0.06, l - dims[1] - 0.05))
        fp = (x0 - 0.1, y0 - 0.1, x0 + dims[0] + 0.1, y0 + dims[1] + 0.1)
        if all(fp[2] <= q[0] or fp[0] >= q[2] or fp[3] <= q[1] or fp[1] >= q[3] for q in placed):
            placed.append(fp)
            return x0, y0
    return None


def make_room(
    seed: int,
    *,
    name: str | None = None,
    furniture: tuple[str, ...] = ("bed", "bookshelf", "table", "chair", "cabinet"),
    size_range: tuple[float, float] = (4.0, 5.5),
    height_range: tuple[float, float] = (2.6, 2.9),
    wall_color: tuple[float, float, float] | None = None,
    colors: dict[str, tuple[float, float, float]] | None = None,
    sizes: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] | None = None,
) -> Room:
    """A random room: shell plus one object per entry of ``furniture``, placed without overlap.

    ``colors`` and ``sizes`` override the defaults of :data:`FURNITURE` per class name; classes
    not in FURNITURE need both.
    """
    rng = np.random.default_rng(seed)
    w = float(rng.uniform(*size_range))
    l = float(rng.uniform(*size_range))
    h = float(rng.uniform(*height_range))
    if wall_color is None:
        hue = rng.uniform(0, 1)
        wall_color = colorsys.hsv_to_rgb(hue, 0.25, 0.9)
    boxes = _shell(w, l, h, wall_color)
    placed: list[tuple[float, float, float, float]] = []
    instance = 7
    for cls in furniture:
        lo_size, hi_size, color, texture = _furniture_spec(cls, colors, sizes)
        dims = rng.uniform(lo_size, hi_size)
        if rng.random() < 0.5:
            dims[[0, 1]] = dims[[1, 0]]
        spot = _free_spot(rng, dims, (w, l), placed)
        if spot is None:
            continue  # no room left for it: the object is left out
        x0, y0 = spot
        boxes.append(
            Box(
                (x0, y0, 0.0),
                (x0 + dims[0], y0 + dims[1], float(min(dims[2], h - 0.05))),
                cls,
                tuple(float(c) for c in color),
                texture,
                instance,
            )
        )
        instance += 1
    return Room(name=name or f"room{seed}", size=(w, l, h), boxes=boxes)


def sample_points(
    room: Room, spacing: float = 0.03, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the visible surfaces: (xyz float32 (N,3), rgb uint8 (N,3), box index int32 (N,)).

    A jittered grid of step ``spacing`` on every box face; points inside another box or
    outside the room are dropped (they could never be seen).
    """
    rng = np.random.default_rng(seed)
    xyz_all, rgb_all, idx_all = [], [], []
    for bi, box in enumerate(room.boxes):
        lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float)
        for axis in range(3):
            a, b = [k for k in range(3) if k != axis]
            na = max(1, int(np.ceil((hi[a] - lo[a]) / spacing)))
            nb = max(1, int(np.ceil((hi[b] - lo[b]) / spacing)))
            ga, gb = np.meshgrid(
                lo[a] + (np.arange(na) + 0.5) * (hi[a] - lo[a]) / na,
                lo[b] + (np.arange(nb) + 0.5) * (hi[b] - lo[b]) / nb,
                indexing="ij",
            )
            for side in (lo[axis], hi[axis]):
                p = np.zeros((ga.size, 3))
                p[:, a] = ga.ravel() + rng.uniform(-0.3, 0.3, ga.size) * (hi[a] - lo[a]) / na
                p[:, b] = gb.ravel() + rng.uniform(-0.3, 0.3, gb.size) * (hi[b] - lo[b]) / nb
                p[:, axis] = side
                keep = room.interior(p)
                for oj, other in enumerate(room.boxes):
                    if oj != bi:
                        keep &= ~other.contains(p)
                p = p[keep]
                if len(p) == 0:
                    continue
                xyz_all.append(p)
                rgb_all.append(surface_color(box, p))
                idx_all.append(np.full(len(p), bi, dtype=np.int32))
    xyz = np.concatenate(xyz_all).astype(np.float32)
    rgb = np.round(np.concatenate(rgb_all) * 255).astype(np.uint8)
    return xyz, rgb, np.concatenate(idx_all)


def shift_colors(
    rgb: np.ndarray,
    *,
    hue_deg: float = 0.0,
    saturation: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """A colour domain shift: rotate hue, scale saturation, add Gaussian noise (0..1 units)."""
    x = rgb.astype(np.float64) / 255.0
    if hue_deg or saturation != 1.0:
        hsv = _rgb_to_hsv(x)
        hsv[:, 0] = np.mod(hsv[:, 0] + hue_deg / 360.0, 1.0)
        hsv[:, 1] = np.clip(hsv[:, 1] * saturation, 0, 1)
        x = _hsv_to_rgb(hsv)
    if noise:
        x = x + np.random.default_rng(seed).normal(0, noise, x.shape)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    mx, mn = x.max(1), x.min(1)
    d = mx - mn
    h = np.zeros(len(x))
    nz = d > 1e-12
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    m = nz & (mx == r)
    h[m] = np.mod((g[m] - b[m]) / d[m], 6)
    m = nz & (mx == g) & (mx != r)
    h[m] = (b[m] - r[m]) / d[m] + 2
    m = nz & (mx == b) & (mx != r) & (mx != g)
    h[m] = (r[m] - g[m]) / d[m] + 4
    s = np.where(mx > 1e-12, d / np.maximum(mx, 1e-12), 0)
    return np.stack([h / 6.0, s, mx], 1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[:, 0] * 6.0, hsv[:, 1], hsv[:, 2]
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack(
        [
            np.stack([v, t, p], 1),
            np.stack([q, v, p], 1),
            np.stack([p, v, t], 1),
            np.stack([p, q, v], 1),
            np.stack([t, p, v], 1),
            np.stack([v, p, q], 1),
        ]
    )
    return table[i, np.arange(len(i))]
