"""S3DIS ``X Y Z R G B`` text files, read fast and robustly against the real corrupted bytes.

The distributed files contain a handful of control characters inside numbers (FORMATS.md §2.1):
``185\\x00187`` (a NUL where a space belongs), ``103.0\\x100000`` and ``-9.1\\x160`` (a control
byte where a digit belongs), ``2\\x111.000000``. ``np.loadtxt`` fails on them. Here, only
the lines that contain a control byte (other than ``\\t \\n \\r``) are repaired, one by one:

1. delete the control bytes; if the line now holds 6 numbers with colours in 0..255, keep it
   (``-9.1\\x160`` -> ``-9.10``; a digit the glitch replaced is lost, as in every other reader);
2. else turn them into spaces (``185\\x00187 182`` -> ``185 187 182``, the exact original);
3. else drop the line and count it.

A repaired line is kept only when its point lies within the robust extent of the file's clean
lines (1st-99th percentile, widened by half that range plus ``PLAUSIBLE_MARGIN_M``): a control
byte in place of a decimal point (``-17\x01337`` -> ``-17337``) is dropped, and its line number
reported (``TextCloud.implausible``). Colours outside 0..255 are clipped and counted
(``TextCloud.clipped``); the reader warns about both.

The whole cleaned buffer is then parsed in one ``np.fromstring`` call (about as fast as
numpy's C ``loadtxt``, ~1 s per million lines); only when that fails (a line without 6
numbers) are the lines that are not six numbers found by one regular expression, dropped and
counted, and the rest parsed again (~2 s per million lines).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tttkd.core import DatasetError, require_regular_file

PLAUSIBLE_MARGIN_M = 1.0  # a repaired point may lie this far (plus half the extent) outside
_CTRL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CTRL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))
_NUM = rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
# A line that is neither six numbers nor blank (with its newline), found at C speed.
_BAD_LINE = re.compile(
    rb"^(?![ \t]*" + _NUM + rb"(?:[ \t]+" + _NUM + rb"){5}[ \t\r]*$|[ \t\r]*$).*(?:\n|$)", re.M
)


@dataclass(frozen=True)
class TextCloud:
    """Points of one text file: xyz float64 (N, 3), rgb uint8 (N, 3), and what was fixed."""

    xyz: np.ndarray
    rgb: np.ndarray
    repaired: int  # lines with control bytes that were recovered
    skipped: int  # lines that could not be read as 6 numbers and were dropped
    implausible: tuple[int, ...] = ()  # line numbers of repairs far outside the file's extent
    clipped: int = 0  # points whose colour was outside 0..255 (clipped, and warned about)
    lines: int = 0  # lines in the file as read, an unended last one too (room-file check)


def _six_numbers(line: bytes) -> list[float] | None:
    tokens = line.split()
    if len(tokens) != 6:
        return None
    try:
        vals = [float(t) for t in tokens]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in vals):
        return None
    return vals


def repair_line(line: bytes) -> bytes | None:
    """The line with its control bytes removed (or, failing that, made spaces); None if hopeless."""
    for candidate in (_CTRL.sub(b"", line), _CTRL.sub(b" ", line)):
        vals = _six_numbers(candidate)
        if vals is not None and all(0.0 <= v <= 255.0 for v in vals[3:]):
            return candidate
    return None


def _robust_extent(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounds that hold the file's clean points with a wide margin (None: too few points)."""
    try:
        flat = np.fromstring(data.strip(), dtype=np.float64, sep=" ")
    except ValueError:
        flat = np.empty(0)
    if flat.size % 6:
        flat = _parse_lines(data)[0].reshape(-1)
    xyz = flat.reshape(-1, 6)[:, :3]
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if len(xyz) < 10:
        return None
    lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
    margin = 0.5 * (hi - lo) + PLAUSIBLE_MARGIN_M
    return lo - margin, hi + margin


def _keep_plausible(pieces: list, implausible: list[int]) -> tuple[bytes, int]:
    """Join ``pieces``; a repaired line ``(line number, bytes)`` is kept only when its xyz lies
    within the robust extent of the file's clean lines, else its number goes to ``implausible``."""
    extent = _robust_extent(b"".join(p for p in pieces if isinstance(p, bytes)))
    out, repaired = [], 0
    for p in pieces:
        if isinstance(p, bytes):
            out.append(p)
            continue
        number, fixed = p
        xyz = np.array([float(t) for t in fixed.split()[:3]])
        if extent is not None and not ((xyz >= extent[0]) & (xyz <= extent[1])).all():
            implausible.append(number)
            continue
        repaired += 1
        out.append(fixed + b"\n")
    return b"".join(out), repaired


