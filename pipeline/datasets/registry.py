"""Which reader module serves which dataset name: one explicit table, imported lazily.

No star-import side effects (STYLE.md, "what we avoid" 1): a reader that fails to import
fails here, naming the module and the import error, instead of being silently absent.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, cast

from tttkd.core import DatasetError, Scene
from tttkd.pipeline.datasets.protocol import Reader


@dataclass(frozen=True)
class DatasetInfo:
    """What prep needs to know about a dataset before reading any scene."""

    name: str
    module: str  # dotted name of a module that is a protocol.Reader
    has_images: bool  # False: points only (KD needs images; prep asks for --no-images)
    label_set: str | None  # data_cards label set; None = the user must say (--label-set)
    default_max_images: int | None  # None = every frame the reader gives (ScanNet 25k subset)
    label_set_option: str | None = None  # reader option that receives --label-set, if any


_MOD = "tttkd.pipeline.datasets."
DATASETS: dict[str, DatasetInfo] = {
    "scannet": DatasetInfo("scannet", _MOD + "scannet", True, "scannet20", None),
    "s3dis": DatasetInfo("s3dis", _MOD + "s3dis", True, "s3dis13", 50),
    "matterport3d": DatasetInfo("matterport3d", _MOD + "matterport3d", True, "matterport21", 50),
    "pointcept": DatasetInfo(
        "pointcept", _MOD + "pointcept", False, None, 50, label_set_option="label_set"
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None


def reader(name: str) -> Reader:
    """The reader module of ``name`` (imported on first use), called as a ``Reader``."""
    info = dataset_info(name)
    try:
        return cast(Reader, importlib.import_module(info.module))
    except ImportError as e:
        raise ImportError(
            f"the {name} reader ({info.module}) cannot be imported: {e}; "
            "reinstall tttkd (pip install -e .) or report the error"
        ) from e


def list_scenes(name: str, root: str, split: str | None = None, **options: Any) -> list[str]:
    """Scene ids; ``options`` are the run's reader options (the reader uses those it lists by,
    e.g. ScanNet ``splits_dir``, and ignores the rest)."""
    return list(reader(name).list_scenes(root, split=split, **options))


def load_scene(name: str, root: str, scene_id: str, **options: Any) -> Scene:
    check_scene_id(scene_id)
    return reader(name).load_scene(root, scene_id, **options)


def check_scene_id(scene_id: str) -> str:
    """Refuse an id (from a split file or the command line) that would lead outside the root."""
    parts = str(scene_id).replace("\\", "/").split("/")
    if not scene_id or str(scene_id).startswith(("/", "\\")) or ".." in parts or "" in parts:
        raise DatasetError(
            f"unsafe scene id {scene_id!r}: ids are relative names inside the dataset root "
            "(no '..', no absolute path, no empty part)",
            scene=str(scene_id),
            fix="correct that line of the split file (or the --scenes value)",
        )
    return scene_id
