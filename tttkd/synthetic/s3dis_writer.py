"""Write synthetic rooms as S3DIS (both versions) plus 2D-3D-S frames, byte for byte in format.

Layout under ``root`` (FORMATS.md §2, §7.2)::

    Stanford3dDataset_v1.2_Aligned_Version/Area_N/{Area_N_alignmentAngle.txt, <room>/<room>.txt,
                                                   <room>/Annotations/<class>_<k>.txt}  %.3f, int
    Stanford3dDataset_v1.2/...                      the same, six %.6f, in the raw area frame
    area_N/data/{rgb,depth,pose}/camera_<32 hex>_<room>_frame_<k>_domain_{rgb.png,depth.png,
                                                                          pose.json}

Geometry: a :class:`Room` lives in its own local box ``[0,w]x[0,l]x[0,h]`` (snapped to mm so
the bounding box survives ``%.3f`` exactly). In the raw area frame it is turned by θ (the angle
written to ``Area_N_alignmentAngle.txt``) and rooms of an area stand side by side; the Aligned
version turns each room back by ``Rz(-θ)`` about its bounding-box centre (FORMATS.md §2.4).
Images are rendered from the same Room (render.py, our pixel-centre convention) and the pose
JSON stores Blender's K (``cx = W/2``, i.e. ours + 0.5) and the world->camera RT in the raw
frame; Area 5 puts every other frame into ``area_5b`` in that area's own frame.

Real glitches reproduced: a NUL where a space belongs in an Aligned ``ceiling_1.txt`` (as in
``Area_5/hallway_6``), a ``\\x10`` in place of a ``0`` in a v1.2 ``ceiling_1.txt`` (as in
``Area_5/office_19``), ``\\x16``/``\\x11`` in the room files (never read), ``copy_Room_1.txt``
in Aligned ``Area_6/copyRoom_1``, a ``stairs_1.txt`` in the first room, and 65535 depth holes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tttkd.core import get_label_set
from tttkd.synthetic.defaults import IMAGE_SIZE, NUM_SCENES, VIEWS
from tttkd.synthetic.domain import SOURCE, Domain
from tttkd.synthetic.render import Camera, image_wh, place_cameras, render
from tttkd.synthetic.room import Box, Room, make_room, sample_points

ALIGNED_DIR = "Stanford3dDataset_v1.2_Aligned_Version"
RAW_DIR = "Stanford3dDataset_v1.2"
AREA_5B_TO_5A = np.array(
    [[0.0, 1.0, 0.0, -4.0970], [-1.0, 0.0, 0.0, 6.2262], [0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1.0]]
)
ROOM_TYPES = ("office", "copyRoom", "conferenceRoom", "hallway", "WC", "storage")
# Classes S3DIS has but FURNITURE lacks: (min size, max size), colour.
_EXTRA = {
    "board": (((1.2, 0.06, 1.0), (1.6, 0.06, 1.2)), (0.95, 0.95, 0.97)),
    "column": (((0.4, 0.4, 3.5), (0.5, 0.5, 3.5)), (0.70, 0.70, 0.66)),
    "clutter": (((0.3, 0.3, 0.3), (0.5, 0.5, 0.6)), (0.90, 0.50, 0.10)),
    "door": (((0.9, 0.06, 2.0), (1.0, 0.06, 2.1)), (0.50, 0.30, 0.15)),
    "stairs": (((1.0, 0.8, 0.5), (1.2, 1.0, 0.6)), (0.40, 0.40, 0.45)),
}
FURNITURE = ("table", "chair", "chair", "sofa", "bookshelf", "board", "clutter", "door")
_FILE_TOKEN = {"bookshelf": "bookcase"}  # label-table name -> S3DIS file-name token
_HEADER = "## Global alignment angle per disjoint space in Area_{n} ##\n" + (
    "## Disjoint Space Name Global Alignment Angle ##\n"
)


@dataclass
class S3DISFrameTruth:
    name: str  # camera_<uuid>_<room>_frame_<k>
    area_dir: str  # "area_1", "area_5a", "area_5b", ...
    K: np.ndarray  # (3, 3) in our convention (pixel centres at integers)
    c2w_raw: np.ndarray  # (4, 4) OpenCV, in the S3DIS raw (v1.2) area frame
    c2w_aligned: np.ndarray  # (4, 4) in the Aligned version's frame
    camera: Camera  # the camera in the room's local frame (what was rendered)


@dataclass
class S3DISRoomTruth:
    scene_id: str
    room: Room  # local geometry
    theta: float  # alignment angle (degrees)
    raw_from_local: np.ndarray  # (4, 4)
    aligned_from_raw: np.ndarray  # (4, 4) = Rz(-θ) about the bounding-box centre
    xyz_raw: np.ndarray  # (N, 3) float64, in reader order (annotation files sorted naturally)
    xyz_aligned: np.ndarray
    rgb: np.ndarray  # (N, 3) uint8 as written
    label: np.ndarray  # (N,) int16 s3dis13 train ids
    frames: list[S3DISFrameTruth] = field(default_factory=list)


@dataclass
class S3DISGroundTruth:
    root: Path
    rooms: dict[str, S3DISRoomTruth]
    corrupted: list[str]  # "relative/path:line" of every line written with a control byte


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _snap(room: Room) -> Room:
    """The room with every coordinate on a 2 mm grid, so that its bounding box and its centre
    (the pivot of the alignment turn) are exact in ``%.3f`` in both versions."""

    def q(v: float) -> float:
        return round(round(v / 0.002) * 0.002, 3)

    boxes = [
        Box(
            tuple(q(v) for v in b.lo),
            tuple(q(v) for v in b.hi),
            b.class_name,
            b.color,
            b.texture,
            b.instance,
        )
        for b in room.boxes
    ]
    return Room(name=room.name, size=tuple(q(v) for v in room.size), boxes=boxes)


def _rz(theta_deg: int) -> np.ndarray:
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][(theta_deg // 90) % 4]
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _apply(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ T[:3, :3].T + T[:3, 3]


def _lines(xyz: np.ndarray, rgb: np.ndarray, aligned: bool) -> list[bytes]:
    fmt = "%.3f %.3f %.3f %d %d %d" if aligned else "%.6f %.6f %.6f %.6f %.6f %.6f"
    rows = np.concatenate([xyz, rgb.astype(np.float64)], axis=1)
    return [(fmt % tuple(r)).encode() for r in rows]


def _corrupt(line: bytes, aligned: bool, in_room_file: bool) -> bytes:
    """One real-looking glitch; in annotation files the value survives the reader's repair."""
    tok = line.split(b" ")
    if in_room_file:  # a digit replaced: \x16 in a coordinate (Aligned), \x11 in a colour (v1.2)
        i, ch = (1, b"\x16") if aligned else (3, b"\x11")
        tok[i] = tok[i][:-2] + ch + tok[i][-1:]
        return b" ".join(tok)
    if aligned:  # "185\x00187 182": a NUL instead of the space between R and G
        return b" ".join(tok[:4]) + b"\x00" + b" ".join(tok[4:])
    tok[3] = tok[3][:5] + b"\x10" + tok[3][6:]  # "103.0\x100000": a 0 of R replaced
    return b" ".join(tok)


