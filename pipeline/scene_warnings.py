"""Per-scene warnings of a prep run: counted in the scene's attrs, printed, listed beside the cache.

A scene can be usable and still lose something (labels, frames); that must never be silent.
The CPU stage puts each warning in ``rec.attrs["warnings"]`` (kept in the cache), the result
carries them to the driver, which prints ``WARNING <scene>: ...`` lines in the run summary and
writes ``<out>.warnings.json`` (only when there are any; a later run rewrites it with its own).

Labels: in a labelled split (anything but ``test``) a scene whose every point is ignored fails,
and more than ``LABEL_LOSS_WARN`` of its points ignored is a warning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tttkd.core import DatasetError

LABEL_LOSS_WARN = 0.5  # fraction of a scene's points with the ignore label that is worth a warning
UNLABELLED_SPLITS = frozenset({"test"})


def check_labels(
    label: np.ndarray, split: str | None, scene_id: str, ignore_index: int = -1
) -> tuple[dict, list[str]]:
    """Counts of ignored labels (for the attrs) and the warnings; raises when all are lost."""
    n = int(len(label))
    ignored = int(np.count_nonzero(np.asarray(label) == ignore_index))
    frac = ignored / n if n else 0.0
    labelled = split not in UNLABELLED_SPLITS
    if labelled and n and ignored == n:
        raise DatasetError(
            f"every point's label is ignored ({n} points) in the labelled split {split!r}: the "
            "annotation files name no class of the label set",
            scene=scene_id,
            fix="check the scene's annotation files and the label map (or --label-set)",
        )
    warnings = []
    if labelled and frac > LABEL_LOSS_WARN:
        warnings.append(
            f"{ignored} of {n} points ({frac:.0%}) have no label (ignored in training and "
            f"scoring; warned above {LABEL_LOSS_WARN:.0%})"
        )
    counts = {"points": n, "ignored": ignored, "ignored_fraction": frac, "warning": None}
    if warnings:
        counts["warning"] = warnings[0]
    return counts, warnings


def warnings_url(out: str) -> str:
    return out.rstrip("/") + ".warnings.json"


def report_warnings(
    out: str, results: Sequence[Any], echo: Callable[[str], None], storage_options: dict | None
) -> dict[str, list[str]]:
    """Print every scene's warnings and list them in ``<out>.warnings.json``."""
    per_scene = {r.scene_id: list(r.warnings) for r in results if getattr(r, "warnings", ())}
    if not per_scene:
        return per_scene
    import fsspec

    for sid, items in sorted(per_scene.items()):
        for w in items:
            echo(f"WARNING {sid}: {w}")
    url = warnings_url(out)
    with fsspec.open(url, "w", **(storage_options or {})) as f:
        json.dump({"cache": out, "scenes": per_scene}, f, indent=1)
    echo(f"warnings of {len(per_scene)} scenes listed in {url}")
    return per_scene


def dropped_frames_warning(frames_info: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """One warning listing every frame the scene lost (unreadable, bad size, bad pose), with
    its reason; reasons in ``ignore`` (a frame that simply sees no point) are not losses."""
    dropped = [(n, r) for n, r in frames_info.get("dropped", []) if r not in ignore]
    if not dropped:
        return []
    available = frames_info.get("available", "?")
    listed = "; ".join(f"{name}: {reason}" for name, reason in dropped)
    return [f"{len(dropped)} of {available} frames dropped: {listed}"]
