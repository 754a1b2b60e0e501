"""S3DIS rooms (Aligned or non-aligned v1.2) with their 2D-3D-S frames, as one Scene each.

Scene ids are ``Area_<n>/<room>`` (e.g. ``Area_5/office_1``), listed from the room *folders*
(so ``Area_6/copyRoom_1`` is found although its room file is misnamed ``copy_Room_1.txt``).

* **Root and version.** ``root`` is either a version folder holding ``Area_1 ... Area_6``,
  or a folder above ``Stanford3dDataset_v1.2_Aligned_Version`` and/or ``Stanford3dDataset_v1.2``.
  ``version=None`` picks: the folder's own name when root is a version folder (a renamed one is
  recognised by its number format: Aligned prints ``%.3f`` and integer colours, v1.2 six
  ``%.6f``), else ``"aligned"`` if present, else ``"raw"``. An explicit ``version`` that
  contradicts the folder is an error.
* **Points** come from ``<room>/Annotations/<class>_<k>.txt``:
  class = file-name prefix before the first ``_``; ``stairs`` -> clutter, ``bookcase`` -> the
  label table's ``bookshelf``. Any other prefix is an error (``unknown_class="ignore"`` labels
  those points -1 and warns instead). Corrupted bytes are handled in :mod:`.s3dis_text`.
* **Completeness.** The room file ``<room>/<room>.txt`` (or the room folder's only other
  ``.txt``, e.g. the misnamed ``copy_Room_1.txt``) holds every point of the room, so its line
  count must equal the sum over the object files (lines are counted, not parsed).
  A deleted object file, or one cut short (at a line end or inside a line), makes the sum
  smaller; that is a warning naming both, not an error, because the real data has a legitimate
  mismatch (``Area_5/office_36`` ships a duplicate ``wall_3 (1).txt``). A room without a room
  file is read with a warning that the check could not be made.
* **Splits.** ``train`` = every area but ``test_area`` (default 5); ``val``/``test`` = that
  area. ``Scene.split`` is ``"train"`` or ``"val"``.
* **Frames** (2D-3D-S, :mod:`.stanford2d3ds`) are in the frame of the non-aligned v1.2 clouds.
  With ``version="aligned"`` they are moved into the aligned frame, so points and poses always
  share one frame: ``p_aligned = Rz(-θ)(p_raw - c) + c`` with θ from
  ``Area_N_alignmentAngle.txt`` and c the centre of the room's bounding box (the same in both
  versions: a 90° turn about c keeps c). That direction is FORMATS.md §2.4's and is unverified
  on real data, so ``align_direction="auto"`` (default) checks it: for θ = 90/270 it counts the
  points that agree with the depth of a few frames under ``Rz(-θ)`` (``"documented"``) and
  ``Rz(+θ)`` (``"inverse"``), keeps the documented one unless the other explains over 10 %
  more points, and warns when it switches (a 180° error leaves the room's shell in place, so
  only the furniture tells them apart). ``images_root=None`` looks for ``area_*`` folders in
  ``root``.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tttkd.core import DatasetError, Frame, Scene, get_label_set, project
from tttkd.pipeline.datasets.protocol import check_frames, check_max_views
from tttkd.pipeline.datasets.s3dis_text import count_lines, read_xyzrgb, sniff_version
from tttkd.pipeline.datasets.stanford2d3ds import find_area_dirs, load_frames

Version = Literal["aligned", "raw"]
AlignDirection = Literal["auto", "documented", "inverse"]
VERSION_DIRS: dict[str, str] = {
    "aligned": "Stanford3dDataset_v1.2_Aligned_Version",
    "raw": "Stanford3dDataset_v1.2",
}
# File-name class tokens of S3DIS, in train-id order, and the ones renamed for the label table.
FILE_CLASSES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
)  # fmt: skip
CLASS_ALIASES = {"bookcase": "bookshelf", "stairs": "clutter"}
LABEL_SET = "s3dis13"
_AREA = re.compile(r"^Area_(\d+)$")
_SCENE = re.compile(r"^Area_(\d+)/([^/\\]+)$")


def class_train_id(token: str) -> int | None:
    """S3DIS train id of a file-name class token (``stairs`` -> clutter); None if unknown."""
    ls = get_label_set(LABEL_SET)
    name = CLASS_ALIASES.get(token, token)
    return ls.index(name) if name in ls.class_names else None


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _areas(vroot: Path) -> dict[int, Path]:
    out = {}
    for d in vroot.iterdir():
        m = _AREA.match(d.name)
        if m and d.is_dir():
            out[int(m.group(1))] = d
    return dict(sorted(out.items()))


def _version_from_name(name: str) -> str | None:
    if name == VERSION_DIRS["raw"]:
        return "raw"
    return "aligned" if "aligned" in name.lower() else None


def _sniff_folder(vroot: Path) -> str | None:
    for area in _areas(vroot).values():
        for f in sorted(area.glob("*/Annotations/*.txt"))[:1]:
            return sniff_version(f)
    return None


def resolve_version_root(root: str | Path, version: Version | None = None) -> tuple[Path, str]:
    """(folder holding ``Area_N``, ``"aligned"`` or ``"raw"``); see the module docstring."""
    root = Path(root).expanduser()
    if version not in (None, "aligned", "raw"):
        raise ValueError(f"version must be 'aligned' or 'raw', got {version!r}")
    if not root.is_dir():
        raise DatasetError(
            "S3DIS root folder does not exist",
            file=root,
            fix=f"point root at {VERSION_DIRS['aligned']} or {VERSION_DIRS['raw']} (or above)",
        )
    if _areas(root):
        detected = _version_from_name(root.name) or _sniff_folder(root)
        if version is not None and detected is not None and version != detected:
            raise DatasetError(
                f"version={version!r} was asked for but this folder holds the {detected} version",
                file=root,
                fix=f"pass version={detected!r}, or point root at {VERSION_DIRS[version]}",
            )
        return root, version or detected or "aligned"
    present = {v: root / d for v, d in VERSION_DIRS.items() if (root / d).is_dir()}
    if not present:
        raise DatasetError(
            f"no Area_N folders and neither {VERSION_DIRS['aligned']} nor {VERSION_DIRS['raw']}",
            file=root,
            fix="point root at the extracted S3DIS folder",
        )
    chosen = version or ("aligned" if "aligned" in present else "raw")
    if chosen not in present:
        raise DatasetError(
            f"version={chosen!r} was asked for but {VERSION_DIRS[chosen]} is not in this folder "
            f"(found: {', '.join(p.name for p in present.values())})",
            file=root,
            fix=f"extract {VERSION_DIRS[chosen]} here, or pass version={next(iter(present))!r}",
        )
    return present[chosen], chosen


def _check_split(split: str | None) -> None:
    if split not in (None, "train", "val", "test"):
        raise ValueError(f"S3DIS split must be 'train', 'val' or 'test' (or None), got {split!r}")


def list_scenes(
    root: str | Path,
    split: str | None = None,
    *,
    version: Version | None = None,
    test_area: int = 5,
    **_load_options: Any,
) -> list[str]:
    """Scene ids ``Area_<n>/<room>`` of ``split`` (None = all), from the room folders (options
    of ``load_scene`` are accepted and ignored: protocol.Reader)."""
    _check_split(split)
    vroot, _ = resolve_version_root(root, version)
    ids = []
    for n, area in _areas(vroot).items():
        if (split == "train" and n == test_area) or (split in ("val", "test") and n != test_area):
            continue
        rooms = [d.name for d in area.iterdir() if d.is_dir() and not d.name.startswith(".")]
        ids.extend(f"Area_{n}/{r}" for r in sorted(rooms, key=_natural))
    return ids


def read_alignment_angles(path: str | Path) -> dict[str, float]:
    """``Area_N_alignmentAngle.txt`` -> {room: angle in degrees} (``##`` lines are headers)."""
    try:
        text = Path(path).read_bytes().decode("latin-1")
    except OSError as e:
        raise DatasetError(
            f"cannot read the alignment angles ({e.strerror})",
            file=path,
            fix="the file ships in every Area_N folder of S3DIS; restore it, or pass "
            "version='raw' (frames need no alignment there) or frames=None",
        ) from e
    angles = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) != 2 or line.lstrip().startswith("#"):
            continue
        try:
            angles[tokens[0]] = float(tokens[1])
        except ValueError:
            continue
    return angles


