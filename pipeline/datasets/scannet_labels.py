"""ScanNet labels: the label map TSV and a scan's segment aggregation, as scannet20 train ids.

A segGroup's ``label`` is a ``raw_category`` of ``scannetv2-labels.combined.tsv`` ->
``nyu40id`` -> scannet20 train id. Unannotated or unmapped vertices, and every vertex of a test
scan without annotations, get -1.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from tttkd.core import IGNORE_INDEX, DatasetError, get_label_set
from tttkd.pipeline.datasets.scannet_tree import need_file

LABEL_TSV = "scannetv2-labels.combined.tsv"


def find_label_tsv(root: Path, labels_tsv: str | Path | None, scene_id: str) -> Path:
    """``labels_tsv``, else the TSV where the download script or a user may have put it."""
    if labels_tsv is not None:
        return need_file(Path(labels_tsv), scene_id, "pass the path of " + LABEL_TSV)
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
            need_file(path, scene_id, "download the scene's annotation files").read_text()
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
            stacklevel=4,  # the caller of load_scene (via read_labels)
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


def read_labels(
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
