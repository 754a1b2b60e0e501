"""S3DIS classes as its files spell them, as s3dis13 train ids (points and 2D-3D-S images).

An object file's class is its name's prefix before the first ``_``; ``stairs`` -> clutter and
``bookcase`` -> the label table's ``bookshelf``. Any other prefix is an error, or with
``unknown_class="ignore"`` its points are labelled -1 (and the reader warns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tttkd.core import DatasetError, get_label_set

# File-name class tokens of S3DIS, in train-id order, and the ones renamed for the label table.
FILE_CLASSES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
)  # fmt: skip
CLASS_ALIASES = {"bookcase": "bookshelf", "stairs": "clutter"}
LABEL_SET = "s3dis13"


def class_train_id(token: str) -> int | None:
    """S3DIS train id of a file-name class token (``stairs`` -> clutter); None if unknown."""
    ls = get_label_set(LABEL_SET)
    name = CLASS_ALIASES.get(token, token)
    return ls.index(name) if name in ls.class_names else None


def file_class(f: Path, unknown_class: str, scene_id: str) -> int | None:
    """The train id an object file's name gives its points; None for an unknown class when
    ``unknown_class="ignore"`` (else that is an error)."""
    token = f.name.split("_", 1)[0].removesuffix(".txt")
    tid = class_train_id(token)
    if tid is None and unknown_class != "ignore":
        raise DatasetError(
            f"unknown S3DIS class {token!r} (known: {', '.join(FILE_CLASSES)}, stairs)",
            file=f,
            scene=scene_id,
            fix="remove or rename the file, or pass unknown_class='ignore' to label its points -1",
        )
    return tid


def semantic_label_train_ids(labels: list[str]) -> np.ndarray:
    """int16 lookup for 2D-3D-S ``assets/semantic_labels.json``: entry index -> train id.

    Entries are ``class_instance_roomType_roomNum_area``; ``<UNK>`` (entry 0) -> -1.
    """
    out = np.full(len(labels), -1, dtype=np.int16)
    for i, entry in enumerate(labels):
        tid = class_train_id(entry.split("_", 1)[0])
        if tid is not None:
            out[i] = tid
    return out


def decode_semantic_png(rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Train ids (H, W) of a 2D-3D-S semantic PNG (index = R*65536 + G*256 + B; 0x0D0D0D and
    indices beyond the table = -1)."""
    idx = rgb[..., 0].astype(np.int64) * 65536 + rgb[..., 1].astype(np.int64) * 256 + rgb[..., 2]
    out = np.full(idx.shape, -1, dtype=np.int16)
    ok = (idx < len(lut)) & (idx != 0x0D0D0D)
    out[ok] = lut[idx[ok]]
    return out
