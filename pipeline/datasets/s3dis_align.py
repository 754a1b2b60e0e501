"""2D-3D-S poses into the frame of the S3DIS Aligned version.

The 2D-3D-S frames are in the frame of the non-aligned v1.2 clouds. With ``version="aligned"``
they are moved into the aligned frame, so points and poses always share one frame:
``p_aligned = Rz(-θ)(p_raw - c) + c`` with θ from ``Area_N_alignmentAngle.txt`` and c the
centre of the room's bounding box (the same in both versions: a 90° turn about c keeps c).
That direction is FORMATS.md §2.4's and is unverified on real data, so
``align_direction="auto"`` (default) checks it: for θ = 90/270 it counts the points that agree
with the depth of a few frames under ``Rz(-θ)`` (``"documented"``) and ``Rz(+θ)``
(``"inverse"``), keeps the documented one unless the other explains over 10 % more points, and
warns when it switches (a 180° error leaves the room's shell in place, so only the furniture
tells them apart).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from tttkd.core import DatasetError, Frame, project
from tttkd.pipeline.datasets.s3dis_layout import VERSION_DIRS

AlignDirection = Literal["auto", "documented", "inverse"]


def read_alignment_angles(path: str | Path) -> dict[str, float]:
    """``Area_N_alignmentAngle.txt`` -> {room: angle in degrees} (``##`` lines are headers)."""
    try:
        text = Path(path).read_bytes().decode("latin-1")
    except OSError as e:
        raise DatasetError(
            f"cannot read the alignment angles ({e.strerror})",
            file=path,
            fix="the file ships in every Area_N folder of S3DIS; restore it, or pass "
            "version='raw' (frames need no alignment there) or frames=None",
        ) from e
    angles = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) != 2 or line.lstrip().startswith("#"):
            continue
        try:
            angles[tokens[0]] = float(tokens[1])
        except ValueError:
            continue
    return angles


def _rz(theta_deg: float) -> np.ndarray:
    """Rotation about +Z; exact for multiples of 90 degrees."""
    q = theta_deg / 90.0
    if abs(q - round(q)) < 1e-9:
        c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(round(q)) % 4]
    else:
        c, s = np.cos(np.deg2rad(theta_deg)), np.sin(np.deg2rad(theta_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def aligned_from_raw(
    theta_deg: float, centre: np.ndarray, direction: Literal["documented", "inverse"]
) -> np.ndarray:
    """4x4 ``p_aligned = Rz(-θ)(p_raw - c) + c`` (``"inverse"``: ``Rz(+θ)``)."""
    R = _rz(-theta_deg if direction == "documented" else theta_deg)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(centre, dtype=np.float64) - R @ np.asarray(centre, dtype=np.float64)
    return T


def depth_agreement(
    xyz: np.ndarray,
    frame: Frame,
    *,
    c2w: np.ndarray | None = None,
    rel_tol: float = 0.05,
    abs_tol: float = 0.02,
) -> tuple[int, int]:
    """(points whose camera depth matches the depth image, points in view with valid depth)."""
    depth = frame.load_depth()
    if depth is None:
        return 0, 0
    h, w = depth.shape
    uv, z = project(xyz, frame.depth_intrinsics(w, h), frame.c2w if c2w is None else c2w)
    ui = np.round(uv[:, 0])
    vi = np.round(uv[:, 1])
    inside = (z > 0) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    d = depth[vi[inside].astype(np.int64), ui[inside].astype(np.int64)]
    valid = d > 0
    ok = valid & (np.abs(d - z[inside]) <= abs_tol + rel_tol * d)
    return int(ok.sum()), int(valid.sum())


def _choose_direction(
    xyz: np.ndarray, frames: list[Frame], theta: float, centre: np.ndarray, scene: str
) -> str:
    rng = np.random.default_rng(0)
    pts = xyz if len(xyz) <= 50_000 else xyz[rng.choice(len(xyz), 50_000, replace=False)]
    probe = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, 5).round().astype(int))]
    score = {}
    for direction in ("documented", "inverse"):
        A = aligned_from_raw(theta, centre, direction)
        counts = [depth_agreement(pts, f, c2w=A @ f.c2w) for f in probe]
        score[direction] = (sum(c[0] for c in counts), sum(c[1] for c in counts))
    (ok_doc, n_doc), (ok_inv, _) = score["documented"], score["inverse"]
    if ok_inv > 1.1 * ok_doc + 10:
        warnings.warn(
            f"{scene}: frames agree with the aligned points only with Rz(+θ), θ={theta:g} "
            f"({ok_inv} vs {ok_doc} points pass the depth test); using that direction",
            stacklevel=4,  # the caller of load_scene (via aligned_from_raw_of_room)
        )
        return "inverse"
    if n_doc and ok_doc < 0.3 * n_doc:
        warnings.warn(
            f"{scene}: only {ok_doc}/{n_doc} points agree with the frames' depth; check that "
            "images_root belongs to this S3DIS version",
            stacklevel=4,  # the caller of load_scene (via aligned_from_raw_of_room)
        )
    return "documented"


def aligned_from_raw_of_room(
    vroot: Path,
    area: int,
    room: str,
    xyz64: np.ndarray,
    frames: list[Frame],
    *,
    direction: AlignDirection,
    scene: str,
) -> np.ndarray:
    """The 4x4 that takes the room's raw-frame poses (2D-3D-S) into the Aligned version: the
    room's alignment angle about its bounding-box centre, in the direction the depth agrees
    with when ``direction`` is "auto" and the angle is not a multiple of 180°."""
    name = f"Area_{area}/Area_{area}_alignmentAngle.txt"
    angles_file = vroot / name
    sibling = vroot.parent / VERSION_DIRS["raw"] / name  # the same file ships with v1.2
    if not angles_file.is_file() and sibling.is_file():
        angles_file = sibling
    angles = read_alignment_angles(angles_file)
    if room not in angles:
        raise DatasetError(
            f"room {room} is not listed in the alignment angles",
            file=angles_file,
            scene=scene,
            fix="restore the file from S3DIS, or pass version='raw' or frames=None",
        )
    theta = angles[room]
    centre = (xyz64.min(axis=0) + xyz64.max(axis=0)) / 2.0
    if direction == "auto":
        flips = not np.isclose(np.mod(theta, 180.0), 0.0)
        direction = (
            _choose_direction(xyz64, frames, theta, centre, scene) if flips else "documented"
        )
    return aligned_from_raw(theta, centre, direction)
