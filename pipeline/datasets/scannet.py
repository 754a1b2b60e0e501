"""ScanNet v2 read exactly as distributed (FORMATS.md section 1).

``root`` is the folder ``download-scannet.py`` wrote: ``scans/<scene>/`` (train + val),
``scans_test/<scene>/`` (test, unlabelled), the label map ``scannetv2-labels.combined.tsv``
(at the root, as the download script puts it, or under ``tasks/``) and optionally the 25k
frame subset ``scannet_frames_25k/``. A folder that directly holds ``scene*`` folders works too.

* Points: ``<scene>_vh_clean_2.ply`` vertices (x y z, red green blue, read by name), in the
  scan's own frame; ``align=True`` applies ``axisAlignment`` from ``<scene>.txt`` to the points
  AND the camera poses (``c2w' = A @ c2w``), so projections stay valid.
* Labels: ``<scene>.aggregation.json`` segGroups over ``<scene>_vh_clean_2.0.010000.segs.json``
  segments; a group's ``label`` is a ``raw_category`` of the TSV -> ``nyu40id`` -> scannet20
  train id. Unannotated or unmapped vertices, and every test-scan vertex, get -1.
* Splits: ``scannetv2_{train,val,test}.txt`` from ``splits_dir``, the root,
  ``<root>/Tasks/Benchmark`` or ``<root>/tasks/Benchmark`` (the ScanNet repository's folder).
* Frames: see :mod:`tttkd.pipeline.datasets.scannet_frames`. The 25k subset is looked for in
  ``<frames_root or root/scannet_frames_25k>/<scene>/``; a ``reader.py`` export in
  ``<frames_root>/<scene>/`` or, by default, in the scan folder itself; the ``.sens`` in the
  scan folder.

Reading never writes into the dataset folder.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tttkd.core import IGNORE_INDEX, DatasetError, Frame, Scene, get_label_set, require_regular_file
from tttkd.pipeline.datasets.ply import read_elements, require_properties
from tttkd.pipeline.datasets.protocol import check_frames, check_max_views, evenly_spaced
from tttkd.pipeline.datasets.scannet_frames import frames_from_sens, frames_from_tree

FrameSource = Literal["auto", "25k", "exported", "sens"]
FRAME_SOURCES = ("auto", "25k", "exported", "sens")
SPLITS = ("train", "val", "test")
LABEL_TSV = "scannetv2-labels.combined.tsv"
SENS_STRIDE = 100  # default: every 100th .sens frame, like the 25k subset
SCENE_RE = re.compile(r"^scene\d{4}_\d{2}$")


def _scan_dirs(root: Path) -> list[Path]:
    dirs = [root / d for d in ("scans", "scans_test") if (root / d).is_dir()]
    if not dirs and any(SCENE_RE.match(p.name) for p in _listdir(root)):
        dirs = [root]
    return dirs


def _listdir(d: Path) -> list[Path]:
    try:
        return list(d.iterdir())
    except OSError:
        return []


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
    return list(_read_lines(str(path), os.stat(path).st_mtime_ns))


def list_scenes(
    root: str | Path,
    split: str | None = None,
    *,
    splits_dir: str | Path | None = None,
    existing_only: bool = False,
    **_load_options: Any,
) -> list[str]:
    """Scene ids of ``split`` as its split file lists them, or every scan folder (``None``).

    ``existing_only`` keeps only the split's scenes whose scan folder is present; options of
    ``load_scene`` are accepted and ignored (protocol.Reader).
    """
    root = Path(root)
    present = sorted(
        p.name for d in _scan_dirs(root) for p in _listdir(d) if SCENE_RE.match(p.name)
    )
    if split is None:
        if not present:
            raise DatasetError(
                "no scene folders found (looked in scans/ and scans_test/)",
                file=root,
                fix="point root at the folder download-scannet.py wrote (it holds scans/)",
            )
        return present
    ids = read_split(split_file(root, split, splits_dir))
    have = set(present)
    return [s for s in ids if s in have] if existing_only else ids


def _scene_split(
    root: Path, scene_id: str, splits_dir: str | Path | None, test_dir: bool
) -> str | None:
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
            stacklevel=3,
        )
    return None


def find_scan_dir(root: str | Path, scene_id: str) -> Path:
    root = Path(root)
    dirs = _scan_dirs(root) or [root / "scans", root / "scans_test"]
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


def _need(path: Path, scene_id: str, fix: str) -> Path:
    if not path.is_file():
        raise DatasetError("file is missing", file=path, scene=scene_id, fix=fix)
    return path


def read_meta(path: Path, scene_id: str) -> dict[str, str]:
    """``<scene>.txt``: ``key = value`` lines (sceneType may contain spaces)."""
    meta = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


def axis_alignment(meta: dict[str, str], path: Path, scene_id: str) -> np.ndarray:
    if "axisAlignment" not in meta:
        raise DatasetError(
            "align=True but the scene has no axisAlignment (test scans have none)",
            file=path,
            scene=scene_id,
            fix="load test scans with align=False",
        )
    try:
        A = np.array([float(v) for v in meta["axisAlignment"].split()], dtype=np.float64)
        return A.reshape(4, 4)
    except ValueError as e:
        raise DatasetError(
            f"axisAlignment is not 16 numbers ({e})",
            file=path,
            scene=scene_id,
            fix="restore the scene's .txt from the dataset",
        ) from e


def find_label_tsv(root: Path, labels_tsv: str | Path | None, scene_id: str) -> Path:
    if labels_tsv is not None:
        return _need(Path(labels_tsv), scene_id, "pass the path of " + LABEL_TSV)
    places = [root, root / "tasks", root / "Tasks", root.parent]
    for d in places:
        if (d / LABEL_TSV).is_file():
            return d / LABEL_TSV
    raise DatasetError(
        f"{LABEL_TSV} not found; looked in: " + ", ".join(str(d) for d in places),
        file=root / LABEL_TSV,
        scene=scene_id,
        fix="download it (download-scannet.py --label_map) into the dataset root, or pass "
        "labels_tsv=",
    )


def read_label_map(path: Path, scene_id: str | None = None) -> dict[str, int]:
    """``raw_category`` -> ``nyu40id`` (columns found by name; CRLF and CR CR LF safe)."""
    st = os.stat(path)
    return dict(_label_map(str(path), st.st_size, st.st_mtime_ns, scene_id))


@lru_cache(maxsize=8)
def _label_map(path: str, size: int, mtime: int, scene_id: str | None) -> tuple[tuple[str, int]]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"not UTF-8 text ({e})",
            file=path,
            scene=scene_id,
            fix=f"the file is corrupt; download ScanNet's {LABEL_TSV} again",
        ) from e
    numbered = [  # (line number as an editor shows it, line); CR CR LF ends count once
        (i, ln.strip("\r"))
        for i, ln in enumerate(text.split("\n") if "\n" in text else text.splitlines(), 1)
        if ln.strip()
    ]
    lines = [ln for _, ln in numbered]
    header = [h.strip() for h in lines[0].split("\t")] if lines else []
    missing = [c for c in ("raw_category", "nyu40id") if c not in header]
    if missing:
        raise DatasetError(
            f"label map lacks columns {missing} (header: {header[:6]}...)",
            file=path,
            scene=scene_id,
            fix=f"use ScanNet's {LABEL_TSV} (tab-separated, with a header row)",
        )
    raw_col, nyu_col = header.index("raw_category"), header.index("nyu40id")
    out: dict[str, int] = {}
    for number, line in numbered[1:]:
        cells = line.split("\t")
        if len(cells) <= max(raw_col, nyu_col):
            continue
        raw, nyu = cells[raw_col].strip(), cells[nyu_col].strip()
        if nyu and not (nyu.isdigit() and 0 <= int(nyu) <= 40):
            raise DatasetError(
                f"line {number}: nyu40id {nyu!r} of raw_category {raw!r} is not a number in "
                "0..40 (an empty cell means unlabelled)",
                file=path,
                scene=scene_id,
                fix=f"repair that row, or download ScanNet's {LABEL_TSV} again",
            )
        out.setdefault(raw, int(nyu) if nyu else 0)  # first row wins
    return tuple(out.items())


def _read_json(path: Path, scene_id: str) -> dict:
    try:
        return json.loads(
            _need(path, scene_id, "download the scene's annotation files").read_text()
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"not valid JSON ({e})",
            file=path,
            scene=scene_id,
            fix="the file is corrupt or truncated; download it again",
        ) from e


def load_nyu40(
    scan_dir: Path,
    scene_id: str,
    n_vertices: int,
    label_map: dict[str, int],
    map_file: Path | None = None,
) -> tuple[np.ndarray, tuple[Path, Path]]:
    """Per-vertex nyu40 ids (0 = unannotated) from the aggregation over the segments."""
    segs_path = scan_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json"
    agg_path = scan_dir / f"{scene_id}.aggregation.json"
    segs, agg = _read_json(segs_path, scene_id), _read_json(agg_path, scene_id)
    try:
        seg_of = np.asarray(segs["segIndices"], dtype=np.int64)
        groups = [(str(g["label"]), list(g["segments"])) for g in agg["segGroups"]]
    except (KeyError, TypeError, ValueError) as e:
        bad = segs_path if "segIndices" not in segs else agg_path
        raise DatasetError(
            f"missing or malformed field {e}",
            file=bad,
            scene=scene_id,
            fix="the annotation file is not a ScanNet v2 segs/aggregation JSON",
        ) from e
    if len(seg_of) != n_vertices:
        raise DatasetError(
            f"segIndices has {len(seg_of)} entries but the mesh has {n_vertices} vertices",
            file=segs_path,
            scene=scene_id,
            fix="use the _vh_clean_2.0.010000.segs.json that belongs to _vh_clean_2.ply "
            "(not the hi-res _vh_clean.segs.json)",
        )
    unknown = sorted({raw.strip() for raw, _ in groups} - set(label_map))
    if unknown:  # their points end unlabelled: say so, naming both files
        warnings.warn(
            f"{len(unknown)} object label(s) of {agg_path} are not in the label map "
            f"{map_file or ''} ({', '.join(map(repr, unknown[:5]))}): their points are unlabelled",
            stacklevel=4,  # the caller of load_scene (via _read_labels)
        )
    uniq, inverse = np.unique(seg_of, return_inverse=True)
    nyu_of_seg = np.zeros(len(uniq), dtype=np.int16)
    for i, (raw, seg_ids) in enumerate(groups):  # a later group overrides an earlier one
        sid = np.asarray(seg_ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(uniq, sid), len(uniq) - 1)
        known = uniq[pos] == sid if len(uniq) else np.zeros(len(sid), bool)
        if not known.all():
            raise DatasetError(
                f"segGroups[{i}] (label {raw!r}) lists {int((~known).sum())} segment ids that "
                f"are not in {segs_path.name}, e.g. {sid[~known][:3].tolist()}",
                file=agg_path,
                scene=scene_id,
                fix="use the aggregation.json and _vh_clean_2.0.010000.segs.json of the same "
                "scan (download both again)",
            )
        nyu_of_seg[pos[known]] = label_map.get(raw.strip(), 0)
    return nyu_of_seg[inverse], (segs_path, agg_path)


def load_scene(
    root: str | Path,
    scene_id: str,
    *,
    frames: FrameSource | None = "auto",
    max_views: int | None = None,
    align: bool = False,
    frames_root: str | Path | None = None,
    frame_stride: int | None = None,
    labels_tsv: str | Path | None = None,
    splits_dir: str | Path | None = None,
    color_calib_size: tuple[int, int] | None = None,
) -> Scene:
    """One ScanNet scan as a :class:`Scene` (labels in scannet20 train ids, -1 = ignore).

    ``frames``: ``"25k"``, ``"exported"``, ``"sens"``, ``"auto"`` (the first of those three
    found, else none) or None (no frames). ``frame_stride`` keeps frames whose ``.sens`` index
    is a multiple of it (default: 100 for ``.sens`` and exports, all frames of the 25k subset);
    ``max_views`` then keeps that many, evenly spaced.
    """
    if frames == "none":  # the spelling before protocol.Reader (tttkd-prep --frames none)
        warnings.warn(
            "ScanNet frames='none' is deprecated and will be removed; pass frames=None",
            DeprecationWarning,
            stacklevel=2,
        )
        frames = None
    check_frames(frames, FRAME_SOURCES, "ScanNet")
    check_max_views(max_views)
    root = Path(root)
    scan_dir = find_scan_dir(root, scene_id)
    is_test = scan_dir.parent.name == "scans_test"
    xyz, rgb, ply = _read_points(scan_dir, scene_id)
    label, label_files = _read_labels(root, scan_dir, scene_id, len(xyz), is_test, labels_tsv)
    sources = [ply, *label_files]
    meta_path = scan_dir / f"{scene_id}.txt"
    meta = read_meta(meta_path, scene_id) if meta_path.is_file() else {}
    frame_list = evenly_spaced(
        _load_frames(
            root,
            scan_dir,
            scene_id,
            frames=frames,
            frames_root=frames_root,
            stride=frame_stride,
            meta=meta,
            color_calib_size=color_calib_size,
        ),
        max_views,
    )
    if align:
        A = axis_alignment(meta, _need(meta_path, scene_id, "download the scene's .txt"), scene_id)
        xyz = xyz @ A[:3, :3].T + A[:3, 3]
        frame_list = [_aligned(f, A) for f in frame_list]
        sources.append(meta_path)
    return Scene(
        id=scene_id,
        dataset="scannet",
        split=_scene_split(root, scene_id, splits_dir, is_test),
        xyz=xyz.astype(np.float32),
        rgb=rgb,
        label=label.astype(np.int16),
        frames=frame_list,
        label_set="scannet20",
        source_files=tuple(str(p) for p in sources),
    )


def _read_points(scan_dir: Path, scene_id: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """xyz (float64, the raw scan frame) and rgb of the ``_vh_clean_2.ply`` vertices."""
    ply = _need(
        scan_dir / f"{scene_id}_vh_clean_2.ply",
        scene_id,
        "download the scene's _vh_clean_2.ply (download-scannet.py --type _vh_clean_2.ply)",
    )
    vertex = read_elements(ply, ["vertex"], scene=scene_id)["vertex"]
    require_properties(vertex, ("x", "y", "z", "red", "green", "blue"), ply, scene=scene_id)
    xyz = np.stack([vertex[k] for k in "xyz"], 1).astype(np.float64)
    rgb = np.stack([vertex[k] for k in ("red", "green", "blue")], 1).astype(np.uint8)
    return xyz, rgb, ply


def _read_labels(
    root: Path,
    scan_dir: Path,
    scene_id: str,
    n: int,
    is_test: bool,
    labels_tsv: str | Path | None,
) -> tuple[np.ndarray, list[Path]]:
    """scannet20 train ids of the ``n`` vertices and the files they came from; a test scan
    without annotations is all ignore."""
    if is_test and not (scan_dir / f"{scene_id}.aggregation.json").exists():
        return np.full(n, IGNORE_INDEX, dtype=np.int16), []
    tsv = find_label_tsv(root, labels_tsv, scene_id)
    label_map = read_label_map(tsv, scene_id)
    nyu, files = load_nyu40(scan_dir, scene_id, n, label_map, map_file=tsv)
    return get_label_set("scannet20").nyu40_to_train()[nyu], [*files, tsv]


def _aligned(f: Frame, A: np.ndarray) -> Frame:
    return replace(f, c2w=A @ f.c2w)


def _load_frames(
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