def _rz(theta_deg: float) -> np.ndarray:
    """Rotation about +Z; exact for multiples of 90 degrees."""
    q = theta_deg / 90.0
    if abs(q - round(q)) < 1e-9:
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(round(q)) % 4]
    else:
        c, s = np.cos(np.deg2rad(theta_deg)), np.sin(np.deg2rad(theta_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def aligned_from_raw(
    theta_deg: float, centre: np.ndarray, direction: Literal["documented", "inverse"]
) -> np.ndarray:
    """4x4 ``p_aligned = Rz(-θ)(p_raw - c) + c`` (``"inverse"``: ``Rz(+θ)``)."""
    R = _rz(-theta_deg if direction == "documented" else theta_deg)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(centre, dtype=np.float64) - R @ np.asarray(centre, dtype=np.float64)
    return T


def depth_agreement(
    xyz: np.ndarray,
    frame: Frame,
    *,
    c2w: np.ndarray | None = None,
    rel_tol: float = 0.05,
    abs_tol: float = 0.02,
) -> tuple[int, int]:
    """(points whose camera depth matches the depth image, points in view with valid depth)."""
    depth = frame.load_depth()
    if depth is None:
        return 0, 0
    h, w = depth.shape
    uv, z = project(xyz, frame.depth_intrinsics(w, h), frame.c2w if c2w is None else c2w)
    ui = np.round(uv[:, 0])
    vi = np.round(uv[:, 1])
    inside = (z > 0) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    d = depth[vi[inside].astype(np.int64), ui[inside].astype(np.int64)]
    valid = d > 0
    ok = valid & (np.abs(d - z[inside]) <= abs_tol + rel_tol * d)
    return int(ok.sum()), int(valid.sum())


def _choose_direction(
    xyz: np.ndarray, frames: list[Frame], theta: float, centre: np.ndarray, scene: str
) -> str:
    rng = np.random.default_rng(0)
    pts = xyz if len(xyz) <= 50_000 else xyz[rng.choice(len(xyz), 50_000, replace=False)]
    probe = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, 5).round().astype(int))]
    score = {}
    for direction in ("documented", "inverse"):
        A = aligned_from_raw(theta, centre, direction)
        counts = [depth_agreement(pts, f, c2w=A @ f.c2w) for f in probe]
        score[direction] = (sum(c[0] for c in counts), sum(c[1] for c in counts))
    (ok_doc, n_doc), (ok_inv, _) = score["documented"], score["inverse"]
    if ok_inv > 1.1 * ok_doc + 10:
        warnings.warn(
            f"{scene}: frames agree with the aligned points only with Rz(+θ), θ={theta:g} "
            f"({ok_inv} vs {ok_doc} points pass the depth test); using that direction",
            stacklevel=4,  # the caller of load_scene
        )
        return "inverse"
    if n_doc and ok_doc < 0.3 * n_doc:
        warnings.warn(
            f"{scene}: only {ok_doc}/{n_doc} points agree with the frames' depth; check that "
            "images_root belongs to this S3DIS version",
            stacklevel=4,  # the caller of load_scene
        )
    return "documented"


