"""Binary/ASCII PLY reading and writing shared by the dataset readers and synthetic writers.

Why not just ``plyfile.PlyData.read``: it parses every element, and a list element (faces)
in a binary file is decoded one face at a time in Python, which is slow for real meshes that
readers never need the faces of. Here the header is parsed once, elements made only of scalar
properties are read with one ``numpy.frombuffer``, and a list element is read fast when every
list has the same length (triangle meshes). Anything else falls back to ``plyfile``.
Every failure becomes a :class:`DatasetError` naming the file and scene.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tttkd.core import DatasetError

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class PlyProperty:
    name: str
    dtype: str  # numpy code without byte order, e.g. "f4"
    list_len_dtype: str | None = None  # set for list properties


@dataclass(frozen=True)
class PlyElementSpec:
    name: str
    count: int
    properties: tuple[PlyProperty, ...]

    @property
    def has_list(self) -> bool:
        return any(p.list_len_dtype is not None for p in self.properties)

    def property_names(self) -> list[str]:
        return [p.name for p in self.properties]


@dataclass(frozen=True)
class PlyHeader:
    format: str  # "binary_little_endian" | "binary_big_endian" | "ascii"
    elements: tuple[PlyElementSpec, ...]
    comments: tuple[str, ...]
    header_bytes: int

    def element(self, name: str) -> PlyElementSpec | None:
        return next((e for e in self.elements if e.name == name), None)


def _bad(problem: str, path: Path, scene: str | None, fix: str | None = None) -> DatasetError:
    return DatasetError(
        problem,
        file=path,
        scene=scene,
        fix=fix or "the file is corrupt or incomplete; download or extract it again",
    )


def read_header(path: str | Path, *, scene: str | None = None) -> PlyHeader:
    """Parse the PLY header (magic, format, elements, properties, comments)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_MAX_HEADER)
    except OSError as e:
        raise _bad(f"cannot open PLY file ({e.strerror})", path, scene, "check the path") from e
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise _bad("not a PLY file (no 'ply' magic or no 'end_header')", path, scene)
    stop = head.find(b"\n", end)
    if stop < 0:
        raise _bad("PLY header is not terminated by a newline", path, scene)
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    fmt, comments, elements = None, [], []
    cur: tuple[str, int, list[PlyProperty]] | None = None
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        key = words[0]
        try:
            if key == "format":
                fmt = words[1]
            elif key in ("comment", "obj_info"):
                comments.append(line.split(None, 1)[1] if len(words) > 1 else "")
            elif key == "element":
                if cur is not None:
                    elements.append(PlyElementSpec(cur[0], cur[1], tuple(cur[2])))
                cur = (words[1], int(words[2]), [])
            elif key == "property" and cur is not None:
                if words[1] == "list":
                    cur[2].append(PlyProperty(words[4], _TYPES[words[3]], _TYPES[words[2]]))
                else:
                    cur[2].append(PlyProperty(words[2], _TYPES[words[1]]))
            else:
                raise ValueError(line)
        except (IndexError, KeyError, ValueError) as e:
            raise _bad(f"malformed PLY header line {line!r}", path, scene) from e
    if cur is not None:
        elements.append(PlyElementSpec(cur[0], cur[1], tuple(cur[2])))
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise _bad(f"unknown PLY format {fmt!r}", path, scene)
    return PlyHeader(fmt, tuple(elements), tuple(comments), stop + 1)


def _scalar_dtype(spec: PlyElementSpec, order: str) -> np.dtype:
    return np.dtype([(p.name, order + p.dtype) for p in spec.properties])


def read_elements(
    path: str | Path, names: Iterable[str], *, scene: str | None = None
) -> dict[str, np.ndarray]:
    """Structured arrays (native byte order) for the elements ``names``; others are skipped.

    A list property of constant length L is returned as an (count, L) sub-array field.
    """
    path = Path(path)
    want = list(names)
    header = read_header(path, scene=scene)
    for n in want:
        if header.element(n) is None:
            have = ", ".join(e.name for e in header.elements) or "none"
            raise _bad(f"PLY has no element {n!r} (has: {have})", path, scene)
    if header.format == "ascii":
        return _read_with_plyfile(path, want, scene)
    order = "<" if header.format == "binary_little_endian" else ">"
    data = np.fromfile(path, dtype=np.uint8)
    pos = header.header_bytes
    out: dict[str, np.ndarray] = {}
    for spec in header.elements:
        if len(out) == len(want):
            break
        if spec.has_list:
            arr, pos = _read_list_element(data, pos, spec, order)
            if arr is None:  # lists of varying length: let plyfile do it
                return _read_with_plyfile(path, want, scene)
        else:
            dt = _scalar_dtype(spec, order)
            need = spec.count * dt.itemsize
            if pos + need > len(data):
                raise _bad(
                    f"truncated: element {spec.name!r} needs {need} bytes at offset {pos}, "
                    f"the file has {len(data) - pos}",
                    path,
                    scene,
                )
            arr = np.frombuffer(data, dtype=dt, count=spec.count, offset=pos)
            pos += need
        if spec.name in want:
            out[spec.name] = arr.astype(arr.dtype.newbyteorder("="))
    return out


