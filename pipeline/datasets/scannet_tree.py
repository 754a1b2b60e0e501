"""Where a ScanNet scan is, and which split lists it.

Scans are in ``scans/<scene>/`` (train + val) and ``scans_test/<scene>/`` (test), or directly
in ``root`` when it holds ``scene*`` folders. Splits come from ``scannetv2_{train,val,test}.txt``
in ``splits_dir``, the root, ``<root>/Tasks/Benchmark`` or ``<root>/tasks/Benchmark`` (the
ScanNet repository's folder).
"""

from __future__ import annotations

import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

from tttkd.core import DatasetError, require_regular_file

SPLITS = ("train", "val", "test")
SCENE_RE = re.compile(r"^scene\d{4}_\d{2}$")


def scan_dirs(root: Path) -> list[Path]:
    """The folders that hold scan folders: ``scans``/``scans_test``, else ``root`` itself."""
    dirs = [root / d for d in ("scans", "scans_test") if (root / d).is_dir()]
    if not dirs and any(SCENE_RE.match(p.name) for p in listdir(root)):
        dirs = [root]
    return dirs


def listdir(d: Path) -> list[Path]:
    """The entries of ``d``; none when it cannot be listed."""
    try:
        return list(d.iterdir())
    except OSError:
        return []


def need_file(path: Path, scene_id: str, fix: str) -> Path:
    """``path`` if it is a file, else a "file is missing" error saying how to get it."""
    if not path.is_file():
        raise DatasetError("file is missing", file=path, scene=scene_id, fix=fix)
    return path


class SplitFileMissing(DatasetError):
    """No ``scannetv2_<split>.txt`` anywhere (a scene's split is then unknown, not an error)."""


def split_file(root: str | Path, split: str, splits_dir: str | Path | None = None) -> Path:
    """The ``scannetv2_<split>.txt`` to use; a clear error naming every place looked."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; ScanNet has {', '.join(SPLITS)}")
    root = Path(root)
    places = (
        [Path(splits_dir)]
        if splits_dir
        else [root, root / "Tasks" / "Benchmark", root / "tasks" / "Benchmark", root / "tasks"]
    )
    for d in places:
        if (d / f"scannetv2_{split}.txt").is_file():
            return d / f"scannetv2_{split}.txt"
        if (d / f"scannetv2_{split}.txt").exists():  # a folder or FIFO: damaged, not absent
            require_regular_file(d / f"scannetv2_{split}.txt")
    raise SplitFileMissing(
        f"split file scannetv2_{split}.txt not found; looked in: "
        + ", ".join(str(d) for d in places),
        file=places[0] / f"scannetv2_{split}.txt",
        fix="copy Tasks/Benchmark/scannetv2_{train,val,test}.txt from the ScanNet repository "
        "into the dataset root, or pass splits_dir=",
    )


@lru_cache(maxsize=32)
def _read_lines(path: str, mtime_ns: int) -> tuple[str, ...]:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return tuple(s for ln in text.splitlines() if (s := ln.strip()))


def read_split(path: Path) -> list[str]:
    """The scene ids of a split list (cached per file and mtime: every scene asks for it)."""
    return list(_read_lines(str(path), os.stat(path).st_mtime_ns))


def scene_split(
    root: Path, scene_id: str, splits_dir: str | Path | None, test_dir: bool
) -> str | None:
    """The split whose list names ``scene_id`` (``"test"`` for a ``scans_test`` scan), else
    None, with a warning when some list is missing (its scenes would be lost quietly)."""
    missing = []
    for split in SPLITS:
        try:
            if scene_id in read_split(split_file(root, split, splits_dir)):
                return split
        except SplitFileMissing as e:
            missing.append(e)
    if test_dir:
        return "test"
    if missing and len(missing) < len(SPLITS):  # a deleted list must not silently drop a split
        warnings.warn(
            f"{scene_id}: in none of the split lists found; "
            + "; ".join(str(e).splitlines()[0] for e in missing)
            + ": its split is unknown (copy the missing list(s) or pass splits_dir=)",
            stacklevel=3,  # the caller of load_scene
        )
    return None


def find_scan_dir(root: str | Path, scene_id: str) -> Path:
    """The scan folder of ``scene_id``; an unknown id is an error naming every place looked."""
    root = Path(root)
    dirs = scan_dirs(root) or [root / "scans", root / "scans_test"]
    for d in dirs:
        if (d / scene_id).is_dir():
            return d / scene_id
    hint = "" if SCENE_RE.match(scene_id) else " (ScanNet ids look like scene0000_00)"
    raise DatasetError(
        f"unknown scene id{hint}; looked in: " + ", ".join(str(d) for d in dirs),
        file=dirs[0] / scene_id,
        scene=scene_id,
        fix="list the available ids with list_scenes(root) or download the scene",
    )