def _room_dir(vroot: Path, scene_id: str) -> tuple[int, str, Path]:
    m = _SCENE.match(scene_id)
    if not m:
        raise DatasetError(
            "scene id must look like 'Area_5/office_1'",
            scene=scene_id,
            fix="take ids from tttkd.pipeline.datasets.s3dis.list_scenes(root)",
        )
    area, room = int(m.group(1)), m.group(2)
    room_dir = vroot / f"Area_{area}" / room
    if not room_dir.is_dir():
        raise DatasetError(
            "no such room folder",
            file=room_dir,
            scene=scene_id,
            fix="take ids from list_scenes(root), and check the version folder is complete",
        )
    return area, room, room_dir


def room_file(room_dir: Path) -> Path | None:
    """The room's whole-room point file: ``<room>.txt``, else the folder's only ``.txt``."""
    own = room_dir / f"{room_dir.name}.txt"
    if own.exists():
        return own
    others = [f for f in room_dir.glob("*.txt") if not f.name.startswith(".")]
    return others[0] if len(others) == 1 else None


def check_complete(room_dir: Path, scene_id: str, object_lines: int, n_files: int) -> None:
    """Warn when the object files' lines do not add up to the room file's (see module doc)."""
    whole = room_file(room_dir)
    ann = room_dir / "Annotations"
    if whole is None:
        warnings.warn(
            f"{scene_id}: no room file {room_dir / (room_dir.name + '.txt')}, so a missing or "
            f"cut object file in {ann} cannot be noticed; restore it from the S3DIS archive",
            stacklevel=4,  # the caller of load_scene (via _read_points)
        )
        return
    expected = count_lines(whole, scene=scene_id)
    if expected != object_lines:
        what = (
            "fewer: an object file is missing or cut short"
            if object_lines < expected
            else "more: an object file is duplicated or extra"
        )
        warnings.warn(
            f"{scene_id}: the {n_files} object files in {ann} hold {object_lines} lines but the "
            f"room file {whole} holds {expected} ({what}); extract the room again from the "
            "S3DIS archive",
            stacklevel=4,  # the caller of load_scene (via _read_points)
        )


