"""Where S3DIS rooms are: the version folder, its ``Area_N`` folders, room ids and splits.

``root`` is either a version folder holding ``Area_1 ... Area_6``, or a folder above
``Stanford3dDataset_v1.2_Aligned_Version`` and/or ``Stanford3dDataset_v1.2``. ``version=None``
picks: the folder's own name when root is a version folder (a renamed one is recognised by its
number format: Aligned prints ``%.3f`` and integer colours, v1.2 six ``%.6f``), else
``"aligned"`` if present, else ``"raw"``. An explicit ``version`` that contradicts the folder
is an error. Room ids are listed from the room *folders* (so ``Area_6/copyRoom_1`` is found
although its room file is misnamed ``copy_Room_1.txt``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from tttkd.core import DatasetError
from tttkd.pipeline.datasets.s3dis_text import sniff_version

Version = Literal["aligned", "raw"]
VERSION_DIRS: dict[str, str] = {
    "aligned": "Stanford3dDataset_v1.2_Aligned_Version",
    "raw": "Stanford3dDataset_v1.2",
}
_AREA = re.compile(r"^Area_(\d+)$")
_SCENE = re.compile(r"^Area_(\d+)/([^/\\]+)$")


def natural_key(name: str) -> list[object]:
    """Sort key that puts ``office_2`` before ``office_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def area_dirs(vroot: Path) -> dict[int, Path]:
    """``{n: Area_n folder}`` of a version folder, by area number."""
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
    for area in area_dirs(vroot).values():
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
    if area_dirs(root):
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


def check_split(split: str | None) -> None:
    """A clear error for a split name S3DIS does not have (before any folder is listed)."""
    if split not in (None, "train", "val", "test"):
        raise ValueError(f"S3DIS split must be 'train', 'val' or 'test' (or None), got {split!r}")


def room_ids(vroot: Path, split: str | None, test_area: int) -> list[str]:
    """``Area_<n>/<room>`` of every room folder in ``split``: ``train`` = every area but
    ``test_area``, ``val``/``test`` = that area, None = all."""
    ids = []
    for n, area in area_dirs(vroot).items():
        if (split == "train" and n == test_area) or (split in ("val", "test") and n != test_area):
            continue
        rooms = [d.name for d in area.iterdir() if d.is_dir() and not d.name.startswith(".")]
        ids.extend(f"Area_{n}/{r}" for r in sorted(rooms, key=natural_key))
    return ids


def room_dir(vroot: Path, scene_id: str) -> tuple[int, str, Path]:
    """(area number, room name, room folder) of ``Area_<n>/<room>``; a clear error if absent."""
    m = _SCENE.match(scene_id)
    if not m:
        raise DatasetError(
            "scene id must look like 'Area_5/office_1'",
            scene=scene_id,
            fix="take ids from tttkd.pipeline.datasets.s3dis.list_scenes(root)",
        )
    area, room = int(m.group(1)), m.group(2)
    folder = vroot / f"Area_{area}" / room
    if not folder.is_dir():
        raise DatasetError(
            "no such room folder",
            file=folder,
            scene=scene_id,
            fix="take ids from list_scenes(root), and check the version folder is complete",
        )
    return area, room, folder
