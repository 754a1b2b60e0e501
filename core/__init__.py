"""The core every stage shares: the scene record readers produce, the label sets, the errors.

Readers, the cache, the model and adaptation all import these from ``tttkd.core`` (never from
its modules), so the record and the error types have one definition.
"""

from tttkd.core.errors import DatasetError, TttkdError
from tttkd.core.files import require_regular_file
from tttkd.core.labels import (
    DATASET_LABEL_SET,
    LABEL_SETS,
    LabelSet,
    get_label_set,
    shared_classes,
    source_to_target,
    target_eval_mask,
)
from tttkd.core.scene import (
    IGNORE_INDEX,
    Codec,
    Frame,
    ImageRef,
    Scene,
    as_path,
    project,
    scale_intrinsics,
)

__all__ = [
    "DATASET_LABEL_SET",
    "IGNORE_INDEX",
    "LABEL_SETS",
    "Codec",
    "DatasetError",
    "Frame",
    "ImageRef",
    "LabelSet",
    "Scene",
    "TttkdError",
    "as_path",
    "get_label_set",
    "project",
    "require_regular_file",
    "scale_intrinsics",
    "shared_classes",
    "source_to_target",
    "target_eval_mask",
]
