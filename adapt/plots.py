"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_class_iou", "plot_scene_gain", "pyplot"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported lazily: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_class_iou(result: dict[str, Any], path: Path) -> Path:
    """Grouped bars: IoU per scored class, one bar per method."""
    plt = pyplot()
    classes = result["evaluation"]["scored_classes"]
    methods = list(result["methods"])
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(classes) * max(1, len(methods) / 2)), 4))
    for i, name in enumerate(methods):
        iou = result["methods"][name]["overall"]["iou"]
        vals = [100 * (iou.get(c) if iou.get(c) is not None else np.nan) for c in classes]
        miou = result["methods"][name]["overall"]["miou"]
        label = f"{name} ({100 * miou:.1f})" if miou is not None else name
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("IoU per class (mIoU in the legend)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scene_gain(result: dict[str, Any], path: Path) -> Path | None:
    """Per-scene mIoU gain over ``source``, sorted, one panel per method (None: no source)."""
    from tttkd.adapt.report import gains_vs_source

    gains = gains_vs_source(result)
    if not gains:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(gains), 1, figsize=(7, 2.6 * len(gains)), squeeze=False)
    for ax, (name, per) in zip(axes[:, 0], gains.items()):
        vals = np.array(sorted(per.values()), dtype=float) * 100
        colours = ["tab:green" if v >= 0 else "tab:red" for v in vals]
        ax.bar(np.arange(len(vals)), vals, color=colours)
        ax.axhline(0, color="black", lw=0.8)
        mean = float(vals.mean()) if len(vals) else 0.0
        better = int((vals > 0).sum())
        ax.set_title(
            f"{name}: mIoU gain per scene vs source (mean {mean:+.1f}, "
            f"{better}/{len(vals)} scenes better)",
            fontsize=9,
        )
        ax.set_ylabel("gain (mIoU points)")
        ax.set_xlabel("scenes, sorted by gain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
