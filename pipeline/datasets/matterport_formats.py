"""Parsers for the Matterport3D files the reader needs (see ../shared/FORMATS.md section 3).

Each parser reads one file exactly as the dataset ships it and raises :class:`DatasetError`
naming the file and the fix when it does not look like that. Nothing here knows about
scenes, pairing or label sets beyond the NYU40 id; :mod:`.matterport3d` composes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tttkd.core import DatasetError

DEPTH_SCALE = 4000.0  # undistorted depth PNG units per metre (0.25 mm)
# The .conf stores camera-to-world in OpenGL axes (look along -Z, +Y up); OpenCV axes look
# along +Z with +Y down. Right-multiplying by this flips the camera's y and z axes.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world in OpenGL axes -> OpenCV axes (negate rotation columns 1 and 2)."""
    return np.asarray(c2w, dtype=np.float64) @ GL_TO_CV


# --------------------------------------------------------------------------- text tables


def _read_text(path: Path, what: str, fix: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read the {what} ({e.strerror})", file=path, fix=fix) from e
    return data.decode("utf-8", errors="replace")


def read_tsv(path: str | Path, *, what: str, fix: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a tab-separated table; CRLF or LF, final newline or not."""
    path = Path(path)
    lines = [ln for ln in _read_text(path, what, fix).splitlines() if ln.strip()]
    if not lines:
        raise DatasetError(f"the {what} is empty", file=path, fix=fix)
    header = [h.strip() for h in lines[0].split("\t")]
    rows = [ln.split("\t") for ln in lines[1:]]
    return header, rows


def _column(header: list[str], name: str, path: Path, what: str, fix: str) -> int:
    if name not in header:
        raise DatasetError(
            f"the {what} has no column {name!r} (columns: {', '.join(header)})",
            file=path,
            fix=fix,
        )
    return header.index(name)


def _cell(row: list[str], col: int) -> str:
    return row[col].strip() if col < len(row) else ""


MAPPING_FIX = (
    "use metadata/category_mapping.tsv from github.com/niessner/Matterport unmodified "
    "(tab-separated, header row with 'index' and 'nyu40id')"
)


def read_category_mapping(path: str | Path) -> dict[int, int]:
    """``category_mapping.tsv``: face ``category_id`` (the ``index`` column) -> NYU40 id.

    Columns are found by name. An empty (or ``nan``) ``nyu40id`` means "no NYU40 class" and
    maps to 0 (unlabelled): row 1240 ``storage`` of the real file is like that. An empty or
    non-integer ``index`` is an error, never a silent row.
    """
    path = Path(path)
    what = "Matterport category mapping"
    header, rows = read_tsv(path, what=what, fix=MAPPING_FIX)
    ci = _column(header, "index", path, what, MAPPING_FIX)
    cn = _column(header, "nyu40id", path, what, MAPPING_FIX)
    out: dict[int, int] = {}
    for lineno, row in enumerate(rows, start=2):
        idx_txt, nyu_txt = _cell(row, ci), _cell(row, cn)
        idx = _parse_int(idx_txt)
        if idx is None:
            raise DatasetError(
                f"line {lineno}: 'index' is {idx_txt!r}, not an integer",
                file=path,
                fix=MAPPING_FIX,
            )
        if idx in out:
            raise DatasetError(
                f"line {lineno}: index {idx} appears twice", file=path, fix=MAPPING_FIX
            )
        if nyu_txt == "" or nyu_txt.lower() == "nan":
            nyu = 0
        else:
            parsed = _parse_int(nyu_txt)
            if parsed is None or not 0 <= parsed <= 40:
                raise DatasetError(
                    f"line {lineno}: nyu40id {nyu_txt!r} is not an NYU40 id (0..40)",
                    file=path,
                    fix=MAPPING_FIX,
                )
            nyu = parsed
        out[idx] = nyu
    if not out:
        raise DatasetError(f"the {what} has no rows", file=path, fix=MAPPING_FIX)
    return out


def _parse_int(text: str) -> int | None:
    """An integer cell; also accepts '12.0' (pandas round trips) but never NaN or '12.5'."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if math.isfinite(v) and v == int(v) else None


@dataclass(frozen=True)
class MpCat40:
    index: int
    name: str
    hex: str


def read_mpcat40(path: str | Path) -> list[MpCat40]:
    """``mpcat40.tsv``: the 42 Matterport categories (0 void ... 41 unlabeled) and colours."""
    path = Path(path)
    fix = "use metadata/mpcat40.tsv from github.com/niessner/Matterport unmodified"
    header, rows = read_tsv(path, what="mpcat40 table", fix=fix)
    ci = _column(header, "mpcat40index", path, "mpcat40 table", fix)
    cn = _column(header, "mpcat40", path, "mpcat40 table", fix)
    ch = _column(header, "hex", path, "mpcat40 table", fix)
    out = []
    for lineno, row in enumerate(rows, start=2):
        idx = _parse_int(_cell(row, ci))
        if idx is None:
            raise DatasetError(f"line {lineno}: bad mpcat40index", file=path, fix=fix)
        out.append(MpCat40(idx, _cell(row, cn), _cell(row, ch)))
    return out


def read_split_file(path: str | Path) -> list[str]:
    """One house id per line; LF or CRLF, with or without the final newline."""
    path = Path(path)
    fix = "use tasks/benchmark/scenes_<split>.txt from github.com/niessner/Matterport"
    text = _read_text(path, "split list", fix)
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


# --------------------------------------------------------------------------- camera .conf


@dataclass(frozen=True)
class ConfImage:
    """One ``scan`` line: image names, the intrinsics in force, c2w as written (OpenGL)."""

    depth_name: str
    color_name: str
    K: np.ndarray  # (3, 3) as written
    c2w_gl: np.ndarray  # (4, 4) camera-to-world, OpenGL axes, as written


@dataclass(frozen=True)
class CameraConf:
    path: Path
    depth_directory: str
    color_directory: str
    images: tuple[ConfImage, ...]


def read_conf(path: str | Path, *, scene: str | None = None) -> CameraConf:
    """``undistorted_camera_parameters/<house>.conf``.

    Split on whitespace (the files have double spaces and blank lines). Each
    ``intrinsics_matrix`` (9 numbers, row-major) applies to the ``scan`` lines after it; each
    ``scan`` line is ``depth_name color_name`` and 16 numbers, a row-major camera->world
    matrix in OpenGL axes. Unknown keys are ignored.
    """
    path = Path(path)
    fix = (
        "the camera file is incomplete; extract undistorted_camera_parameters.zip of this "
        "house again (download_mp.py --type undistorted_camera_parameters)"
    )
    text = _read_text(path, "camera parameter file", fix)
    depth_dir, color_dir = "undistorted_depth_images", "undistorted_color_images"
    n_images: int | None = None
    K: np.ndarray | None = None
    images: list[ConfImage] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tok = line.split()
        if not tok:
            continue
        key = tok[0]
        try:
            if key == "intrinsics_matrix":
                if len(tok) != 10:
                    raise ValueError(f"intrinsics_matrix needs 9 numbers, got {len(tok) - 1}")
                K = np.array([float(t) for t in tok[1:]], dtype=np.float64).reshape(3, 3)
            elif key == "scan":
                if len(tok) != 19:
                    raise ValueError(
                        f"scan needs 2 names and 16 numbers, got {len(tok) - 1} fields"
                    )
                if K is None:
                    raise ValueError("scan line before any intrinsics_matrix")
                c2w = np.array([float(t) for t in tok[3:]], dtype=np.float64).reshape(4, 4)
                images.append(ConfImage(tok[1], tok[2], K, c2w))
            elif key == "depth_directory" and len(tok) > 1:
                depth_dir = tok[1]
            elif key == "color_directory" and len(tok) > 1:
                color_dir = tok[1]
            elif key == "n_images" and len(tok) > 1:
                n_images = int(tok[1])
        except ValueError as e:
            raise DatasetError(f"line {lineno}: {e}", file=path, scene=scene, fix=fix) from e
    if not images:
        raise DatasetError("the camera file has no 'scan' lines", file=path, scene=scene, fix=fix)
    if n_images is not None and n_images != len(images):
        import warnings

        warnings.warn(
            f"{path}: n_images says {n_images} but there are {len(images)} scan lines",
            stacklevel=2,
        )
    return CameraConf(path, depth_dir, color_dir, tuple(images))


# --------------------------------------------------------------------------- region mesh


@dataclass(frozen=True)
class RegionMesh:
    xyz: np.ndarray  # (V, 3) float32
    rgb: np.ndarray  # (V, 3) uint8
    faces: np.ndarray  # (F, 3) int64 vertex indices
    category: np.ndarray  # (F,) int64 face category_id (index of category_mapping.tsv)


PLY_FIX = (
    "extract region_segmentations.zip of this house again "
    "(download_mp.py --type region_segmentations); the .ply must be the original binary file"
)


def read_region_ply(path: str | Path, *, scene: str | None = None) -> RegionMesh:
    """``region_segmentations/region<k>.ply``: vertices and per-face ``category_id``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("region mesh not found", file=path, scene=scene, fix=PLY_FIX)
    ply, faces, owner = _parse_ply(path, scene)
    _require_mesh_properties(ply, path, scene)
    v = ply["vertex"].data
    f = ply["face"].data
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
    rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1)
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.round(rgb.astype(np.float64)), 0, 255).astype(np.uint8)
    category = np.asarray(f["category_id"]).astype(np.int64)
    if owner is not None:
        category = category[owner]
    if faces is None:
        faces = np.asarray(f["vertex_indices"]).astype(np.int64).reshape(-1, 3)
    del ply, v, f  # release the copy-on-write memory map
    if faces.size and (faces.min() < 0 or faces.max() >= len(xyz)):
        raise DatasetError(
            f"face vertex index out of range (mesh has {len(xyz)} vertices)",
            file=path,
            scene=scene,
            fix=PLY_FIX,
        )
    if not np.isfinite(xyz).all():
        raise DatasetError("non-finite vertex coordinates", file=path, scene=scene, fix=PLY_FIX)
    return RegionMesh(np.ascontiguousarray(xyz), np.ascontiguousarray(rgb), faces, category)


def _parse_ply(path: Path, scene: str | None) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
    """The parsed PLY (memory-mapped when every face is a triangle) and, for a mesh with other
    polygons, its fan triangles and the face each came from (else None, None)."""
    from plyfile import PlyData, PlyElementParseError

    try:
        ply = PlyData.read(str(path), known_list_len={"face": {"vertex_indices": 3}})
    except PlyElementParseError as e:
        if "unexpected list length" not in str(e):
            raise DatasetError(
                f"not a readable PLY mesh ({e})", file=path, scene=scene, fix=PLY_FIX
            ) from e
        ply = PlyData.read(str(path), mmap=False)
        faces, owner = _fan_triangulate(ply["face"].data["vertex_indices"])
        return ply, faces, owner
    except Exception as e:  # plyfile raises several types for a truncated or foreign file
        raise DatasetError(
            f"not a readable PLY mesh ({e})", file=path, scene=scene, fix=PLY_FIX
        ) from e
    return ply, None, None


def _require_mesh_properties(ply: Any, path: Path, scene: str | None) -> None:
    names = {el.name for el in ply.elements}
    for el_name, props in (
        ("vertex", ("x", "y", "z", "red", "green", "blue")),
        ("face", ("vertex_indices", "category_id")),
    ):
        if el_name not in names:
            raise DatasetError(
                f"PLY has no '{el_name}' element", file=path, scene=scene, fix=PLY_FIX
            )
        have = {p.name for p in ply[el_name].properties}
        missing = [p for p in props if p not in have]
        if missing:
            raise DatasetError(
                f"PLY element '{el_name}' lacks {', '.join(missing)} "
                f"(has {', '.join(sorted(have))}); Matterport region meshes carry these",
                file=path,
                scene=scene,
                fix=PLY_FIX,
            )


def _fan_triangulate(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow path for meshes with non-triangle faces: triangles and the polygon each came from."""
    tris, owner = [], []
    for i, poly in enumerate(polys):
        poly = np.asarray(poly, dtype=np.int64)
        for j in range(1, len(poly) - 1):
            tris.append((poly[0], poly[j], poly[j + 1]))
            owner.append(i)
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3), np.asarray(owner, dtype=np.int64)


def vertex_majority(
    faces: np.ndarray, face_label: np.ndarray, num_vertices: int, num_classes: int
) -> np.ndarray:
    """Per-vertex label: majority over the faces touching it, "unlabelled" (-1) a candidate.

    Ties go to "unlabelled" first, then to the lowest train id (argmax over a count table
    whose column 0 is unlabelled; the rule Pointcept and OpenScene use). Untouched vertices
    are unlabelled.
    """
    ncol = num_classes + 1
    col = np.repeat(np.asarray(face_label, dtype=np.int64) + 1, 3)
    key = np.asarray(faces, dtype=np.int64).ravel() * ncol + col
    counts = np.bincount(key, minlength=num_vertices * ncol).reshape(num_vertices, ncol)
    return (counts.argmax(axis=1) - 1).astype(np.int16)
