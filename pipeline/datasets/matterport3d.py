"""Matterport3D reader: region meshes with per-face labels, and the undistorted RGB-D frames.

``root`` is the ``v1/scans`` folder that ``download_mp.py`` fills, one folder per house
(``<root>/<house>/region_segmentations/region<k>.ply``, ``.../undistorted_camera_parameters/
<house>.conf``, ``.../undistorted_color_images/``, ``.../undistorted_depth_images/``). Passing
the folder above ``v1`` works too. The house zips hold a ``<house>/<type>/`` prefix, so
unzipping them *inside* the house folder gives ``<root>/<house>/<house>/<type>/``; that doubled
layout is read as well, type by type.

Scene ids are ``<house>/region<k>``. Points are the region mesh's vertices (metres, +Z up, the
house frame). Labels: face ``category_id`` -> ``category_mapping.tsv`` (``index`` ->
``nyu40id``; empty = 0) -> the 21 classes (``matterport21``), -1 = unlabelled; a vertex takes
the majority label of the faces touching it, "unlabelled" being a candidate that wins ties.
``category_mapping.tsv`` and the split lists ``scenes_{train,val,test}.txt`` do not come with
the scans download but with github.com/niessner/Matterport (``metadata/`` and
``tasks/benchmark/``): they are looked up in ``<root>/metadata/`` and ``<root>/`` (mapping) and
``<root>/tasks/benchmark/`` and ``<root>/`` (splits), and, when ``root`` is ``.../v1/scans``,
in the same places under the folder above ``v1``; or pass ``category_mapping=`` /
``splits_dir=``.

Frames: the ``.conf`` camera-to-world matrices are in OpenGL axes and are converted to OpenCV
axes (columns 1 and 2 of the rotation negated). A frame belongs to a region when its camera
centre lies strictly inside the region mesh's bounding box; a region with no such camera gets
the ``nearest_views`` cameras closest to its box centre (OpenScene's rule, default 100).
Image sizes are read from the files, depth is uint16 / 4000 m with 0 = no depth.

Image origin: Matterport's docs say the images have a bottom-left origin, which would make
the principal point row ``H - 1 - cy``. OpenScene and Pointcept use ``cy`` as given with the
usual top-left formula, and their fused features line up; we do the same by default
(``flip_cy=False``). ``flip_cy=True`` applies the documented convention instead; the
difference is a few pixels. Check on your data with a depth test before changing it.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tttkd.core import DatasetError, Frame, Scene, as_path, get_label_set, require_regular_file
from tttkd.pipeline.datasets.matterport_formats import (
    CameraConf,
    read_category_mapping,
    read_conf,
    read_region_ply,
    read_split_file,
    vertex_majority,
)
from tttkd.pipeline.datasets.matterport_frames import pair_views, region_frames
from tttkd.pipeline.datasets.protocol import check_frames, check_max_views

DATASET = "matterport3d"
LABEL_SET = "matterport21"
SPLITS = ("train", "val", "test")
_SCENE_RE = re.compile(r"^([^/\\]+)/region(\d+)$")
_REGION_RE = re.compile(r"^region(\d+)\.ply$")
__all__ = ["face_train_ids", "list_scenes", "load_scene", "pair_views"]
_ROOT_FIX = "pass the v1/scans folder of your Matterport3D download (it holds one folder per house)"


def list_scenes(
    root: str | Path,
    split: str | None = None,
    *,
    splits_dir: str | Path | None = None,
    **_load_options: Any,
) -> list[str]:
    """``<house>/region<k>`` for every region on disk, or for the houses of ``split``
    (options of ``load_scene`` are accepted and ignored: protocol.Reader)."""
    scans = _scans_root(root)
    houses = _houses(scans)
    if not houses:
        raise DatasetError(
            "no Matterport houses found (no <house>/region_segmentations/ folders)",
            file=scans,
            fix=f"{_ROOT_FIX}, with region_segmentations.zip extracted into it",
        )
    if split is not None:
        wanted = _split_houses(scans, split, splits_dir)
        missing = [h for h in wanted if h not in houses]
        present = [h for h in wanted if h in houses]
        if not present:
            raise DatasetError(
                f"none of the {len(wanted)} houses of split {split!r} is on disk",
                file=scans,
                fix="download the houses of this split, or check that the split list matches",
            )
        if missing:
            warnings.warn(
                f"Matterport3D split {split}: {len(missing)} of {len(wanted)} houses are not "
                f"on disk (first: {missing[0]}); listing the {len(present)} present",
                stacklevel=2,
            )
        houses = present
    return [f"{h}/region{k}" for h in houses for k in _regions(scans, h)]


def load_scene(
    root: str | Path,
    scene_id: str,
    *,
    frames: Literal["auto"] | None = "auto",
    max_views: int | None = None,
    nearest_views: int = 100,
    category_mapping: str | Path | None = None,
    splits_dir: str | Path | None = None,
    flip_cy: bool = False,
) -> Scene:
    """One region as a :class:`Scene` (points, 21-class labels, paired frames; lazy images).

    ``max_views`` keeps that many of the paired frames, evenly spaced in file order;
    ``frames=None`` reads the points only (no camera files needed).
    """
    check_frames(frames, ("auto",), "Matterport3D")
    check_max_views(max_views)
    scans = _scans_root(root)
    house, region = _house_region(scene_id)
    ply = _region_ply(scans, house, region, scene_id)
    mapping_path = _find_mapping(scans, category_mapping, scene_id)
    mesh = read_region_ply(ply, scene=scene_id)
    label_set = get_label_set(LABEL_SET)
    face_label = face_train_ids(mesh.category, mapping_path, mesh_file=ply, scene=scene_id)
    label = vertex_majority(mesh.faces, face_label, len(mesh.xyz), label_set.num_classes)
    sources = [str(ply), str(mapping_path)]
    frame_list: list[Frame] = []
    if frames is not None:
        conf = _house_conf(scans, house, scene_id)
        sources.append(str(conf.path))
        frame_list = region_frames(
            conf,
            _type_dir(scans, house, conf.color_directory),
            _type_dir(scans, house, conf.depth_directory),
            mesh.xyz,
            scene=scene_id,
            house_dir=scans / house,
            max_views=max_views,
            nearest_views=nearest_views,
            flip_cy=flip_cy,
        )
    return Scene(
        id=scene_id,
        dataset=DATASET,
        split=_split_of(scans, house, splits_dir),
        xyz=mesh.xyz,
        rgb=mesh.rgb,
        label=label,
        frames=frame_list,
        label_set=LABEL_SET,
        source_files=tuple(sources),
    )


# --------------------------------------------------------------------------- layout


def _house_region(scene_id: str) -> tuple[str, int]:
    m = _SCENE_RE.match(scene_id)
    if m is None:
        raise DatasetError(
            f"bad scene id {scene_id!r}",
            scene=scene_id,
            fix="Matterport3D scene ids look like '17DRP5sb8fy/region0' (see list_scenes)",
        )
    return m.group(1), int(m.group(2))


def _scans_root(root: str | Path) -> Path:
    root = as_path(root)
    if not root.is_dir():
        raise DatasetError("Matterport3D folder not found", file=root, fix=_ROOT_FIX)
    if (root / "region_segmentations").is_dir() or (
        root / "undistorted_camera_parameters"
    ).is_dir():
        raise DatasetError(
            "this is one house's folder, not the scans folder",
            file=root,
            fix=f"pass its parent folder ({root.parent})",
        )
    if not _houses(root):
        for sub in ("v1/scans", "scans"):
            if _houses(root / sub):
                return root / sub
    return root


def _type_dir(scans: Path, house: str, kind: str) -> Path | None:
    """``<house>/<kind>``, or ``<house>/<house>/<kind>`` when the zip was unzipped in place."""
    for d in (scans / house / kind, scans / house / house / kind):
        if d.is_dir():
            return d
    return None


def _houses(scans: Path) -> list[str]:
    if not scans.is_dir():
        return []
    return sorted(
        d.name
        for d in scans.iterdir()
        if d.is_dir() and _type_dir(scans, d.name, "region_segmentations") is not None
    )


def _regions(scans: Path, house: str) -> list[int]:
    d = _type_dir(scans, house, "region_segmentations")
    if d is None:
        return []
    found = (_REGION_RE.match(p.name) for p in d.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def _region_ply(scans: Path, house: str, region: int, scene_id: str) -> Path:
    d = _type_dir(scans, house, "region_segmentations")
    if d is None:
        houses = _houses(scans)
        if not (scans / house).is_dir():
            raise DatasetError(
                f"house {house} not found ({len(houses)} houses here, e.g. "
                f"{', '.join(houses[:3]) or 'none'})",
                file=scans,
                scene=scene_id,
                fix="check the scene id against list_scenes(root)",
            )
        raise DatasetError(
            "house has no region_segmentations folder",
            file=scans / house,
            scene=scene_id,
            fix="download and extract region_segmentations.zip into v1/scans",
        )
    ply = d / f"region{region}.ply"
    if not ply.is_file():
        known = ", ".join(f"region{k}" for k in _regions(scans, house)) or "none"
        raise DatasetError(
            f"region {region} not found (this house has: {known})",
            file=ply,
            scene=scene_id,
            fix="check the scene id against list_scenes(root)",
        )
    return ply


def _meta_bases(scans: Path) -> list[Path]:
    bases = [scans]
    if scans.name == "scans" and scans.parent.name == "v1":
        bases.append(scans.parent.parent)
    return bases


def _find_mapping(scans: Path, explicit: str | Path | None, scene_id: str) -> Path:
    fix = (
        "get metadata/category_mapping.tsv from github.com/niessner/Matterport and put it in "
        f"{scans / 'metadata'}, or pass category_mapping=<path>"
    )
    if explicit is not None:
        p = as_path(explicit)
        if not p.is_file():
            raise DatasetError("category mapping not found", file=p, scene=scene_id, fix=fix)
        return p
    for base in _meta_bases(scans):
        for rel in ("metadata/category_mapping.tsv", "category_mapping.tsv"):
            if (base / rel).is_file():
                return base / rel
    raise DatasetError(
        "category_mapping.tsv not found (needed to turn face category_id into classes)",
        file=scans,
        scene=scene_id,
        fix=fix,
    )


def _split_file(scans: Path, split: str, splits_dir: str | Path | None) -> Path | None:
    name = f"scenes_{split}.txt"
    if splits_dir is not None:
        places = [as_path(splits_dir) / name]
    else:
        places = [
            p for b in _meta_bases(scans) for p in (b / "tasks" / "benchmark" / name, b / name)
        ]
    for p in places:
        if p.exists():  # a folder or FIFO there is damage, not an absent list
            return require_regular_file(p)
    return None


def _split_houses(scans: Path, split: str, splits_dir: str | Path | None) -> list[str]:
    if split not in SPLITS:
        raise DatasetError(
            f"unknown split {split!r}", file=scans, fix=f"use one of {', '.join(SPLITS)}"
        )
    p = _split_file(scans, split, splits_dir)
    if p is None:
        where = as_path(splits_dir) if splits_dir is not None else scans / "tasks" / "benchmark"
        raise DatasetError(
            f"split list scenes_{split}.txt not found",
            file=where,
            fix="get tasks/benchmark/scenes_{train,val,test}.txt from github.com/niessner/"
            f"Matterport into {where}, or pass splits_dir=<folder>",
        )
    return read_split_file(p)


def _split_of(scans: Path, house: str, splits_dir: str | Path | None) -> str | None:
    """The split whose list names ``house``; ``None`` (with a warning when only some of the
    lists are there: a deleted list must not silently move a house out of its split)."""
    missing = []
    for split in SPLITS:
        p = _split_file(scans, split, splits_dir)
        if p is None:
            missing.append(f"scenes_{split}.txt")
        elif house in read_split_file(p):
            return split
    if missing and len(missing) < len(SPLITS):
        where = as_path(splits_dir) if splits_dir is not None else scans / "tasks" / "benchmark"
        warnings.warn(
            f"{house}: in none of the split lists found, and {', '.join(missing)} not found in "
            f"{where}: its split is unknown; put the missing list(s) there or pass splits_dir=",
            stacklevel=3,
        )
    return None


# --------------------------------------------------------------------------- labels


def _stamp(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return str(p.resolve()), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=8)
def _mapping_lut(stamp: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted category indices and their train ids (-1 = not one of the 21 classes)."""
    mapping = read_category_mapping(stamp[0])
    keys = np.array(sorted(mapping), dtype=np.int64)
    nyu = np.array([mapping[k] for k in keys], dtype=np.int64)
    return keys, get_label_set(LABEL_SET).nyu40_to_train()[nyu]


