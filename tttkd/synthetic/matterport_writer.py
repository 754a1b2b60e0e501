"""Write synthetic houses in Matterport3D's exact on-disk format (FORMATS.md section 3).

A house is a row of rooms (regions) side by side along +x in one house frame. Each region's
points are the vertices of a triangulated mesh of its boxes (a grid on every box face, so
neighbouring faces share vertices and the reader's majority vote has work to do); each face
carries the ``category_id`` of its box, and a few patches carry "no class" ids (-1, 0, the
``storage`` row whose nyu40id is empty, and ``lamp``, whose NYU40 class is not one of the
21). Panorama cameras inside each region are rendered with :mod:`.render`; their poses go to
the ``.conf`` in OpenGL axes and with six significant digits, like the real files, and the
returned truth holds the values as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tttkd.core import get_label_set
from tttkd.synthetic.defaults import IMAGE_SIZE, NUM_SCENES, VIEWS
from tttkd.synthetic.domain import SOURCE, Domain
from tttkd.synthetic.matterport_files import (
    GL_TO_CV,
    g6,
    write_conf,
    write_house_file,
    write_mapping,
    write_region,
)
from tttkd.synthetic.matterport_mesh import RegionMesh, box_mesh
from tttkd.synthetic.render import Camera, image_wh, look_at, render
from tttkd.synthetic.room import FURNITURE, Box, Room, make_room

# Rows without one of the 21 classes: (index, raw_category, nyu40id); "" = empty cell.
NO_CLASS_ROWS = ((1240, "storage", ""), (1241, "lamp", "35"))
CAM_TILT_DEG = (-25.0, 0.0, 25.0)  # Matterport cameras 0..2 of a panorama
YAWS = 6
_ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SPLITS = ("train", "val", "test")


@dataclass
class RegionTruth:
    scene_id: str
    house: str
    region: int
    mesh: RegionMesh  # as written: xyz, rgb, faces, category, face label, face box
    label: np.ndarray  # (V,) int16 vertex label by majority vote (the reader's target)
    views: list[str]  # names of the frames whose camera is inside this region


@dataclass
class ViewTruth:
    name: str
    house: str
    region: int
    K: np.ndarray  # (3, 3) as written
    c2w: np.ndarray  # (4, 4) OpenCV axes, from the pose as written
    width: int
    height: int
    box_index: np.ndarray  # (H, W) index into HouseTruth.boxes, -1 = nothing


@dataclass
class HouseTruth:
    house: str
    split: str
    boxes: list[Box]
    regions: list[str]


@dataclass
class MatterportTruth:
    root: Path
    scans_root: Path  # pass this to tttkd.pipeline.datasets.matterport3d
    houses: dict[str, HouseTruth] = field(default_factory=dict)
    regions: dict[str, RegionTruth] = field(default_factory=dict)
    views: dict[str, ViewTruth] = field(default_factory=dict)
    label_set: str = "matterport21"

    @property
    def scene_ids(self) -> list[str]:
        return list(self.regions)


def category_rows() -> list[tuple[int, str, str]]:
    """(index, raw_category, nyu40id) for every class of matterport21 plus the no-class rows.

    Indices are deliberately not contiguous, so a reader must map by the ``index`` column.
    """
    ls = get_label_set("matterport21")
    rows = [
        (3 + 7 * i, name, str(nyu))
        for i, (name, nyu) in enumerate(zip(ls.class_names, ls.nyu40_ids))
    ]
    return rows + list(NO_CLASS_ROWS)


@dataclass(frozen=True)
class _Categories:
    """The category_mapping rows and what each box class maps to (one table for every house)."""

    rows: list[tuple[int, str, str]]
    cat_of: dict[str, int]  # class name -> category_mapping index
    train_of: dict[str, int]  # class name -> matterport21 train id

    @classmethod
    def build(cls) -> _Categories:
        rows = category_rows()
        train = {n: i for i, n in enumerate(get_label_set("matterport21").class_names)}
        return cls(rows=rows, cat_of={name: idx for idx, name, _ in rows}, train_of=train)

    @property
    def no_class(self) -> list[int]:
        return [self.cat_of["storage"], self.cat_of["lamp"]]


@dataclass(frozen=True)
class _Shots:
    """How the images of every region are shot and stored."""

    per_region: list[int]  # images of region k of a house
    image_size: tuple[int, int]  # (width, height)
    fov_deg: float
    depth_dropout: float


def _views_per_region(views: int | Sequence[int], regions_per_house: int) -> list[int]:
    per_region = (
        [int(views)] * regions_per_house if isinstance(views, int) else [int(v) for v in views]
    )
    if len(per_region) != regions_per_house:
        raise ValueError("views needs one count per region of a house (regions_per_house)")
    return per_region


def write_matterport_dataset(
    root: str | Path,
    num_scenes: int = NUM_SCENES,
    *,
    views: int | Sequence[int] = VIEWS["matterport3d"],
    image_size: tuple[int, int] = IMAGE_SIZE["matterport3d"],
    regions_per_house: int = 2,
    seed: int = 0,
    domain: Domain = SOURCE,
    spacing: float | None = None,
    fov_deg: float = 70.0,
    splits: Sequence[str] | None = None,
    house_ids: Sequence[str] | None = None,
    depth_dropout: float = 0.01,
) -> MatterportTruth:
    """Write ``num_scenes`` regions under ``root/v1/scans`` and return what was written.

    Regions are grouped ``regions_per_house`` to a house (the last house may hold fewer).
    ``views`` (one number, or one per region of a house) counts the images of a region, each
    ``image_size`` = (width, height) pixels; image ``j`` of a region is panorama ``j // 18``,
    camera ``(j % 18) // 6``, yaw ``j % 6``. A region with 0 views tests the reader's
    nearest-camera fallback. ``spacing`` (default ``domain.spacing``) is the mesh grid step.
    ``splits`` gives each house's split (default train, val, test in turn); split lists and
    ``category_mapping.tsv`` go to ``<scans>/tasks/benchmark`` and ``<scans>/metadata``.
    ``house_ids`` names the houses (default: random 11-character ids like the real ones).
    """
    image_size = image_wh(image_size)
    root = Path(root)
    scans = root / "v1" / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)  # one stream over every house, region and image, in order
    spacing = domain.spacing if spacing is None else spacing
    shots = _Shots(_views_per_region(views, regions_per_house), image_size, fov_deg, depth_dropout)
    if num_scenes < 1 or regions_per_house < 1:
        raise ValueError("num_scenes and regions_per_house must be >= 1")
    cats = _Categories.build()
    truth = MatterportTruth(root=root, scans_root=scans)
    split_lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for h in range(-(-num_scenes // regions_per_house)):
        house = _house_id(rng, h, house_ids)
        split = splits[h] if splits is not None else SPLITS[h % 3]
        split_lists[split].append(house)
        rooms = _house_rooms(rng, min(regions_per_house, num_scenes - h * regions_per_house))
        _write_house(
            scans,
            truth,
            house=house,
            split=split,
            rooms=rooms,
            cats=cats,
            shots=shots,
            spacing=spacing,
            domain=domain,
            rng=rng,
        )
    _write_tables(scans, cats.rows, split_lists)
    return truth


def _house_id(rng: np.random.Generator, h: int, house_ids: Sequence[str] | None) -> str:
    """House ``h``'s id: ``house_ids[h]``, else 11 random characters like the real ids (drawn
    in both cases, so naming the houses leaves the rest of the stream unchanged)."""
    drawn = "".join(rng.choice(list(_ID_CHARS), 11))
    return drawn if house_ids is None else house_ids[h]


def _write_tables(
    scans: Path, rows: list[tuple[int, str, str]], splits: dict[str, list[str]]
) -> None:
    """The dataset-wide files: ``metadata/category_mapping.tsv`` and the benchmark split lists
    ``tasks/benchmark/scenes_<split>.txt``."""
    write_mapping(scans / "metadata" / "category_mapping.tsv", rows)
    bench = scans / "tasks" / "benchmark"
    bench.mkdir(parents=True, exist_ok=True)
    for s, houses in splits.items():
        (bench / f"scenes_{s}.txt").write_text("".join(f"{x}\n" for x in houses))


def _write_house(
    scans: Path,
    truth: MatterportTruth,
    *,
    house: str,
    split: str,
    rooms: list[Room],
    cats: _Categories,
    shots: _Shots,
    spacing: float,
    domain: Domain,
    rng: np.random.Generator,
) -> None:
    """One house: a mesh per region, its cameras, the images, the .conf and the .house file."""
    hdir = scans / house
    boxes = [b for r in rooms for b in r.boxes]
    ht = HouseTruth(house, split, boxes, [])
    truth.houses[house] = ht
    conf_groups: list[tuple[np.ndarray, list[tuple[str, int, int, np.ndarray]]]] = []
    first_box = 0
    for k, room in enumerate(rooms):
        seed = int(rng.integers(1 << 31))
        rt = _write_region(
            hdir,
            house,
            k,
            room,
            cats=cats,
            spacing=spacing,
            domain=domain,
            seed=seed,
            first_box=first_box,
        )
        first_box += len(room.boxes)
        truth.regions[rt.scene_id] = rt
        ht.regions.append(rt.scene_id)
        groups = _region_cameras(rng, room, shots.per_region[k], shots.image_size, shots.fov_deg)
        for group in groups:
            conf_groups.append(group)
            _add_views(truth, rt, group, shots.image_size)
    house_room = Room(name=house, size=(0.0, 0.0, 0.0), boxes=boxes)
    _write_images(hdir, house_room, truth, conf_groups, rng, shots.depth_dropout)
    write_conf(hdir / "undistorted_camera_parameters" / f"{house}.conf", conf_groups)
    write_house_file(
        hdir / "house_segmentations" / f"{house}.house",
        house,
        [v for v in truth.views.values() if v.house == house],
        rooms,
        cats.rows,
    )


def _write_region(
    hdir: Path,
    house: str,
    k: int,
    room: Room,
    *,
    cats: _Categories,
    spacing: float,
    domain: Domain,
    seed: int,
    first_box: int,
) -> RegionTruth:
    """Region ``k``'s mesh files; its truth labels are the per-vertex vote the reader makes."""
    mesh = box_mesh(
        room,
        spacing,
        seed=seed,
        domain=domain,
        category_of=lambda b: cats.cat_of[b.class_name],
        no_class=cats.no_class,
        train_of=lambda b: cats.train_of[b.class_name],
        first_box=first_box,
    )
    mesh.raw_label.update({idx: raw for idx, raw, _ in cats.rows})
    write_region(hdir / "region_segmentations", k, mesh)
    label = _vote(mesh.faces, mesh.face_label, len(mesh.xyz))
    return RegionTruth(f"{house}/region{k}", house, k, mesh, label, [])