def _read_list_element(
    data: np.ndarray, pos: int, spec: PlyElementSpec, order: str
) -> tuple[np.ndarray | None, int]:
    """Read a binary element whose list properties all have one constant length, or None."""
    if spec.count == 0:
        return np.zeros(0, dtype=[(p.name, p.dtype) for p in spec.properties]), pos
    # Guess each list's length from the first record, then verify every record.
    fields: list[tuple] = []
    lengths: dict[str, int] = {}
    probe = pos
    for p in spec.properties:
        if p.list_len_dtype is None:
            fields.append((p.name, order + p.dtype))
            probe += np.dtype(p.dtype).itemsize
            continue
        ln_dt = np.dtype(order + p.list_len_dtype)
        if probe + ln_dt.itemsize > len(data):
            return None, pos
        n = int(np.frombuffer(data, dtype=ln_dt, count=1, offset=probe)[0])
        lengths[p.name] = n
        fields.append((p.name + "\nlen", ln_dt.str))
        fields.append((p.name, order + p.dtype, (n,)))
        probe += ln_dt.itemsize + n * np.dtype(p.dtype).itemsize
    dt = np.dtype(fields)
    need = spec.count * dt.itemsize
    if pos + need > len(data):
        return None, pos
    rec = np.frombuffer(data, dtype=dt, count=spec.count, offset=pos)
    if any(np.any(rec[name + "\nlen"] != n) for name, n in lengths.items()):
        return None, pos
    out = np.empty(spec.count, dtype=[f for f in fields if not f[0].endswith("\nlen")])
    for p in spec.properties:
        out[p.name] = rec[p.name]
    return out, pos + need


def _read_with_plyfile(path: Path, want: list[str], scene: str | None) -> dict[str, np.ndarray]:
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path), mmap=False)
        return {n: np.array(ply[n].data) for n in want}
    except Exception as e:  # plyfile raises several unrelated types for bad files
        raise _bad(f"cannot parse PLY ({e})", path, scene) from e


def require_properties(
    arr: np.ndarray, names: Iterable[str], path: str | Path, *, scene: str | None = None
) -> None:
    """Fail clearly when an element lacks properties the reader needs (matched by name)."""
    have = arr.dtype.names or ()
    missing = [n for n in names if n not in have]
    if missing:
        raise _bad(
            f"PLY element lacks properties {missing} (has: {list(have)})",
            Path(path),
            scene,
            "this is not the expected mesh file of the dataset; check the file name",
        )


_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
          "f4": "float", "f8": "double"}  # fmt: skip


def write_ply(
    path: str | Path,
    elements: Mapping[str, np.ndarray],
    *,
    comments: Iterable[str] = (),
    list_len_types: Mapping[str, str] | None = None,
) -> None:
    """Write structured arrays as binary little-endian PLY elements, in the given order.

    A sub-array field (e.g. ``("vertex_indices", "i4", (3,))``) becomes a list property of
    that fixed length, with a ``uchar`` length unless ``list_len_types`` names another type.
    Everything is written with numpy in one pass (plyfile writes lists one row at a time).
    """
    lens = dict(list_len_types or {})
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments)]
    blocks = []
    for name, arr in elements.items():
        header.append(f"element {name} {len(arr)}")
        fields: list[tuple] = []  # (name in the record, dtype[, shape])
        values: list[object] = []  # what goes into that slot
        for field in arr.dtype.names or ():
            dt = arr.dtype.fields[field][0]
            base = dt.base if dt.shape else dt
            code = base.kind + str(base.itemsize)
            if dt.shape:
                (n,) = dt.shape
                ln = np.dtype(lens.get(field, "u1"))
                ln_code = ln.kind + str(ln.itemsize)
                header.append(f"property list {_NAMES[ln_code]} {_NAMES[code]} {field}")
                fields += [(field + "\nlen", "<" + ln_code), (field, "<" + code, (n,))]
                values += [n, arr[field]]
            else:
                header.append(f"property {_NAMES[code]} {field}")
                fields.append((field, "<" + code))
                values.append(arr[field])
        out = np.empty(len(arr), dtype=fields)
        for f, v in zip(fields, values):
            out[f[0]] = v
        blocks.append(out.tobytes())
    with open(path, "wb") as fh:
        fh.write(("\n".join([*header, "end_header"]) + "\n").encode("ascii"))
        for b in blocks:
            fh.write(b)
