"""One S3DIS room's points, from its ``Annotations/<class>_<k>.txt`` object files.

Corrupted bytes are handled in :mod:`.s3dis_text`; what it drops or clips is warned about here.

**Completeness.** The room file ``<room>/<room>.txt`` (or the room folder's only other ``.txt``,
e.g. the misnamed ``copy_Room_1.txt``) holds every point of the room, so its line count must
equal the sum over the object files (lines are counted, not parsed). A deleted object file, or
one cut short (at a line end or inside a line), makes the sum smaller; that is a warning naming
both, not an error, because the real data has a legitimate mismatch (``Area_5/office_36``
ships a duplicate ``wall_3 (1).txt``). A room without a room file is read with a warning that
the check could not be made.

The warnings name the line that called ``s3dis.load_scene`` (their ``stacklevel`` counts the
calls in between: load_scene -> read_points -> check_complete).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tttkd.core import DatasetError
from tttkd.pipeline.datasets.s3dis_classes import file_class
from tttkd.pipeline.datasets.s3dis_layout import natural_key
from tttkd.pipeline.datasets.s3dis_text import TextCloud, count_lines, read_xyzrgb


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
            stacklevel=4,  # the caller of load_scene (via read_points)
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
            stacklevel=4,  # the caller of load_scene (via read_points)
        )


def annotation_files(room_dir: Path, scene_id: str) -> tuple[Path, list[Path]]:
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
        key=lambda f: natural_key(f.name),
    )
    return ann, files


def _warn_repairs(f: Path, cloud: TextCloud) -> None:
    """Say what reading ``f`` dropped or clipped (stacklevel: the caller of load_scene)."""
    if cloud.implausible:
        lines = ", ".join(map(str, cloud.implausible[:10]))
        warnings.warn(
            f"{f}: dropped {len(cloud.implausible)} repaired line(s) whose point lies far "
            f"outside the file's extent (lines {lines})",
            stacklevel=4,
        )
    if cloud.clipped:
        warnings.warn(f"{f}: {cloud.clipped} colour(s) outside 0..255 clipped", stacklevel=4)


def read_points(
    room_dir: Path, scene_id: str, unknown_class: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """xyz (float64), rgb, train ids and the object files read, of the whole room; warns
    about what was lost or repaired, and checks the room is complete."""
    ann, files = annotation_files(room_dir, scene_id)
    xyz, rgb, label, sources, unknown, skipped, lines_read = [], [], [], [], [], 0, 0
    for f in files:
        tid = file_class(f, unknown_class, scene_id)
        if tid is None:
            unknown.append(f.name)
            tid = -1
        cloud = read_xyzrgb(f, scene=scene_id)
        skipped += cloud.skipped
        lines_read += cloud.lines
        _warn_repairs(f, cloud)
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