def _add_views(
    truth: MatterportTruth,
    region: RegionTruth,
    group: tuple[np.ndarray, list[tuple[str, int, int, np.ndarray]]],
    image_size: tuple[int, int],
) -> None:
    """Record one camera's images (rendered later with the whole house)."""
    K, scans = group
    for pano, cam, yaw, c2w_gl in scans:
        name = f"{pano}_i{cam}_{yaw}"
        region.views.append(name)
        truth.views[name] = ViewTruth(
            name,
            region.house,
            region.region,
            K,
            c2w_gl @ GL_TO_CV,
            *image_size,
            box_index=np.empty(0, dtype=np.int32),
        )


def _house_rooms(rng: np.random.Generator, n: int) -> list[Room]:
    """``n`` random rooms, shifted so that they stand side by side along +x with gaps."""
    rooms, x0 = [], 0.0
    kinds = sorted(FURNITURE)
    for k in range(n):
        furniture = tuple(rng.choice(kinds, size=4, replace=False).tolist())
        room = make_room(
            int(rng.integers(1 << 31)),
            name=f"region{k}",
            furniture=furniture,
            size_range=(3.5, 4.5),
        )
        off = np.array([x0, 0.0, 0.0])
        boxes = [
            Box(
                tuple((np.asarray(b.lo) + off).tolist()),
                tuple((np.asarray(b.hi) + off).tolist()),
                b.class_name,
                b.color,
                b.texture,
                b.instance,
            )
            for b in room.boxes
        ]
        rooms.append(Room(name=room.name, size=room.size, boxes=boxes))
        x0 += room.size[0] + 1.0
    return rooms