def face_train_ids(
    category: np.ndarray,
    mapping_path: str | Path,
    *,
    mesh_file: str | Path | None = None,
    scene: str | None = None,
) -> np.ndarray:
    """Face ``category_id`` -> matterport21 train id (int16, -1 = none) via the mapping file.

    -1 and 0 mean "no category"; an id the mapping does not list is an error (a mapping of
    another version), never a silent -1.
    """
    mapping_path = as_path(mapping_path)
    keys, train = _mapping_lut(_stamp(mapping_path))
    uniq, inv = np.unique(category, return_inverse=True)
    pos = np.clip(np.searchsorted(keys, uniq), 0, len(keys) - 1)
    known = keys[pos] == uniq
    unlabeled = uniq <= 0  # -1 and 0 mean "no category"
    bad = uniq[~known & ~unlabeled]
    if bad.size:
        raise DatasetError(
            f"faces use category_id {', '.join(map(str, bad[:5].tolist()))} that "
            f"{mapping_path.name} does not list ({len(keys)} rows)",
            file=mesh_file if mesh_file is not None else mapping_path,
            scene=scene,
            fix="use Matterport's own metadata/category_mapping.tsv (1659 rows) instead of "
            f"{mapping_path}",
        )
    per_uniq = np.where(unlabeled, -1, train[pos]).astype(np.int16)
    return per_uniq[inv.reshape(-1)]


# --------------------------------------------------------------------------- frames


@lru_cache(maxsize=4)
def _conf_cached(stamp: tuple[str, int, int]) -> CameraConf:
    return read_conf(stamp[0])


def _house_conf(scans: Path, house: str, scene_id: str) -> CameraConf:
    fix = (
        "download and extract undistorted_camera_parameters.zip of this house into v1/scans, "
        "or call load_scene(..., frames=None) to read the points only"
    )
    d = _type_dir(scans, house, "undistorted_camera_parameters")
    path = (
        d if d is not None else scans / house / "undistorted_camera_parameters"
    ) / f"{house}.conf"
    if not path.is_file():
        raise DatasetError("camera parameter file not found", file=path, scene=scene_id, fix=fix)
    try:
        return _conf_cached(_stamp(path))
    except DatasetError as e:
        raise DatasetError(e.problem, file=path, scene=scene_id, fix=e.fix) from e
