"""The smallest real prep, shared by the tests that build a cache: synthetic ScanNet rooms in
the exact on-disk format (25k frames), and a ``PrepConfig`` for the tiny test teacher.

Import as ``from tests.tiny_prep import ...`` (pytest's importlib mode makes ``tests`` a
namespace package rooted at this folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# the teacher options of every tiny prep: the tiny test ViT at 28 px, 25k-subset frames
TINY_TEACHER: dict[str, Any] = dict(
    teacher="test_vit_tiny", image_size=28, reader_options={"frames": "25k"}
)


def tiny_prep_config(root: Path, out: Path, **kw: Any) -> Any:
    """``PrepConfig`` of ScanNet ``root`` into ``out`` with the tiny teacher; ``kw`` override."""
    from tttkd.pipeline.plan import PrepConfig

    return PrepConfig(dataset="scannet", root=str(root), out=str(out), **{**TINY_TEACHER, **kw})


def write_rooms(
    root: Path, splits: list[str], *, views: int, spacing: float, image_size=(64, 48)
) -> list:
    """Synthetic ScanNet rooms at ``root``, one per split entry (25k frames); their truths."""
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    return write_scannet_dataset(
        root,
        len(splits),
        frames=("25k",),
        splits=splits,
        image_size=image_size,
        views=views,
        domain=Domain(spacing=spacing),
    )