def blender_euler_xyz(R: np.ndarray) -> list[float]:
    """Euler XYZ angles (Blender's default order) of ``R = Rz @ Ry @ Rx``."""
    b = math.asin(max(-1.0, min(1.0, -float(R[2, 0]))))
    if abs(R[2, 0]) < 1 - 1e-9:
        return [math.atan2(R[2, 1], R[2, 2]), b, math.atan2(R[1, 0], R[0, 0])]
    return [math.atan2(-R[1, 2], R[1, 1]), b, 0.0]


def _write_frame(
    images_root: Path,
    area_dir: str,
    stem: str,
    *,
    cam: Camera,
    room: Room,
    c2w_file: np.ndarray,
    meta: dict,
    holes: float,
    rng: np.random.Generator,
) -> None:
    from PIL import Image

    data = images_root / area_dir / "data"
    for sub in ("rgb", "depth", "pose"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    rgb, depth, _ = render(room, cam)
    Image.fromarray(rgb).save(data / "rgb" / f"{stem}_domain_rgb.png")
    raw = np.clip(np.round(depth * 512.0), 0, 65534).astype(np.uint16)
    raw[rng.random(raw.shape) < holes] = 65535
    Image.fromarray(raw).save(data / "depth" / f"{stem}_domain_depth.png")
    K_file = cam.K.copy()
    K_file[0, 2] += 0.5  # Blender: principal point W/2 with pixel corners at integers
    K_file[1, 2] += 0.5
    w2c = np.linalg.inv(c2w_file)
    blender_rot = blender_euler_xyz(c2w_file[:3, :3] @ np.diag([1.0, -1.0, -1.0]))
    pose = {
        "camera_k_matrix": K_file.tolist(),
        "field_of_view_rads": 2 * math.atan(cam.width / 2 / cam.K[0, 0]),
        "camera_original_rotation": blender_rot,
        "camera_rt_matrix": w2c[:3, :4].tolist(),
        "camera_location": c2w_file[:3, 3].tolist(),
        "final_camera_rotation": blender_rot,
        "rotation_from_original_to_point": [0.0, 0.0, 0.0],
        **meta,
    }
    (data / "pose" / f"{stem}_domain_pose.json").write_text(json.dumps(pose))


def rooms_per_area(num_scenes: int, areas: tuple[int, ...]) -> list[int]:
    """``num_scenes`` rooms spread over ``areas`` in order (the first areas get one more)."""
    n, extra = divmod(num_scenes, len(areas))
    return [n + (i < extra) for i in range(len(areas))]


@dataclass(frozen=True)
class _Placement:
    """Where a room stands in its area: the one pose the clouds, the angle file and the
    frames share."""

    theta: int  # alignment angle, degrees
    raw_from_local: np.ndarray  # (4, 4)
    aligned_from_raw: np.ndarray  # (4, 4) = Rz(-θ) about the bounding-box centre
    next_x: float  # where the next room of the area starts (rooms stand side by side)


@dataclass(frozen=True)
class _Sampled:
    """A room's points in sampling order, and the annotation file each box's points go to."""

    xyz_raw: np.ndarray  # (N, 3) float64
    xyz_aligned: np.ndarray
    rgb: np.ndarray  # (N, 3) uint8, after the domain
    files: list[tuple[str, np.ndarray, Box]]  # (file name, point indices, box), reader order


def _s3dis_room(name: str, rseed: int, stairs: bool) -> Room:
    """A room with S3DIS's classes (``stairs`` only in the dataset's first room)."""
    room = make_room(
        rseed,
        name=name,
        furniture=FURNITURE + (("stairs",) if stairs else ()),
        colors={k: v[1] for k, v in _EXTRA.items()},
        sizes={k: v[0] for k, v in _EXTRA.items()},
    )
    return _snap(room)


def _place(room: Room, *, area: int, index: int, x_cursor: float) -> _Placement:
    """Turn room ``index`` of ``area`` by its angle and stand it at ``x_cursor``."""
    theta = (90, 270, 180, 0)[index % 4]
    R = _rz(theta)
    size = np.asarray(room.size)
    ext = np.abs(R) @ size
    lo = np.array([x_cursor, 10.0 * area - 30.0, 0.1])
    centre = lo + ext / 2
    Rm = R.T  # Rz(-θ)
    return _Placement(
        theta=theta,
        raw_from_local=_rigid(R, lo + ext / 2 - R @ (size / 2)),
        aligned_from_raw=_rigid(Rm, centre - Rm @ centre),
        next_x=round(x_cursor + ext[0] + 1.0, 3),
    )


def _annotation_files(room: Room, box_idx: np.ndarray) -> list[tuple[str, np.ndarray, Box]]:
    """One file per box, ``<token>_<k>.txt`` with k counted per token, sorted as the reader
    sorts them (so the truth's points are in reader order)."""
    counts: dict[str, int] = {}
    files = []
    for bi, box in enumerate(room.boxes):
        token = _FILE_TOKEN.get(box.class_name, box.class_name)
        counts[token] = counts.get(token, 0) + 1
        files.append((f"{token}_{counts[token]}.txt", np.flatnonzero(box_idx == bi), box))
    files.sort(key=lambda f: _natural(f[0]))
    return files


def _sample(room: Room, place: _Placement, *, domain: Domain, rseed: int) -> _Sampled:
    xyz, rgb_true, box_idx = sample_points(room, spacing=domain.spacing, seed=rseed)
    rgb = domain.point_colors(rgb_true, seed=rseed)
    files = _annotation_files(room, box_idx)
    xyz_raw = _apply(place.raw_from_local, xyz.astype(np.float64))
    xyz_al = _apply(place.aligned_from_raw, xyz_raw)
    return _Sampled(xyz_raw=xyz_raw, xyz_aligned=xyz_al, rgb=rgb, files=files)


def _room_truth(scene_id: str, room: Room, place: _Placement, s: _Sampled) -> S3DISRoomTruth:
    """What the reader must give back: the points in annotation-file order, s3dis13 labels."""
    order = np.concatenate([f[1] for f in s.files])
    ls = get_label_set("s3dis13")
    label_of = {"stairs": "clutter"}
    label = np.concatenate(
        [
            np.full(len(f[1]), ls.index(label_of.get(f[2].class_name, f[2].class_name)))
            for f in s.files
        ]
    ).astype(np.int16)
    return S3DISRoomTruth(
        scene_id=scene_id,
        room=room,
        theta=float(place.theta),
        raw_from_local=place.raw_from_local,
        aligned_from_raw=place.aligned_from_raw,
        xyz_raw=s.xyz_raw[order],
        xyz_aligned=s.xyz_aligned[order],
        rgb=s.rgb[order],
        label=label,
    )


def _write_room_texts(
    root: Path, truth: S3DISGroundTruth, scene_id: str, s: _Sampled, *, first: bool
) -> None:
    """The room file and its annotation files in both versions; the dataset's first room gets
    the control-byte glitches (listed in ``truth.corrupted``)."""
    area, name = scene_id.split("/")
    for vdir, pts, aligned in ((ALIGNED_DIR, s.xyz_aligned, True), (RAW_DIR, s.xyz_raw, False)):
        room_dir = root / vdir / area / name
        (room_dir / "Annotations").mkdir(parents=True, exist_ok=True)
        all_lines = []
        for fname, idx, _ in s.files:
            lines = _lines(pts[idx], s.rgb[idx], aligned)
            if first and fname == "ceiling_1.txt" and len(lines) > 10:
                lines[7] = _corrupt(lines[7], aligned, in_room_file=False)
                truth.corrupted.append(f"{vdir}/{area}/{name}/Annotations/{fname}:8")
            all_lines.extend(lines)
            (room_dir / "Annotations" / fname).write_bytes(b"\n".join(lines) + b"\n")
        if first:
            all_lines[3] = _corrupt(all_lines[3], aligned, in_room_file=True)
        room_file = "copy_Room_1" if (aligned and scene_id == "Area_6/copyRoom_1") else name
        (room_dir / f"{room_file}.txt").write_bytes(b"\n".join(all_lines) + b"\n")


@dataclass(frozen=True)
class _Cameras:
    """How the 2D-3D-S frames of every room are shot."""

    views: int
    width: int
    height: int
    fov_deg: float
    depth_hole_fraction: float


def _write_room_frames(
    root: Path,
    room: S3DISRoomTruth,
    *,
    area: int,
    cameras: _Cameras,
    rseed: int,
    rng: np.random.Generator,
) -> None:
    """2D-3D-S frames, rendered in the local frame and posed in the raw area frame; Area 5
    puts every other camera position into ``area_5b``. Appends to ``room.frames``."""
    name = room.scene_id.split("/")[1]
    cams = place_cameras(
        room.room,
        cameras.views,
        width=cameras.width,
        height=cameras.height,
        fov_deg=cameras.fov_deg,
        seed=rseed,
    )
    uuid = ""
    for k, cam in enumerate(cams):
        if k % 2 == 0:  # two frames per camera position, as 2D-3D-S groups them
            uuid = rng.bytes(16).hex()
        c2w_raw = room.raw_from_local @ cam.c2w
        if area == 5:
            area_dir = "area_5b" if (k // 2) % 2 else "area_5a"
        else:
            area_dir = f"area_{area}"
        c2w_file = np.linalg.inv(AREA_5B_TO_5A) @ c2w_raw if area_dir == "area_5b" else c2w_raw
        stem = f"camera_{uuid}_{name}_frame_{k}"
        meta = {
            "frame_num": k,
            "camera_uuid": uuid,
            "point_uuid": rng.bytes(16).hex(),
            "room": name,
        }
        _write_frame(
            root,
            area_dir,
            stem,
            cam=cam,
            room=room.room,
            c2w_file=c2w_file,
            meta=meta,
            holes=cameras.depth_hole_fraction,
            rng=rng,
        )
        room.frames.append(
            S3DISFrameTruth(
                name=stem,
                area_dir=area_dir,
                K=cam.K.copy(),
                c2w_raw=c2w_raw,
                c2w_aligned=room.aligned_from_raw @ c2w_raw,
                camera=cam,
            )
        )


def write_s3dis_dataset(
    root: str | Path,
    num_scenes: int = NUM_SCENES,
    *,
    views: int = VIEWS["s3dis"],
    image_size: tuple[int, int] = IMAGE_SIZE["s3dis"],
    areas: tuple[int, ...] = (1, 5),
    seed: int = 0,
    domain: Domain = SOURCE,
    fov_deg: float = 75.0,
    depth_hole_fraction: float = 0.01,
) -> S3DISGroundTruth:
    """Write synthetic S3DIS (both versions) and 2D-3D-S frames under ``root``; return the truth.

    ``num_scenes`` rooms are spread over ``areas`` (:func:`rooms_per_area`; an area left without
    a room is not written), each with ``views`` frames of ``image_size`` = (width, height)
    pixels. ``root`` must be new or empty. Point colours follow ``domain``; images stay clean.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; write synthetic S3DIS into a new folder")
    if num_scenes < 1 or not areas:
        raise ValueError("num_scenes must be >= 1 and areas must name at least one area")
    width, height = image_wh(image_size)
    cameras = _Cameras(views, width, height, fov_deg, depth_hole_fraction)
    rng = np.random.default_rng(seed)  # one stream over every frame of every room, in order
    truth = S3DISGroundTruth(root=root, rooms={}, corrupted=[])
    for ai, (area, n_rooms) in enumerate(zip(areas, rooms_per_area(num_scenes, areas))):
        if n_rooms == 0:
            continue
        angles = []
        x_cursor = -20.0
        for ri in range(n_rooms):
            name = f"{ROOM_TYPES[ri % len(ROOM_TYPES)]}_{ri // len(ROOM_TYPES) + 1}"
            rseed = seed * 1000 + area * 100 + ri
            room = _s3dis_room(name, rseed, stairs=ai == ri == 0)
            place = _place(room, area=area, index=ri, x_cursor=x_cursor)
            x_cursor = place.next_x
            angles.append(f"{name} {place.theta}\n")
            scene_id = f"Area_{area}/{name}"
            sampled = _sample(room, place, domain=domain, rseed=rseed)
            truth.rooms[scene_id] = _room_truth(scene_id, room, place, sampled)
            _write_room_texts(root, truth, scene_id, sampled, first=ai == ri == 0)
            if views:
                _write_room_frames(
                    root, truth.rooms[scene_id], area=area, cameras=cameras, rseed=rseed, rng=rng
                )
        for vdir in (ALIGNED_DIR, RAW_DIR):
            path = root / vdir / f"Area_{area}" / f"Area_{area}_alignmentAngle.txt"
            path.write_text(_HEADER.format(n=area) + "".join(angles))
    return truth
