"""The frozen 2D teacher: which teacher made a cache (``TeacherSpec``) and how it is built.

Import from ``tttkd.pipeline.teacher`` only. Inside: ``frozen`` (the registry, ``Teacher``,
``load_teacher``, input and grid sizes), ``backbones`` (the non-ViT and demo encoders),
``weights`` (local weight files: reading, checking, hashing).
"""

from tttkd.pipeline.teacher.frozen import (
    TEACHERS,
    Teacher,
    TeacherSpec,
    auto_batch_size,
    grid_size,
    input_size,
    load_teacher,
)

__all__ = [
    "TEACHERS",
    "Teacher",
    "TeacherSpec",
    "auto_batch_size",
    "grid_size",
    "input_size",
    "load_teacher",
]
