"""Triangulated meshes of synthetic rooms, labelled per face like Matterport region meshes.

Every visible box face becomes a grid on a lattice shared by the whole house (multiples of
``spacing`` plus the face's own edges), so faces of different boxes that touch share
vertices: a floor meets a wall or a chair's side along a line of common vertices, which is
where the per-vertex majority vote decides. A few patches carry "no class" category ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tttkd.synthetic.domain import Domain
from tttkd.synthetic.room import Box, Room, surface_color

STRUCTURE = ("floor", "ceiling", "wall")


@dataclass
class RegionMesh:
    xyz: np.ndarray  # (V, 3) float32
    normal: np.ndarray  # (V, 3) float32
    uv: np.ndarray  # (V, 2) float32
    rgb: np.ndarray  # (V, 3) uint8
    faces: np.ndarray  # (F, 3) int32
    material: np.ndarray  # (F,) int32, one id per box face or patch
    segment: np.ndarray  # (F,) int32, object instance
    category: np.ndarray  # (F,) int32, category_mapping index, -1 / 0 = none
    face_label: np.ndarray  # (F,) int16, train id (-1 none)
    face_box: np.ndarray  # (F,) int32, index into the house's box list
    raw_label: dict[int, str]  # category id -> raw category name


def _lattice(lo: float, hi: float, step: float) -> np.ndarray:
    k = np.arange(np.ceil(lo / step), np.floor(hi / step) + 1)
    inner = k * step
    inner = inner[(inner > lo + 0.25 * step) & (inner < hi - 0.25 * step)]
    return np.concatenate([[lo], inner, [hi]])


@dataclass(frozen=True)
class _Side:
    """One visible side of a box: a lattice grid and the triangles of it that are kept."""

    box: int  # index into room.boxes
    xyz: np.ndarray  # (P, 3) float64 grid points
    normal: np.ndarray  # (P, 3) outward normal, repeated
    uv: np.ndarray  # (P, 2) position on the side, 0..1
    tri: np.ndarray  # (T, 3) indices into xyz, wound outwards


def _visible_sides(room: Room, spacing: float, in_lo: np.ndarray, in_hi: np.ndarray) -> list[_Side]:
    """Every box side as a grid, minus the triangles outside the room or inside another box
    (hidden surfaces would only hold unseen, wrongly voted vertices)."""
    sides = []
    for bi, box in enumerate(room.boxes):
        lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float)
        for axis in range(3):
            a, b = [k for k in range(3) if k != axis]
            A, B = _lattice(lo[a], hi[a], spacing), _lattice(lo[b], hi[b], spacing)
            ga, gb = np.meshgrid(A, B, indexing="ij")
            for sign, side in ((-1.0, lo[axis]), (1.0, hi[axis])):
                if sign < 0 and axis == 2 and box.class_name not in STRUCTURE and lo[2] <= 1e-9:
                    continue  # the underside of furniture standing on the floor
                p = np.zeros((ga.size, 3))
                p[:, a], p[:, b], p[:, axis] = ga.ravel(), gb.ravel(), side
                idx = np.arange(ga.size).reshape(ga.shape)
                v00, v10 = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
                v11, v01 = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
                tri = np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)])
                # e_a x e_b is +e_axis for axis 0 and 2, -e_axis for axis 1: wind outwards.
                if (1.0 if axis != 1 else -1.0) != sign:
                    tri = tri[:, [0, 2, 1]]
                cen = p[tri].mean(axis=1)
                keep = np.all((cen > in_lo - 1e-4) & (cen < in_hi + 1e-4), axis=1)
                for oj, other in enumerate(room.boxes):
                    if oj != bi:
                        keep &= ~other.contains(cen)
                tri = tri[keep]
                if not len(tri):
                    continue
                normal = np.zeros(3)
                normal[axis] = sign
                uv = np.stack(
                    [(p[:, a] - lo[a]) / (hi[a] - lo[a]), (p[:, b] - lo[b]) / (hi[b] - lo[b])], 1
                )
                sides.append(_Side(bi, p, np.broadcast_to(normal, p.shape), uv, tri))
    return sides


def _no_class_masks(
    room: Room, rel: np.ndarray, fbox: np.ndarray, no_class: Sequence[int]
) -> list[tuple[np.ndarray, int]]:
    """Faces of the "no class" patches and their category: -1 and 0 on two walls, then the
    ``no_class`` categories on floor and ceiling. ``rel``: face centres, 0..1 in the room."""
    walls = [i for i, bx in enumerate(room.boxes) if bx.class_name == "wall"]
    patches = [(walls[0], -1, (1, 2), (0.3, 0.55)), (walls[1], 0, (1, 2), (0.5, 0.7))]
    for cls_box, cat in zip((0, 1), no_class):
        patches.append((cls_box, cat, (0, 1), (0.25, 0.4)))
    masks = []
    for bi, cat, (ax1, ax2), (r0, r1) in patches:
        m = (
            (fbox == bi)
            & (rel[:, ax1] > r0)
            & (rel[:, ax1] < r1)
            & (rel[:, ax2] > r0)
            & (rel[:, ax2] < r1)
        )
        masks.append((m, cat))
    return masks


def _merge_vertices(xyz: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge coincident vertices (touching sides share them), then drop the ones no kept face
    uses; the new faces and, per kept vertex, the index of its source vertex."""
    _, first, inv = np.unique(
        np.round(xyz * 1e6).astype(np.int64), axis=0, return_index=True, return_inverse=True
    )
    tri = inv.reshape(-1)[tri]
    used, tri = np.unique(tri, return_inverse=True)
    return tri.reshape(-1, 3), first[used]


