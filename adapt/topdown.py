"""Top-down pictures of a scene's labels: ground truth next to each method's prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_topdown(
    xyz: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    palette: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] = (),
    max_height: float | None = None,
) -> Path:
    """One panel per (title, labels) seen from above; ignored (-1) points are hidden.

    Points are drawn lowest first so the top surfaces (furniture over floor) stay visible;
    ``max_height`` drops everything above it (e.g. the ceiling).
    """
    from tttkd.adapt.plots import pyplot

    plt = pyplot()
    keep = np.ones(len(xyz), bool) if max_height is None else xyz[:, 2] <= max_height
    order = np.argsort(xyz[:, 2][keep])
    pts = xyz[keep][order]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    used: set[int] = set()
    for ax, (title, labels) in zip(axes[0], panels):
        lab = np.asarray(labels)[keep][order]
        vis = lab >= 0
        used |= set(np.unique(lab[vis]).tolist())
        ax.scatter(pts[vis, 0], pts[vis, 1], c=palette[lab[vis]] / 255.0, s=2, linewidths=0)
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if class_names:
        from matplotlib.patches import Patch

        handles = [Patch(color=palette[i] / 255.0, label=class_names[i]) for i in sorted(used)]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), frameon=False)
    fig.tight_layout(rect=(0, 0.08 if class_names else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