def _annotation_files(room_dir: Path, scene_id: str) -> tuple[Path, list[Path]]:
    """The room's ``Annotations`` folder and its object files, in natural order."""
    ann = room_dir / "Annotations"
    if not ann.is_dir():
        raise DatasetError(
            "room has no Annotations folder (the per-object files the labels come from)",
            file=ann,
            scene=scene_id,
            fix="extract the room again from the S3DIS archive",
        )
    files = sorted(
        (f for f in ann.iterdir() if f.suffix == ".txt" and not f.name.startswith(".")),
        key=lambda f: _natural(f.name),
    )
    return ann, files


def _file_class(f: Path, unknown_class: str, scene_id: str) -> int | None:
    """The train id an object file's name gives its points; None for an unknown class when
    ``unknown_class="ignore"`` (else that is an error)."""
    token = f.name.split("_", 1)[0].removesuffix(".txt")
    tid = class_train_id(token)
    if tid is None and unknown_class != "ignore":
        raise DatasetError(
            f"unknown S3DIS class {token!r} (known: {', '.join(FILE_CLASSES)}, stairs)",
            file=f,
            scene=scene_id,
            fix="remove or rename the file, or pass unknown_class='ignore' to label its points -1",
        )
    return tid


def _read_points(
    room_dir: Path, scene_id: str, unknown_class: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    ann, files = _annotation_files(room_dir, scene_id)
    xyz, rgb, label, sources, unknown, skipped, lines_read = [], [], [], [], [], 0, 0
    for f in files:
        tid = _file_class(f, unknown_class, scene_id)
        if tid is None:
            unknown.append(f.name)
            tid = -1
        cloud = read_xyzrgb(f, scene=scene_id)
        skipped += cloud.skipped
        lines_read += cloud.lines
        if cloud.implausible:
            lines = ", ".join(map(str, cloud.implausible[:10]))
            warnings.warn(
                f"{f}: dropped {len(cloud.implausible)} repaired line(s) whose point lies far "
                f"outside the file's extent (lines {lines})",
                stacklevel=3,
            )
        if cloud.clipped:
            warnings.warn(f"{f}: {cloud.clipped} colour(s) outside 0..255 clipped", stacklevel=3)
        xyz.append(cloud.xyz)
        rgb.append(cloud.rgb)
        label.append(np.full(len(cloud.xyz), tid, dtype=np.int16))
        sources.append(str(f))
    n = sum(len(a) for a in xyz)
    if n == 0:
        raise DatasetError(
            "room has no points (no readable Annotations/<class>_<k>.txt)",
            file=ann,
            scene=scene_id,
            fix="extract the room again from the S3DIS archive",
        )
    check_complete(room_dir, scene_id, lines_read, len(files))
    if unknown:
        warnings.warn(f"{scene_id}: points of {unknown} labelled -1 (unknown class)", stacklevel=3)
    if skipped:
        warnings.warn(f"{scene_id}: skipped {skipped} unreadable line(s)", stacklevel=3)
    return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(label), sources


def load_scene(
    root: str | Path,
    scene_id: str,
    *,
    frames: Literal["auto"] | None = "auto",
    max_views: int | None = None,
    version: Version | None = None,
    images_root: str | Path | None = None,
    align_direction: AlignDirection = "auto",
    test_area: int = 5,
    unknown_class: Literal["error", "ignore"] = "error",
) -> Scene:
    """One S3DIS room as a :class:`Scene`, points and frames in the ``version``'s frame.

    ``frames=None`` reads the points only (no 2D-3D-S file is needed); ``max_views`` keeps that
    many of the room's frames, evenly spaced in file order.
    """
    check_frames(frames, ("auto",), "S3DIS")
    check_max_views(max_views)
    if align_direction not in ("auto", "documented", "inverse"):
        raise ValueError(
            f"align_direction must be auto/documented/inverse, not {align_direction!r}"
        )
    vroot, version = resolve_version_root(root, version)
    area, room, room_dir = _room_dir(vroot, scene_id)
    xyz64, rgb, label, sources = _read_points(room_dir, scene_id, unknown_class)
    frame_list: list[Frame] = []
    if frames is not None:
        if images_root is None and find_area_dirs(root):
            images_root = root
        if images_root is not None:
            frame_list = load_frames(images_root, area, room, scene=scene_id, max_views=max_views)
    if frame_list and version == "aligned":
        A = _aligned_from_raw_of_room(
            vroot, area, room, xyz64, frame_list, direction=align_direction, scene=scene_id
        )
        frame_list = [dataclasses.replace(f, c2w=A @ f.c2w) for f in frame_list]
    return Scene(
        id=scene_id,
        dataset="s3dis",
        split="val" if area == test_area else "train",
        xyz=xyz64.astype(np.float32),
        rgb=rgb,
        label=label,
        frames=frame_list,
        label_set=LABEL_SET,
        source_files=tuple(sources),
    )


def _aligned_from_raw_of_room(
    vroot: Path,
    area: int,
    room: str,
    xyz64: np.ndarray,
    frames: list[Frame],
    *,
    direction: AlignDirection,
    scene: str,
) -> np.ndarray:
    """The 4x4 that takes the room's raw-frame poses (2D-3D-S) into the Aligned version: the
    room's alignment angle about its bounding-box centre, in the direction the depth agrees
    with when ``direction`` is "auto" and the angle is not a multiple of 180°."""
    name = f"Area_{area}/Area_{area}_alignmentAngle.txt"
    angles_file = vroot / name
    sibling = vroot.parent / VERSION_DIRS["raw"] / name  # the same file ships with v1.2
    if not angles_file.is_file() and sibling.is_file():
        angles_file = sibling
    angles = read_alignment_angles(angles_file)
    if room not in angles:
        raise DatasetError(
            f"room {room} is not listed in the alignment angles",
            file=angles_file,
            scene=scene,
            fix="restore the file from S3DIS, or pass version='raw' or frames=None",
        )
    theta = angles[room]
    centre = (xyz64.min(axis=0) + xyz64.max(axis=0)) / 2.0
    if direction == "auto":
        flips = not np.isclose(np.mod(theta, 180.0), 0.0)
        direction = (
            _choose_direction(xyz64, frames, theta, centre, scene) if flips else "documented"
        )
    return aligned_from_raw(theta, centre, direction)


def semantic_label_train_ids(labels: list[str]) -> np.ndarray:
    """int16 lookup for 2D-3D-S ``assets/semantic_labels.json``: entry index -> train id.

    Entries are ``class_instance_roomType_roomNum_area``; ``<UNK>`` (entry 0) -> -1.
    """
    out = np.full(len(labels), -1, dtype=np.int16)
    for i, entry in enumerate(labels):
        tid = class_train_id(entry.split("_", 1)[0])
        if tid is not None:
            out[i] = tid
    return out


def decode_semantic_png(rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Train ids (H, W) of a 2D-3D-S semantic PNG (index = R*65536 + G*256 + B; 0x0D0D0D and
    indices beyond the table = -1)."""
    idx = rgb[..., 0].astype(np.int64) * 65536 + rgb[..., 1].astype(np.int64) * 256 + rgb[..., 2]
    out = np.full(idx.shape, -1, dtype=np.int16)
    ok = (idx < len(lut)) & (idx != 0x0D0D0D)
    out[ok] = lut[idx[ok]]
    return out