def _vote(faces: np.ndarray, face_label: np.ndarray, n: int) -> np.ndarray:
    """Majority over touching faces, unlabelled first on ties (written apart from the reader)."""
    counts = np.zeros((n, 22), dtype=np.int64)
    np.add.at(counts, (faces.ravel(), np.repeat(face_label.astype(np.int64) + 1, 3)), 1)
    return (np.argmax(counts, axis=1) - 1).astype(np.int16)


def _region_cameras(rng, room: Room, n_views: int, size: tuple[int, int], fov_deg: float):
    """Groups (K, [(pano, cam, yaw, c2w_gl)]) of one panorama camera each, as written."""
    width, height = size
    lo = np.min([b.lo for b in room.boxes], axis=0)
    w, l = room.size[0], room.size[1]
    furniture = [b for b in room.boxes if b.class_name not in ("floor", "ceiling", "wall")]
    groups = []
    for p in range((n_views + YAWS * 3 - 1) // (YAWS * 3)):
        pano = "".join(rng.choice(list("0123456789abcdef"), 32))
        for _ in range(1000):  # a centre clear of furniture, 0.6 m from the walls
            c = np.array([lo[0] + 0.1 + rng.uniform(0.6, w - 0.6), rng.uniform(0.6, l - 0.6), 1.5])
            if all(
                not (b.lo[0] - 0.3 < c[0] < b.hi[0] + 0.3 and b.lo[1] - 0.3 < c[1] < b.hi[1] + 0.3)
                for b in furniture
            ):
                break
        for cam in range(3):
            n_here = min(YAWS, n_views - p * YAWS * 3 - cam * YAWS)
            if n_here <= 0:
                break
            fx = (width / 2.0) / np.tan(np.deg2rad(fov_deg) / 2.0) * (1.0 + 0.01 * cam)
            K = np.array(
                [
                    [g6(fx), 0, g6((width - 1) / 2 + 0.7 * (cam - 1))],
                    [0, g6(fx * 1.001), g6((height - 1) / 2 - 0.4 * cam)],
                    [0, 0, 1],
                ]
            )
            scans = []
            for yaw in range(n_here):
                tilt, ang = np.deg2rad(CAM_TILT_DEG[cam]), np.deg2rad(60.0 * yaw + 15.0 * p)
                pos = c + np.array([0.0, 0.0, 0.05 * (cam - 1)])
                d = np.array([np.cos(tilt) * np.cos(ang), np.cos(tilt) * np.sin(ang), np.sin(tilt)])
                c2w_gl = np.vectorize(g6)(look_at(pos, pos + d) @ GL_TO_CV)
                c2w_gl[3] = (0, 0, 0, 1)
                scans.append((pano, cam, yaw, c2w_gl))
            groups.append((K, scans))
    return groups


def _write_images(
    hdir: Path, house_room: Room, truth: MatterportTruth, groups, rng, dropout
) -> None:
    from PIL import Image

    cdir, ddir = hdir / "undistorted_color_images", hdir / "undistorted_depth_images"
    cdir.mkdir(parents=True, exist_ok=True)
    ddir.mkdir(parents=True, exist_ok=True)
    for K, scans in groups:
        for pano, cam, yaw, _ in scans:
            view = truth.views[f"{pano}_i{cam}_{yaw}"]
            rgb, depth, box_index = render(house_room, Camera(K, view.c2w, view.width, view.height))
            view.box_index = box_index
            raw = np.clip(np.round(depth.astype(np.float64) * 4000.0), 0, 65535).astype(np.uint16)
            raw[rng.random(raw.shape) < dropout] = 0
            Image.fromarray(rgb).save(cdir / f"{pano}_i{cam}_{yaw}.jpg", quality=95)
            Image.fromarray(raw).save(ddir / f"{pano}_d{cam}_{yaw}.png")