def _repair_control_bytes(data: bytes) -> tuple[bytes, int, int, tuple[int, ...]]:
    if len(data.translate(None, _CTRL_BYTES)) == len(data):  # 4x faster than a regex search
        return data, 0, 0, ()
    skipped = 0
    pieces: list = []
    implausible: list[int] = []
    last = counted_to = lines_before = 0
    for m in _CTRL.finditer(data):
        if m.start() < last:
            continue  # this line was handled already
        start = data.rfind(b"\n", 0, m.start()) + 1
        end = data.find(b"\n", m.start())
        end = len(data) if end < 0 else end + 1
        pieces.append(data[last:start])
        fixed = repair_line(data[start:end].rstrip(b"\r\n"))
        if fixed is None:
            skipped += 1
        else:
            lines_before += data.count(b"\n", counted_to, start)  # incremental: O(file)
            counted_to = start
            pieces.append((lines_before + 1, fixed))
        last = end
    if not pieces:
        return data, 0, 0, ()
    pieces.append(data[last:])
    joined, repaired = _keep_plausible(pieces, implausible)
    return joined, repaired, skipped, tuple(implausible)


def _parse_lines(data: bytes) -> tuple[np.ndarray, int]:
    rows = []
    skipped = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        vals = _six_numbers(line)
        if vals is None:
            skipped += 1
        else:
            rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6), skipped


def parse_xyzrgb(data: bytes) -> TextCloud:
    """Parse the bytes of one S3DIS text file (Aligned ``%.3f``/int or v1.2 ``%.6f`` columns)."""
    lines = data.count(b"\n") + int(bool(data) and not data.endswith(b"\n"))
    data, repaired, skipped, implausible = _repair_control_bytes(data)
    body = data.strip()
    n_lines = body.count(b"\n") + 1 if body else 0
    values = None
    if n_lines:
        try:
            flat = np.fromstring(body, dtype=np.float64, sep=" ")
        except ValueError:
            flat = None
        if flat is not None and flat.size == 6 * n_lines:
            values = flat.reshape(n_lines, 6)
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                skipped += int(bad.sum())
                values = values[~bad]
    if values is None:  # some line is not six numbers: drop those lines, then parse again
        body, more = _BAD_LINE.subn(b"", body)
        skipped += more
        try:
            values = np.fromstring(body, dtype=np.float64, sep=" ").reshape(-1, 6)
        except ValueError:
            values, more = _parse_lines(body)
            skipped += more
    colour = np.rint(values[:, 3:])
    clipped = int(((colour < 0) | (colour > 255)).any(axis=1).sum())
    rgb = np.clip(colour, 0, 255).astype(np.uint8)
    return TextCloud(
        xyz=values[:, :3].copy(),
        rgb=rgb,
        repaired=repaired,
        skipped=skipped,
        implausible=implausible,
        clipped=clipped,
        lines=lines,
    )


def read_xyzrgb(path: str | Path, *, scene: str | None = None) -> TextCloud:
    """Read one ``X Y Z R G B`` file (never modifies it)."""
    require_regular_file(path, scene)  # a FIFO would block forever
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise _unreadable(e, path, scene) from e
    return parse_xyzrgb(data)


def count_lines(path: str | Path, *, scene: str | None = None) -> int:
    """Lines in a file (an unended last one too), read in blocks: a room file can be 500 MB."""
    require_regular_file(path, scene)
    n, last = 0, b"\n"
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 23):
                n += block.count(b"\n")
                last = block[-1:]
    except OSError as e:
        raise _unreadable(e, path, scene) from e
    return n + (last != b"\n")


def _unreadable(e: OSError, path: str | Path, scene: str | None) -> DatasetError:
    """The one error for an S3DIS text file the system cannot read (permissions, I/O)."""
    return DatasetError(
        f"cannot read ({e.strerror})",
        file=path,
        scene=scene,
        fix="check that the S3DIS folder is completely extracted and readable",
    )


def sniff_version(path: str | Path) -> str | None:
    """``"aligned"`` (``%.3f`` coords, integer colours) or ``"raw"`` (six ``%.6f``), from line 1."""
    require_regular_file(path)  # a FIFO would block forever
    with open(path, "rb") as f:
        first = _CTRL.sub(b"", f.readline()).split()
    if len(first) != 6:
        return None
    decimals = [len(t.split(b".")[1]) if b"." in t else 0 for t in first]
    if decimals[3:] == [0, 0, 0]:
        return "aligned"
    if all(d == 6 for d in decimals):
        return "raw"
    return None
