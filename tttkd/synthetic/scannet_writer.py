"""Write synthetic rooms as a ScanNet v2 dataset folder, byte-for-byte in the real formats.

Layout written (FORMATS.md section 1): ``scans/<id>/`` (train/val) or ``scans_test/<id>/``
(test: no labels, no axisAlignment) with ``<id>_vh_clean_2.ply`` (binary, VCGLIB header,
x y z red green blue alpha + triangle faces), ``_vh_clean_2.labels.ply``, segs and
aggregation JSONs, ``<id>.txt``, ``<id>.sens`` and a reader.py export; the 25k frame subset
under ``scannet_frames_25k/``; at the root the label map TSV (real header, CRLF, only the rows
needed) and ``scannetv2_{train,val,test}.txt``.

Geometry is stored in the scan's raw frame: ``raw = A^-1 @ room`` where ``A`` (the scene's
``axisAlignment``) is a rotation about z plus a translation, so ``align=True`` in the reader
recovers the room frame. The returned :class:`ScanNetTruth` is what a reader must give back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tttkd.core import get_label_set
from tttkd.pipeline.datasets.ply import write_ply
from tttkd.synthetic.defaults import IMAGE_SIZE, NUM_SCENES, VIEWS
from tttkd.synthetic.domain import SOURCE, Domain
from tttkd.synthetic.render import image_wh
from tttkd.synthetic.room import FURNITURE, Room, make_room, sample_points
from tttkd.synthetic.scannet_frames_writer import (
    FRAME_KINDS,
    FrameTruth,
    make_frames,
    write_sens,
    write_tree,
)

TSV_HEADER = (
    "id raw_category category count nyu40id eigen13id nyuClass nyu40class eigen13class "
    "ModelNet40 ModelNet10 ShapeNetCore55 synsetoffset wnsynsetid wnsynsetkey mpcat40 "
    "mpcat40index"
).split()
# Rows of ScanNet's scannetv2-labels.combined.tsv for the classes a synthetic room can hold:
# class name -> (id, raw_category, category, count, nyu40id, eigen13id, nyuClass, nyu40class,
# eigen13class, ModelNet40, ModelNet10, ShapeNetCore55, synsetoffset, wnsynsetid, wnsynsetkey,
# mpcat40, mpcat40index). The raw_category is what the aggregation's segGroup labels say.
TSV_ROWS = {
    "wall": "1|wall|wall|8277|1|12|wall|wall|Wall|||||n04546855|wall.n.01|wall|1",
    "chair": "2|chair|chair|4646|5|4|chair|chair|Chair|chair|chair|chair|3001627|n03001627|"
    "chair.n.01|chair|3",
    "floor": "3|floor|floor|1553|2|5|floor|floor|Floor|||||n03365592|floor.n.01|floor|2",
    "table": "4|table|table|1170|7|10|table|table|Table|table|table|table|4379243|n04379243|"
    "table.n.02|table|5",
    "ceiling": "41|ceiling|ceiling|806|22|3|ceiling|ceiling|Ceiling|||||n02990373|"
    "ceiling.n.01|ceiling|17",
    "cabinet": "29|kitchen cabinets|kitchen cabinet|289|3|6|cabinet|cabinet|Furniture|||"
    "cabinet|2933112|n02933112|cabinet.n.01|cabinet|7",
    "desk": "9|desk|desk|680|14|10|desk|desk|Table|desk|desk|table|4379243|n03179701|"
    "desk.n.01|table|5",
    "sofa": "6|couch|couch|502|6|9|sofa|sofa|Sofa|sofa|sofa|sofa|4256520|n04256520|"
    "sofa.n.01|sofa|10",
    "bed": "11|bed|bed|370|4|1|bed|bed|Bed|bed|bed|bed|2818832|n02818832|bed.n.01|bed|11",
    "bookshelf": "18|bookshelf|bookshelf|360|10|6|bookshelf|bookshelf|Furniture|bookshelf||"
    "bookshelf|2871439|n02871439|bookshelf.n.01|shelving|31",
    "door": "5|door|door|1483|8|12|door|door|Wall|door||||n03221720|door.n.01|door|4",
    "window": "16|window|window|1209|9|13|window|window|Window|||||n04587648|window.n.01|window|9",
    "otherfurniture": "56|trash can|trash can|1090|39|6|garbage bin|otherfurniture|Furniture|"
    "||trash_bin|2747177|n02747177|ashcan.n.01|objects|39",
    "refrigerator": "27|refrigerator|refrigerator|154|24|6|refridgerator|refridgerator|"
    "Furniture|||||n04070727|refrigerator.n.01|appliances|37",
}
RAW_CATEGORY = {k: v.split("|")[1] for k, v in TSV_ROWS.items()}
NYU40 = {k: int(v.split("|")[4]) for k, v in TSV_ROWS.items()}
SEGMENT_SIZE = 0.5  # metres: a face patch is cut into segments of about this size


@dataclass(eq=False)
class ScanNetTruth:
    """Everything written for one scene, for tests and demos to compare readers against."""

    scene_id: str
    split: str
    room: Room = field(repr=False)
    xyz: np.ndarray = field(repr=False)  # float32 (N, 3) raw frame, exactly as in the PLY
    xyz_aligned: np.ndarray = field(repr=False)  # float64 A @ xyz
    rgb: np.ndarray = field(repr=False)  # uint8 (N, 3) point colours (after the domain)
    label: np.ndarray = field(repr=False)  # int16 (N,) scannet20 train ids, -1 = ignore
    nyu40: np.ndarray = field(repr=False)  # uint16 (N,) 0 = unannotated
    box_index: np.ndarray = field(repr=False)  # int32 (N,) index into room.boxes
    segments: np.ndarray = field(repr=False)  # int64 (N,) segIndices
    faces: np.ndarray = field(repr=False)  # int32 (F, 3)
    axis_alignment: np.ndarray | None  # (4, 4); None for test scans
    frames: list[FrameTruth] = field(repr=False)
    frame_step: int = 100

    @property
    def valid_frames(self) -> list[FrameTruth]:
        return [f for f in self.frames if f.valid]


def _mesh_and_segments(
    room: Room, xyz_room: np.ndarray, box_idx: np.ndarray, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Triangles over each face's sampling grid, and segments of ~SEGMENT_SIZE patches.

    ``sample_points`` puts one jittered point per grid cell on every box face, so the cell of
    a point is ``floor``; neighbouring cells give quads (two triangles each). A segment id is
    the smallest vertex id in its patch, as ScanNet's segmentator names segments.
    """
    faces, segs = [], np.full(len(xyz_room), -1, dtype=np.int64)
    for bi, box in enumerate(room.boxes):
        lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float)
        for axis in range(3):
            a, b = [k for k in range(3) if k != axis]
            na = max(1, int(np.ceil((hi[a] - lo[a]) / spacing)))
            nb = max(1, int(np.ceil((hi[b] - lo[b]) / spacing)))
            for side in (lo[axis], hi[axis]):
                ids = np.flatnonzero((box_idx == bi) & (xyz_room[:, axis] == np.float32(side)))
                if len(ids) == 0:
                    continue
                p = xyz_room[ids].astype(np.float64)
                ia = np.clip(np.floor((p[:, a] - lo[a]) / (hi[a] - lo[a]) * na), 0, na - 1)
                ib = np.clip(np.floor((p[:, b] - lo[b]) / (hi[b] - lo[b]) * nb), 0, nb - 1)
                ia, ib = ia.astype(np.int64), ib.astype(np.int64)
                grid = np.full((na + 1, nb + 1), -1, dtype=np.int64)
                grid[ia, ib] = ids
                v00, v10, v01, v11 = grid[:-1, :-1], grid[1:, :-1], grid[:-1, 1:], grid[1:, 1:]
                ok = (v00 >= 0) & (v10 >= 0) & (v01 >= 0) & (v11 >= 0)
                faces.append(np.stack([v00[ok], v10[ok], v11[ok]], 1))
                faces.append(np.stack([v00[ok], v11[ok], v01[ok]], 1))
                cells = max(1, round(SEGMENT_SIZE / spacing))
                block = (ia // cells) * (nb // cells + 1) + ib // cells
                _, inv = np.unique(block, return_inverse=True)
                first = np.full(inv.max() + 1, np.iinfo(np.int64).max)
                np.minimum.at(first, inv, ids)
                segs[ids] = first[inv]
    return np.concatenate(faces).astype(np.int32), segs


def _alignment(rng: np.random.Generator, room: Room) -> np.ndarray:
    """A non-identity axisAlignment: rotation about z plus translation, on a 1e-6 grid."""
    t = np.deg2rad(rng.uniform(20, 160))
    A = np.eye(4)
    A[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    A[:3, 3] = (rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-0.1, 0.1))
    return np.round(A, 6)


def write_tsv(root: Path, classes: Sequence[str] = tuple(TSV_ROWS)) -> Path:
    """The label map with the real 17-column header and CRLF line ends (rows needed only)."""
    rows = ["\t".join(TSV_HEADER)] + [TSV_ROWS[c].replace("|", "\t") for c in classes]
    path = root / "scannetv2-labels.combined.tsv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))
    return path


def _meta_text(truth: ScanNetTruth, n_frames: int, off_by_one: bool) -> str:
    f = truth.frames[0]
    (w, h), (dw, dh) = (f.width, f.height), f.depth_size
    meta: dict[str, str] = {
        "colorHeight": str(h),
        "colorToDepthExtrinsics": " ".join(f"{v:f}" for v in np.eye(4).ravel()),
        "colorWidth": str(w),
        "depthHeight": str(dh),
        "depthWidth": str(dw),
        "fx_color": f"{f.K[0, 0]:f}",
        "fx_depth": f"{f.depth_K[0, 0]:f}",
        "fy_color": f"{f.K[1, 1]:f}",
        "fy_depth": f"{f.depth_K[1, 1]:f}",
        "mx_color": f"{f.K[0, 2]:f}",
        "mx_depth": f"{f.depth_K[0, 2]:f}",
        "my_color": f"{f.K[1, 2]:f}",
        "my_depth": f"{f.depth_K[1, 2]:f}",
        "numColorFrames": str(n_frames + off_by_one),  # ScanNet #59: some .txt count one more
        "numDepthFrames": str(n_frames),
        "numIMUmeasurements": "0",
        "sceneType": "Bedroom / Hotel",
    }
    if truth.axis_alignment is not None:
        meta["axisAlignment"] = " ".join(f"{v:f}" for v in truth.axis_alignment.ravel())
    return "".join(f"{k} = {meta[k]}\n" for k in sorted(meta))


def _labels(
    room: Room, box_idx: np.ndarray, segs: np.ndarray, test: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """NYU40 ids and scannet20 train ids per vertex, and which vertices are unannotated: one
    wall's segment (real scans leave some unannotated), or every vertex of a test scan."""
    classes = np.array([b.class_name for b in room.boxes])[box_idx]
    lset = get_label_set("scannet20")
    unannotated = segs == segs[np.flatnonzero(classes == "wall")[0]] if not test else None
    nyu = np.array([NYU40[c] for c in classes], dtype=np.uint16)
    label = np.array([lset.index(c) if c in lset.class_names else -1 for c in classes], np.int16)
    if test:
        nyu[:], label[:] = 0, -1
    else:
        nyu[unannotated], label[unannotated] = 0, -1
    return nyu, label, unannotated


def _write_frame_forms(
    root: Path, scan: Path, truth: ScanNetTruth, frames: Sequence[str], *, jpeg_quality: int
) -> int:
    """The frame forms asked for; returns the frame count the scan's .txt states (the .sens's
    own count when one is written)."""
    sid, test = truth.scene_id, truth.split == "test"
    n = len(truth.frames) * truth.frame_step
    if "sens" in frames:
        n = write_sens(scan / f"{sid}.sens", truth.frames, truth.frame_step, jpeg_quality)
    if "exported" in frames:
        write_tree(scan, truth.frames, "exported", jpeg_quality)
    if "25k" in frames and not test:  # the 25k subset covers train and val scans only
        write_tree(root / "scannet_frames_25k" / sid, truth.frames, "25k", jpeg_quality)
    return n


def write_scannet_scene(
    root: str | Path,
    scene_id: str,
    room: Room,
    *,
    split: str = "train",
    domain: Domain = SOURCE,
    seed: int = 0,
    frames: Sequence[str] = FRAME_KINDS,
    image_size: tuple[int, int] = IMAGE_SIZE["scannet"],
    views: int = VIEWS["scannet"],
    frame_step: int = 100,
    jpeg_quality: int = 95,
    meta_off_by_one: bool = False,
) -> ScanNetTruth:
    """Write one scene of ``room``; returns what a reader must give back."""
    unknown = set(frames) - set(FRAME_KINDS)
    if unknown:
        raise ValueError(f"unknown frame forms {sorted(unknown)}; use {FRAME_KINDS}")
    root = Path(root)
    test = split == "test"
    scan = root / ("scans_test" if test else "scans") / scene_id
    scan.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    A = np.eye(4) if test else _alignment(rng, room)
    xyz_room, rgb_true, box_idx = sample_points(room, spacing=domain.spacing, seed=seed)
    faces, segs = _mesh_and_segments(room, xyz_room, box_idx, domain.spacing)
    raw = (xyz_room.astype(np.float64) - A[:3, 3]) @ np.linalg.inv(A[:3, :3]).T
    xyz = raw.astype(np.float32)
    nyu, label, unannotated = _labels(room, box_idx, segs, test)
    truth = ScanNetTruth(
        scene_id=scene_id,
        split=split,
        room=room,
        xyz=xyz,
        xyz_aligned=xyz.astype(np.float64) @ A[:3, :3].T + A[:3, 3],
        rgb=domain.point_colors(rgb_true, seed=seed),
        label=label,
        nyu40=nyu,
        box_index=box_idx,
        segments=segs,
        faces=faces,
        axis_alignment=None if test else A,
        frames=make_frames(
            room, A, views=views, image_size=image_size, frame_step=frame_step, seed=seed + 1
        ),
        frame_step=frame_step,
    )
    _write_meshes(scan, truth, test)
    if not test:
        _write_annotations(scan, truth, unannotated)
    n = _write_frame_forms(root, scan, truth, frames, jpeg_quality=jpeg_quality)
    (scan / f"{scene_id}.txt").write_text(_meta_text(truth, n, meta_off_by_one))
    return truth


def _write_meshes(scan: Path, truth: ScanNetTruth, test: bool) -> None:
    sid = truth.scene_id
    fields = [(k, "<f4") for k in "xyz"] + [(k, "u1") for k in ("red", "green", "blue", "alpha")]
    vertex = np.empty(len(truth.xyz), dtype=fields)
    for i, k in enumerate("xyz"):
        vertex[k] = truth.xyz[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        vertex[k] = truth.rgb[:, i]
    vertex["alpha"] = 255
    face = np.empty(len(truth.faces), dtype=[("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = truth.faces
    comments = ["VCGLIB generated"]
    write_ply(scan / f"{sid}_vh_clean_2.ply", {"vertex": vertex, "face": face}, comments=comments)
    if not test:
        lab = np.empty(len(vertex), dtype=[*fields, ("label", "<u2")])
        for k, _ in fields:
            lab[k] = vertex[k]
        lab["label"] = truth.nyu40
        write_ply(
            scan / f"{sid}_vh_clean_2.labels.ply", {"vertex": lab, "face": face}, comments=comments
        )


def _write_annotations(scan: Path, truth: ScanNetTruth, unannotated: np.ndarray) -> None:
    sid = truth.scene_id
    segs_name = f"{sid}_vh_clean_2.0.010000.segs.json"
    params = {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "750", "maxPoints": "5000"}
    (scan / segs_name).write_text(
        json.dumps({"params": params, "sceneId": sid, "segIndices": truth.segments.tolist()})
    )
    groups = []
    for bi, box in enumerate(truth.room.boxes):
        seg_ids = np.unique(truth.segments[(truth.box_index == bi) & ~unannotated])
        if len(seg_ids):
            k = len(groups)
            groups.append(
                {
                    "id": k,
                    "objectId": k,
                    "segments": seg_ids.tolist(),
                    "label": RAW_CATEGORY[box.class_name],
                }
            )
    agg = {
        "sceneId": f"scannet.{sid}",
        "appId": "Aggregator.v2",
        "segGroups": groups,
        "segmentsFile": f"scannet.{segs_name}",
    }
    (scan / f"{sid}.aggregation.json").write_text(json.dumps(agg))


def default_splits(n: int) -> list[str]:
    """train first, then >= 1 val scene from 2 scenes on, and 1 test scene from 4 on."""
    n_test = 1 if n >= 4 else 0
    n_val = max(1, n // 4) if n >= 2 else 0
    return ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test


def write_scannet_dataset(
    root: str | Path,
    num_scenes: int = NUM_SCENES,
    *,
    views: int = VIEWS["scannet"],
    image_size: tuple[int, int] = IMAGE_SIZE["scannet"],
    seed: int = 0,
    domain: Domain = SOURCE,
    frames: Sequence[str] = FRAME_KINDS,
    splits: Sequence[str] | None = None,
    frame_step: int = 100,
    furniture: Sequence[str] = ("bed", "bookshelf", "table", "chair", "cabinet"),
    colors: dict[str, tuple[float, float, float]] | None = None,
) -> list[ScanNetTruth]:
    """``num_scenes`` rooms as a ScanNet v2 root (scans, 25k subset, label map, split files),
    each with ``views`` frames of ``image_size`` = (width, height) pixels."""
    for c in furniture:
        if c not in TSV_ROWS or (c not in FURNITURE and not (colors and c in colors)):
            raise ValueError(f"furniture class {c!r} cannot be written as ScanNet")
    image_size = image_wh(image_size)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    splits = list(splits) if splits is not None else default_splits(num_scenes)
    if len(splits) != num_scenes:
        raise ValueError(f"{len(splits)} split names for {num_scenes} scenes")
    truths, n_test = [], 0
    for i, split in enumerate(splits):
        sid = f"scene{707 + n_test:04d}_00" if split == "test" else f"scene{i:04d}_00"
        n_test += split == "test"
        room = make_room(seed * 1000 + i, name=sid, furniture=tuple(furniture), colors=colors)
        truths.append(
            write_scannet_scene(
                root,
                sid,
                room,
                split=split,
                domain=domain,
                seed=seed * 1000 + i,
                frames=frames,
                image_size=image_size,
                views=views,
                frame_step=frame_step,
                meta_off_by_one=i == 0,
            )
        )
    write_tsv(root)
    for split in ("train", "val", "test"):
        ids = [t.scene_id for t in truths if t.split == split]
        (root / f"scannetv2_{split}.txt").write_text("".join(f"{s}\n" for s in ids))
    return truths