def box_mesh(
    room: Room,
    spacing: float,
    *,
    seed: int,
    domain: Domain,
    category_of: Callable[[Box], int],
    train_of: Callable[[Box], int],
    no_class: Sequence[int] = (),
    first_box: int = 0,
) -> RegionMesh:
    """The visible surfaces of ``room`` (its boxes already in the house frame)."""
    floor = room.boxes[0]
    in_lo = np.array([floor.lo[0], floor.lo[1], 0.0])
    in_hi = in_lo + np.asarray(room.size)
    sides = _visible_sides(room, spacing, in_lo, in_hi)
    faces, attrs, n_vert = [], [], 0
    for material, side in enumerate(sides):  # one material per side
        faces.append(side.tri + n_vert)
        attrs.append(np.tile([side.box, material], (len(side.tri), 1)))
        n_vert += len(side.xyz)
    xyz = np.concatenate([s.xyz for s in sides])
    tri = np.concatenate(faces)
    fbox, fmat = np.concatenate(attrs).T
    category = np.array([category_of(room.boxes[i]) for i in fbox], dtype=np.int32)
    label = np.array([train_of(room.boxes[i]) for i in fbox], dtype=np.int16)
    segment = np.array([room.boxes[i].instance for i in fbox], dtype=np.int32)
    rel = (xyz[tri].mean(axis=1) - in_lo) / (in_hi - in_lo)
    for j, (m, cat) in enumerate(_no_class_masks(room, rel, fbox, no_class)):
        category[m], label[m], fmat[m], segment[m] = cat, -1, len(sides) + j, 1000 + j
    tri, src = _merge_vertices(xyz, tri)
    xyz, owner_v = xyz[src], np.concatenate([np.full(len(s.xyz), s.box) for s in sides])[src]
    rgb = np.zeros((len(xyz), 3))
    for bi, box in enumerate(room.boxes):
        m = owner_v == bi
        if m.any():
            rgb[m] = surface_color(box, xyz[m])
    rgb8 = domain.point_colors(np.round(rgb * 255).astype(np.uint8), seed=seed)
    raw = {category_of(bx): bx.class_name for bx in room.boxes} | {-1: "unlabeled", 0: "unlabeled"}
    return RegionMesh(
        xyz=xyz.astype(np.float32),
        normal=np.concatenate([s.normal for s in sides])[src].astype(np.float32),
        uv=np.concatenate([s.uv for s in sides])[src].astype(np.float32),
        rgb=rgb8,
        faces=tri.astype(np.int32),
        material=fmat.astype(np.int32),
        segment=segment,
        category=category,
        face_label=label,
        face_box=(fbox + first_box).astype(np.int32),
        raw_label=raw,
    )
