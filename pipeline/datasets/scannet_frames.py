"""ScanNet posed RGB-D frames from the three places users have them (FORMATS.md section 1.6).

* ``25k``: the ``scannet_frames_25k/<scene>/`` subset: ``color/%06d.jpg``, ``depth/%06d.png``,
  ``pose/%06d.txt`` and, at the scene root, ``intrinsics_color.txt`` / ``intrinsics_depth.txt``.
* ``exported``: the tree written by ScanNet's Python ``reader.py``: ``color/<i>.jpg``,
  ``depth/<i>.png``, ``pose/<i>.txt``, ``intrinsic/intrinsic_{color,depth}.txt``.
* ``sens``: the ``.sens`` stream itself, by byte offset (:mod:`.scannet_sens`).

Frames are named ``%06d`` after their index in the ``.sens`` whatever the source, so the
same view has the same name everywhere. Frames whose pose is ``-inf`` (ScanNet's mark of a lost
track) are skipped; any other non-finite pose (NaN, a partly finite matrix) is damage: those
frames are skipped with a warning naming the files (the ``.sens`` and the frames).
The colour resolution is never assumed: K is rescaled from its calibration size to the size
of the colour image actually stored (read from the first image's header, no pixel decode).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tttkd.core import Codec, DatasetError, Frame, ImageRef, require_regular_file, scale_intrinsics
from tttkd.pipeline.datasets.scannet_sens import SensIndex, read_sens_index

DEPTH_SCALE = 1000.0  # uint16 depth PNGs store millimetres
REAL_COLOR_SIZE = (1296, 968)  # calibration size of ScanNet's colour camera
REAL_DEPTH_SIZE = (640, 480)
_ASPECT_TOLERANCE = 0.03  # 1296x968 vs 640x480 differ by 0.4 %


def read_matrix(path: Path, scene: str, rows: int = 4) -> np.ndarray:
    """A whitespace-separated 4x4 (or 3x3) text matrix; -inf/nan values are kept as such."""
    require_regular_file(path, scene)  # a FIFO would block forever
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as e:
        raise DatasetError(
            f"cannot read matrix file ({e.strerror})",
            file=path,
            scene=scene,
            fix="the frame folder is incomplete; extract or export it again",
        ) from e
    try:
        vals = [float(v) for v in text.split()]
    except ValueError as e:
        raise DatasetError(
            f"not a matrix of numbers ({e})", file=path, scene=scene, fix="restore the file"
        ) from e
    if len(vals) != rows * rows:
        raise DatasetError(
            f"expected {rows * rows} numbers ({rows}x{rows} matrix), found {len(vals)}",
            file=path,
            scene=scene,
            fix="the file is truncated or not a matrix; restore it from the dataset",
        )
    return np.asarray(vals, dtype=np.float64).reshape(rows, rows)


def image_size(data: bytes | Path, file: Path | str, scene: str) -> tuple[int, int]:
    """(width, height) from an image header, without decoding the pixels."""
    from PIL import Image

    if not isinstance(data, bytes):
        require_regular_file(data, scene)  # never open a FIFO
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else data
        with Image.open(src) as im:
            return int(im.width), int(im.height)
    except Exception as e:  # Pillow raises several unrelated types for bad files
        raise DatasetError(
            f"not a readable image ({e})",
            file=file,
            scene=scene,
            fix="the image is corrupt or missing; restore it from the dataset",
        ) from e


def calibration_size(
    K: np.ndarray,
    stored: tuple[int, int],
    declared: tuple[int, int] | None,
    real: tuple[int, int],
    *,
    file: Path | str,
    scene: str,
) -> tuple[int, int]:
    """The resolution ``K`` was calibrated at: the first of ``declared`` (the scene's ``.txt``),
    the stored image's size and ScanNet's real sensor size whose centre is within 10 % of the
    principal point (648 -> 1296x968). The 25k subset ships no calibration size of its own.
    """
    for cand in (declared, stored, real):
        if cand is None:
            continue
        w, h = cand
        if abs(2 * K[0, 2] + 1 - w) <= 0.1 * w and abs(2 * K[1, 2] + 1 - h) <= 0.1 * h:
            return w, h
    raise DatasetError(
        f"cannot tell which image size the intrinsics (cx={K[0, 2]:.2f}, cy={K[1, 2]:.2f}) "
        f"belong to: not the stored {stored[0]}x{stored[1]}, not {real[0]}x{real[1]}"
        + (f", not the declared {declared[0]}x{declared[1]}" if declared else ""),
        file=file,
        scene=scene,
        fix="put the scene's <scene>.txt (colorWidth/colorHeight) in its scan folder, or pass "
        "color_calib_size=(W, H) to load_scene",
    )


def rescaled_K(
    K_calib: np.ndarray,
    calib: tuple[int, int],
    stored: tuple[int, int],
    *,
    file: Path | str,
    scene: str,
    what: str,
) -> np.ndarray:
    """K at the stored size; an image whose aspect contradicts the calibration is an error."""
    (cw, ch), (w, h) = calib, stored
    if abs((w / cw) / (h / ch) - 1.0) > _ASPECT_TOLERANCE:
        raise DatasetError(
            f"{what} image is {w}x{h} but its intrinsics are for {cw}x{ch} (aspect ratios "
            "differ, so the intrinsics cannot belong to this image)",
            file=file,
            scene=scene,
            fix="use the images and intrinsics of the same export, or pass "
            "color_calib_size=(W, H) to load_scene if the .txt is missing or wrong",
        )
    return scale_intrinsics(K_calib[:3, :3], cw, ch, w, h)


def warn_damaged_poses(where: str, damaged: list[str], *, stacklevel: int) -> None:
    """Warn, naming them, about frames dropped for a NaN or partly finite pose: damage, unlike
    ScanNet's all -inf pose of a lost track. ``stacklevel`` counts from the caller of this."""
    if damaged:
        warnings.warn(
            f"{len(damaged)} frame(s) dropped: their {where} holds NaN or a partly finite "
            f"matrix: {', '.join(damaged[:10])}{' ...' if len(damaged) > 10 else ''}",
            stacklevel=stacklevel + 1,
        )


def _frame_index(stem: str) -> int | None:
    return int(stem) if stem.isdigit() else None


@dataclass(frozen=True)
class _Tree:
    """Where the files of one frame folder are, for its layout (25k subset or export)."""

    layout: str
    name_of: Callable[[int], str]  # .sens frame index -> file stem
    k_color: Path
    k_depth: Path
    pose_dir: Path
    color_dir: Path
    depth_dir: Path

    @classmethod
    def of(cls, folder: Path, layout: str) -> _Tree:
        if layout == "25k":
            name_of: Callable[[int], str] = "{:06d}".format
            k_color, k_depth = folder / "intrinsics_color.txt", folder / "intrinsics_depth.txt"
        else:
            name_of = str
            k_color = folder / "intrinsic" / "intrinsic_color.txt"
            k_depth = folder / "intrinsic" / "intrinsic_depth.txt"
        return cls(
            layout, name_of, k_color, k_depth, folder / "pose", folder / "color", folder / "depth"
        )

    def check_complete(self, scene: str) -> None:
        for need in (self.pose_dir, self.color_dir, self.k_color):
            if not need.exists():
                raise DatasetError(
                    f"{self.layout} frame folder is incomplete: {need.name} is missing",
                    file=need,
                    scene=scene,
                    fix=f"extract the complete {self.layout} frames for this scene, or pass "
                    "frames=... to pick another source",
                )


def _posed_frames(t: _Tree, scene: str, stride: int | None) -> list[tuple[int, np.ndarray]]:
    """(index, c2w) of every ``stride``-th frame with a finite pose; a colour image without a
    pose, or a pose without a colour image, is a damaged folder and an error."""
    indices = sorted(i for p in t.pose_dir.glob("*.txt") if (i := _frame_index(p.stem)) is not None)
    _no_orphan_images(t.color_dir, t.pose_dir, set(map(t.name_of, indices)), scene)
    if stride:
        indices = [i for i in indices if i % stride == 0]
    colors = {p.name for p in t.color_dir.iterdir()}
    posed: list[tuple[int, np.ndarray]] = []
    damaged = []
    for i in indices:
        path = t.pose_dir / f"{t.name_of(i)}.txt"
        c2w = read_matrix(path, scene)
        if np.all(np.isfinite(c2w)):
            posed.append((i, c2w))
        elif not np.all(np.isneginf(c2w)):  # -inf everywhere: a lost track, ScanNet's data
            damaged.append(str(path))
    # the caller of load_scene (via load_frames, frames_from_tree, _posed_frames)
    warn_damaged_poses("pose file", damaged, stacklevel=5)
    for i, _ in posed:
        if f"{t.name_of(i)}.jpg" not in colors:
            raise DatasetError(
                f"frame {i} has a pose but no colour image",
                file=t.color_dir / f"{t.name_of(i)}.jpg",
                scene=scene,
                fix="the frame folder is incomplete; extract or export it again",
            )
    return posed


def _tree_depth_K(
    t: _Tree, first_d: Path, meta: Mapping[str, str], scene: str
) -> tuple[np.ndarray | None, tuple[int, int]]:
    """Depth intrinsics at the stored depth size (None without an intrinsics file) and that
    size, from the first depth image present."""
    dsize = image_size(first_d, first_d, scene)
    if not t.k_depth.exists():
        return None, dsize
    Kd = read_matrix(t.k_depth, scene)
    dcalib = calibration_size(
        Kd, dsize, _meta_size(meta, "depth"), REAL_DEPTH_SIZE, file=t.k_depth, scene=scene
    )
    return rescaled_K(Kd, dcalib, dsize, file=first_d, scene=scene, what="depth"), dsize


def frames_from_tree(
    folder: Path,
    scene: str,
    *,
    layout: str,
    meta: Mapping[str, str],
    stride: int | None,
    color_calib_size: tuple[int, int] | None,
) -> list[Frame]:
    """Frames of a 25k-subset folder (``layout="25k"``) or a reader.py export (``"exported"``)."""
    t = _Tree.of(folder, layout)
    t.check_complete(scene)
    posed = _posed_frames(t, scene, stride)
    if not posed:
        return []
    first = t.color_dir / f"{t.name_of(posed[0][0])}.jpg"
    size = image_size(first, first, scene)
    K_raw = read_matrix(t.k_color, scene)
    calib = color_calib_size or calibration_size(
        K_raw, size, _meta_size(meta, "color"), REAL_COLOR_SIZE, file=t.k_color, scene=scene
    )
    K = rescaled_K(K_raw, calib, size, file=first, scene=scene, what="colour")
    depths = {p.name for p in t.depth_dir.iterdir()} if t.depth_dir.is_dir() else set()
    have_depth = [f"{t.name_of(i)}.png" in depths for i, _ in posed]
    depth_K, dsize = None, None
    if any(have_depth):
        first_d = t.depth_dir / f"{t.name_of(posed[have_depth.index(True)][0])}.png"
        depth_K, dsize = _tree_depth_K(t, first_d, meta, scene)
    frames = []
    for i, c2w in posed:
        dshape = None if depth_K is None else (dsize[1], dsize[0])  # what depth_K is for
        # a frame whose depth PNG is missing while others have one fails to load, naming it
        depth_path = str(t.depth_dir / f"{t.name_of(i)}.png")
        depth = ImageRef(depth_path, shape=dshape) if any(have_depth) else None
        frames.append(
            Frame(
                name=f"{i:06d}",
                K=K.copy(),
                c2w=c2w,
                width=size[0],
                height=size[1],
                color=ImageRef(str(t.color_dir / f"{t.name_of(i)}.jpg")),
                depth=depth,
                depth_scale=DEPTH_SCALE,
                depth_K=None if depth_K is None else depth_K.copy(),
            )
        )
    return frames


def _no_orphan_images(color_dir: Path, pose_dir: Path, posed: set[str], scene: str) -> None:
    """A colour image without its pose file is a damaged folder, not a frame to skip quietly."""
    orphans = sorted(p.stem for p in color_dir.glob("*.jpg") if p.stem not in posed)
    if orphans:
        raise DatasetError(
            f"{len(orphans)} colour images have no pose file, e.g. {orphans[0]}.jpg",
            file=pose_dir / f"{orphans[0]}.txt",
            scene=scene,
            fix="restore the frame folder's pose/*.txt (extract the frames again)",
        )


def frames_from_sens(
    path: Path,
    scene: str,
    *,
    stride: int,
    color_calib_size: tuple[int, int] | None,
) -> list[Frame]:
    """Every ``stride``-th frame of a ``.sens`` as byte ranges (no export to disk)."""
    idx = read_sens_index(path, scene=scene)
    depth_codec = _sens_depth_codec(idx, path, scene)
    keep, damaged = [], []
    for i in range(0, idx.num_frames, max(1, stride)):
        c2w = idx.camera_to_world[i]
        if np.all(np.isfinite(c2w)):
            keep.append(i)
        elif not np.all(np.isneginf(c2w)):  # -inf everywhere: a lost track, ScanNet's data
            damaged.append(f"{i:06d}")
    # the caller of load_scene (via load_frames, frames_from_sens)
    warn_damaged_poses(f"pose in {path}", [f"frame {n}" for n in damaged], stacklevel=4)
    if not keep:
        return []
    size = _stored_color_size(path, idx, keep[0], scene)
    calib = color_calib_size or (idx.color_width, idx.color_height)
    K = rescaled_K(idx.intrinsic_color, calib, size, file=path, scene=scene, what="colour")
    depth_K = np.array(idx.intrinsic_depth[:3, :3], dtype=np.float64)
    return [
        Frame(
            name=f"{i:06d}",
            K=K.copy(),
            c2w=idx.camera_to_world[i].copy(),
            width=size[0],
            height=size[1],
            color=ImageRef(str(path), int(idx.color_offset[i]), int(idx.color_length[i]), "image"),
            depth=ImageRef(
                str(path),
                int(idx.depth_offset[i]),
                int(idx.depth_length[i]),
                depth_codec,
                (idx.depth_height, idx.depth_width),
            ),
            depth_scale=idx.depth_shift if idx.depth_shift > 0 else DEPTH_SCALE,
            depth_K=depth_K.copy(),
        )
        for i in keep
    ]


def _sens_depth_codec(idx: SensIndex, path: Path, scene: str) -> Codec:
    """The ImageRef codec of the stream's depth; a colour or depth compression we cannot
    decode is an error that points at reader.py's export."""
    if idx.color_compression not in ("jpeg", "png"):
        raise DatasetError(
            f"colour compression {idx.color_compression!r} is not supported (jpeg or png)",
            file=path,
            scene=scene,
            fix="export the frames with ScanNet's reader.py and use frames='exported'",
        )
    codecs: dict[str, Codec] = {"zlib_ushort": "zlib_u16", "raw_ushort": "raw_u16"}
    depth_codec = codecs.get(idx.depth_compression)
    if depth_codec is None:
        raise DatasetError(
            f"depth compression {idx.depth_compression!r} is not supported",
            file=path,
            scene=scene,
            fix="export the frames with ScanNet's reader.py and use frames='exported'",
        )
    return depth_codec


def _stored_color_size(path: Path, idx: SensIndex, i: int, scene: str) -> tuple[int, int]:
    """(width, height) of frame ``i``'s colour image as stored (its header, not the .sens's)."""
    with open(path, "rb") as f:
        f.seek(int(idx.color_offset[i]))
        head = f.read(int(idx.color_length[i]))
    return image_size(head, path, scene)


def _meta_size(meta: Mapping[str, str], kind: str) -> tuple[int, int] | None:
    try:
        w, h = int(float(meta[f"{kind}Width"])), int(float(meta[f"{kind}Height"]))
    except (KeyError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 and math.isfinite(w) else None
