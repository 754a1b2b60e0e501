"""Which reader module serves which dataset name: one explicit table, imported lazily.

No star-import side effects (STYLE.md, "what we avoid" 1): a reader that fails to import
fails here, naming the module and the import error, instead of being silently absent.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tttkd.pipeline.errors import DatasetError
from tttkd.pipeline.scene import Scene


@dataclass(frozen=True)
class DatasetInfo:
    """What prep needs to know about a dataset before reading any scene."""

    name: str
    module: str  # dotted module with list_scenes(root, split=None) and load_scene(root, id, **o)
    has_images: bool  # False: points only (KD needs images; prep asks for --no-images)
    label_set: str | None  # data_cards label set; None = the user must say (--label-set)
    default_max_images: int | None  # None = every frame the reader gives (ScanNet 25k subset)
    points_only: tuple[tuple[str, Any], ...] = ()  # reader options that skip frames entirely
    label_set_option: str | None = None  # reader option that receives --label-set, if any


_MOD = "tttkd.pipeline.datasets."
DATASETS: dict[str, DatasetInfo] = {
    "scannet": DatasetInfo(
        "scannet", _MOD + "scannet", True, "scannet20", None, (("frames", None),)
    ),
    "s3dis": DatasetInfo("s3dis", _MOD + "s3dis", True, "s3dis13", 50, (("with_frames", False),)),
    "matterport3d": DatasetInfo(
        "matterport3d", _MOD + "matterport3d", True, "matterport21", 50, (("frames", None),)
    ),
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


def reader(name: str) -> ModuleType:
    """The reader module of ``name`` (imported on first use)."""
    info = dataset_info(name)
    try:
        return importlib.import_module(info.module)
    except ImportError as e:
        raise ImportError(
            f"the {name} reader ({info.module}) cannot be imported: {e}; "
            "reinstall tttkd (pip install -e .) or report the error"
        ) from e


def list_scenes(name: str, root: str, split: str | None = None, **options: Any) -> list[str]:
    """Scene ids; of ``options`` (the reader options of the run) only those the reader's
    ``list_scenes`` accepts are passed (e.g. ScanNet ``splits_dir``)."""
    fn = reader(name).list_scenes
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return list(fn(root, split=split, **options))


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
            fix="correct that line of the split file (or the --scene value)",
        )
    return scene_id
