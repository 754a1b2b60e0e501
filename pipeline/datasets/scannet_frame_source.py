"""Which of a scan's frame sources to read (25k subset, reader.py export or ``.sens``).

The 25k subset is looked for in ``<frames_root or root/scannet_frames_25k>/<scene>/``; a
``reader.py`` export in ``<frames_root>/<scene>/`` or, by default, in the scan folder itself;
the ``.sens`` in the scan folder. Reading them is :mod:`.scannet_frames`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tttkd.core import DatasetError, Frame
from tttkd.pipeline.datasets.scannet_frames import frames_from_sens, frames_from_tree

FrameSource = Literal["auto", "25k", "exported", "sens"]
FRAME_SOURCES = ("auto", "25k", "exported", "sens")
SENS_STRIDE = 100  # default: every 100th .sens frame, like the 25k subset


def load_frames(
    root: Path,
    scan_dir: Path,
    scene_id: str,
    *,
    frames: FrameSource | None,
    frames_root: str | Path | None,
    stride: int | None,
    meta: dict[str, str],
    color_calib_size: tuple[int, int] | None,
) -> list[Frame]:
    """The frames of ``frames`` (``"auto"``: the first source found, else none; None: none);
    a source asked for by name that is absent is an error naming where it was looked for."""
    base = Path(frames_root) if frames_root else None
    k25 = (base or root / "scannet_frames_25k") / scene_id
    exported = base / scene_id if base else scan_dir
    sens = scan_dir / f"{scene_id}.sens"
    found = {
        "25k": (k25 / "pose").is_dir(),
        "exported": (exported / "pose").is_dir() and (exported / "intrinsic").is_dir(),
        "sens": sens.is_file(),
    }
    if frames == "auto":
        frames = next((k for k, ok in found.items() if ok), None)  # type: ignore[assignment]
    if frames is None:
        return []
    if not found[frames]:
        where = {"25k": k25, "exported": exported, "sens": sens}[frames]
        raise DatasetError(
            f"no {frames} frames for this scene (looked in {where})",
            file=where,
            scene=scene_id,
            fix="pass frames_root= pointing at the folder that holds <scene>/, choose another "
            "frames= source, or frames=None",
        )
    if frames == "sens":
        return frames_from_sens(
            sens, scene_id, stride=stride or SENS_STRIDE, color_calib_size=color_calib_size
        )
    folder = k25 if frames == "25k" else exported
    default = None if frames == "25k" else SENS_STRIDE
    return frames_from_tree(
        folder,
        scene_id,
        layout=frames,
        meta=meta,
        stride=stride or default,
        color_calib_size=color_calib_size,
    )
