"""Matterport3D file writers for synthetic houses: region PLY + JSONs, .conf, .house, TSV.

Byte layouts follow FORMATS.md section 3: the region PLY is binary_little_endian with
``float x y z nx ny nz tx ty, uchar red green blue`` per vertex and ``list uchar int
vertex_indices, int material_id, int segment_id, int category_id`` per face; the ``.conf``
has the real header, double spaces and blank lines; the category TSV has the real header
and CRLF line ends. Numbers in text files have six significant digits, like the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tttkd.synthetic.matterport_mesh import RegionMesh
from tttkd.synthetic.room import Room

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
MAPPING_HEADER = (
    "index raw_category category count nyuId nyu40id eigen13id nyuClass nyu40class "
    "eigen13class ModelNet40 ModelNet10 ShapeNetCore55 synsetoffset wnsynsetid wnsynsetkey "
    "mpcat40index mpcat40"
).split()


def g6(x: float) -> float:
    """The value as a six-significant-digit text reads back (tiny round-off becomes 0)."""
    return 0.0 if abs(x) < 1e-9 else float(format(float(x), ".6g"))


def fmt6(values) -> str:
    return " ".join(format(float(v), ".6g") for v in values)


def write_conf(path: Path, groups) -> None:
    n = sum(len(s) for _, s in groups)
    lines = [
        "dataset matterport",
        f"n_images {n}",
        "depth_directory undistorted_depth_images",
        "color_directory undistorted_color_images",
        "",
    ]
    for K, scans in groups:
        k = K.ravel()
        lines.append(f"intrinsics_matrix {fmt6(k[:3])}  {fmt6(k[3:6])}  {fmt6(k[6:])}")
        for pano, cam, yaw, c2w_gl in scans:
            rows = "  ".join(fmt6(r) for r in c2w_gl)
            lines.append(f"scan {pano}_d{cam}_{yaw}.png {pano}_i{cam}_{yaw}.jpg  {rows}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


_VERTEX_DTYPE = np.dtype(
    [(n, "<f4") for n in ("x", "y", "z", "nx", "ny", "nz", "tx", "ty")]
    + [(n, "u1") for n in ("red", "green", "blue")]
)
_FACE_DTYPE = np.dtype(
    [
        ("n", "u1"),
        ("vertex_indices", "<i4", (3,)),
        ("material_id", "<i4"),
        ("segment_id", "<i4"),
        ("category_id", "<i4"),
    ]
)


def write_region(folder: Path, k: int, mesh: RegionMesh) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    v = np.zeros(len(mesh.xyz), _VERTEX_DTYPE)
    for i, n in enumerate(("x", "y", "z")):
        v[n] = mesh.xyz[:, i]
        v["n" + n] = mesh.normal[:, i]
    v["tx"], v["ty"] = mesh.uv[:, 0], mesh.uv[:, 1]
    v["red"], v["green"], v["blue"] = mesh.rgb.T
    f = np.zeros(len(mesh.faces), _FACE_DTYPE)
    f["n"] = 3
    f["vertex_indices"] = mesh.faces
    f["material_id"], f["segment_id"], f["category_id"] = mesh.material, mesh.segment, mesh.category
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}"]
        + [
            f"property {'float' if t.kind == 'f' else 'uchar'} {n}"
            for n, (t, _) in _VERTEX_DTYPE.fields.items()
        ]
        + [
            f"element face {len(f)}",
            "property list uchar int vertex_indices",
            "property int material_id",
            "property int segment_id",
            "property int category_id",
            "end_header",
        ]
    )
    with open(folder / f"region{k}.ply", "wb") as fh:
        fh.write((header + "\n").encode("ascii"))
        fh.write(v.tobytes())
        fh.write(f.tobytes())
    (folder / f"region{k}.fsegs.json").write_text(
        json.dumps({"segIndices": mesh.material.tolist()})
    )
    vseg = np.full(len(mesh.xyz), -1, dtype=np.int64)
    vseg[mesh.faces.ravel()] = np.repeat(mesh.material, 3)
    (folder / f"region{k}.vsegs.json").write_text(json.dumps({"segIndices": vseg.tolist()}))
    groups = []
    for obj in np.unique(mesh.segment).tolist():
        m = mesh.segment == obj
        cat = int(mesh.category[m][0])
        pts = mesh.xyz[np.unique(mesh.faces[m])]
        groups.append(
            {
                "id": len(groups),
                "objectId": obj,
                "label": mesh.raw_label.get(cat, "unknown"),
                "segments": np.unique(mesh.material[m]).tolist(),
                "obb": {
                    "centroid": ((pts.min(0) + pts.max(0)) / 2).tolist(),
                    "axesLengths": (pts.max(0) - pts.min(0)).tolist(),
                    "normalizedAxes": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                },
            }
        )
    (folder / f"region{k}.semseg.json").write_text(json.dumps({"segGroups": groups}))


def write_house_file(
    path: Path, house: str, views: Sequence, rooms: Sequence[Room], rows: Sequence[tuple]
) -> None:
    """A ``.house`` with H, L, R, I and C records (enough for tools that read regions/images).

    ``views`` have ``name, K, c2w (OpenCV), width, height``; ``rows`` are category rows.
    """
    lo = np.min([b.lo for r in rooms for b in r.boxes], axis=0)
    hi = np.max([b.hi for r in rooms for b in r.boxes], axis=0)
    zeros = "0 0 0 0 0"
    out = [
        "ASCII 1.1",
        f"H {house} house {len(views)} {len({v.name[:32] for v in views})} 0 0 0 0 0 "
        f"{len(rooms)} 0 1  {zeros}  {fmt6(lo)}  {fmt6(hi)}  {zeros}",
        f"L 0 {len(rooms)} level  {fmt6((lo + hi) / 2)}  {fmt6(lo)}  {fmt6(hi)}  {zeros}",
    ]
    for k, r in enumerate(rooms):
        rlo = np.min([b.lo for b in r.boxes], axis=0)
        rhi = np.max([b.hi for b in r.boxes], axis=0)
        out.append(
            f"R {k} 0 0 0 b  {fmt6((rlo + rhi) / 2)}  {fmt6(rlo)}  {fmt6(rhi)}  "
            f"{g6(rhi[2] - rlo[2])}  0 0 0 0"
        )
    panos: dict[str, int] = {}
    for i, v in enumerate(views):
        pano, cam, yaw = v.name.rsplit("_", 2)
        pi = panos.setdefault(pano, len(panos))
        c2w_gl = v.c2w @ GL_TO_CV
        out.append(
            f"I {i} {pi}  {v.name}.jpg {cam[1:]} {yaw}  {fmt6(c2w_gl.ravel())}  "
            f"{fmt6(v.K.ravel())}  {v.width} {v.height}  {fmt6(c2w_gl[:3, 3])}  {zeros}"
        )
    for i, (idx, raw, _) in enumerate(rows):
        out.append(f"C {i} {idx} {raw.replace(' ', '#')} 0 void  {zeros}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def write_mapping(path: Path, rows: list[tuple[int, str, str]]) -> None:
    """The real header and CRLF line ends; cells we have no value for are empty."""
    lines = ["\t".join(MAPPING_HEADER)]
    for idx, raw, nyu in rows:
        cells = dict.fromkeys(MAPPING_HEADER, "")
        cells.update(
            index=str(idx), raw_category=raw, category=raw, count="1", nyu40id=nyu, nyu40class=raw
        )
        lines.append("\t".join(cells[c] for c in MAPPING_HEADER))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
