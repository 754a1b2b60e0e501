"""Plan, then execute (STYLE.md 5): the pure part of ``tttkd-prep``.

``PrepConfig`` is everything the user asked for; ``make_plan`` turns it, the scene list and
the ids already complete in the cache into one ``SceneJob`` per scene still to do, plus the
skipped ids. Nothing here reads a dataset, touches the cache or imports Dask, so the plan is
tested on its own and any executor (serial, Dask) runs the same jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from tttkd.pipeline.correspond import CorrespondConfig
from tttkd.pipeline.datasets.registry import dataset_info
from tttkd.pipeline.frames import ImagePolicy, resolve_image_policy
from tttkd.pipeline.voxelize import point_grid_size
from tttkd.settings import resolve_device, setting, to_plain

# uncompressed bytes per item, from the cache layout (DESIGN.md, "The cache")
BYTES_PER_VOXEL = 12 + 3 + 2  # xyz f32[3], rgb u8[3], label i16
BYTES_PER_POINT = 4 + 2  # voxel_of_point i32, full label i16
BYTES_PER_PAIR = 4 + 2 + 8  # corr point i32, image i16, uv f32[2]
BYTES_PER_IMAGE = 36 + 64 + 8 + 8  # K, c2w, size, offsets
FEATURE_BYTES = 2  # float16


@dataclass(frozen=True)
class PrepConfig:
    """One ``tttkd-prep`` run as requested; ``tttkd-prep``'s options are generated from these
    fields (``cli/prep.py``), and the cache root records them (:meth:`to_record`)."""

    dataset: str = setting(help="dataset layout (the tttkd-prep subcommand)")
    root: str = setting(path="dir", help="the dataset folder, exactly as distributed")
    out: str = setting(option="--cache", help="cache location: a path or fsspec URL (feats.zarr)")
    split: str | None = setting(None, help="train / val / test [default: every scene]")
    scenes: tuple[str, ...] = setting(
        (), help="only these scene ids (comma list, repeatable) [default: every listed scene]"
    )
    reader_options: dict = setting(
        default_factory=dict, help="the dataset reader's own options (-o KEY=VALUE)"
    )
    voxel_size: float = setting(
        0.04, min=0, min_open=True, help="network voxel, m (what consumers voxelize at)"
    )
    point_voxel_size: float | None = setting(
        None,
        min=0,
        min_open=True,
        help="grid the cache keeps points on, m [default: voxel size / 4; consumers voxelize "
        "after augmenting, so finer points leave no holes in rotated views]",
    )
    label_mode: Literal["representative", "majority"] = setting(
        "representative", help="voxel label"
    )
    label_set: str | None = setting(
        None, choices="label_set", help="label set [default: the dataset's own]"
    )
    max_images: int | None = setting(
        None,
        min=0,
        help="images per scene, seeded random (0 = all) [default: all for ScanNet 25k, "
        "50 otherwise]",
    )
    seed: int = setting(0, help="image draw seed")
    teacher: str = setting(
        "dinov2_vitl14",
        help="teacher name (dinov2_vit{s,b,l,g}14[_reg], clip_*, sam_*, test_vit_tiny)",
    )
    teacher_weights: str | None = setting(
        None, path="file", help="local weights file (never downloaded)"
    )
    image_size: int | None = setting(
        None, min=1, help="teacher input short side in px [default: the teacher's, 448 for ViTs]"
    )
    device: str = setting(
        "auto", choices="device", help="teacher device: auto = cuda when available, else cpu"
    )
    batch_size: int | None = setting(
        None,
        min=1,
        help="images per teacher forward pass [default: from free GPU memory on CUDA, 8 on CPU]",
    )
    compile_teacher: bool = setting(
        False, help="torch.compile the teacher (compile time per worker; speed-up unmeasured)"
    )
    images_per_task: int = setting(
        64, min=1, help="images (of several scenes) per teacher task on a Dask cluster"
    )
    feature_codec: str = setting("fp16", help="fp16 | bitround<k> | pca<k> | pca<k>+bitround<b>")
    depth_abs_tol: float = setting(
        CorrespondConfig.depth_abs_tol, min=0, help="occlusion test: metres"
    )
    depth_rel_tol: float = setting(
        CorrespondConfig.depth_rel_tol, min=0, help="occlusion test: fraction of the depth"
    )
    zbuffer_cell_px: float | None = setting(
        None,
        min=0,
        min_open=True,
        help="z-buffer cell for frames without depth [default: automatic]",
    )
    no_images: bool = setting(
        False,
        option="--no-images",
        help="points-only cache (no teacher, no correspondences)",
    )
    overwrite: bool = setting(
        False, option="--overwrite", help="delete an existing cache and start again"
    )
    scene_timeout: float | None = setting(
        None,
        min=0,
        min_open=True,
        help="seconds a scene may spend reading and corresponding before it fails (the run "
        "goes on; on Dask the stuck worker is restarted)",
    )
    storage_options: dict | None = setting(
        None, help="fsspec storage options for a remote cache (--storage-option KEY=VALUE)"
    )
    pca_fit_scenes: int = setting(
        4, min=1, help="scenes whose features fit the PCA basis (pca codecs only)"
    )

    def __post_init__(self) -> None:
        dataset_info(self.dataset)  # unknown names fail here, before any work
        object.__setattr__(self, "scenes", tuple(self.scenes))
        object.__setattr__(self, "device", resolve_device(self.device))
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        point_grid_size(self.voxel_size, self.point_voxel_size)  # raises on a bad size
        if self.max_images is not None and self.max_images < 0:
            raise ValueError(f"max_images must be >= 0 (0 = all), got {self.max_images}")
        if self.label_mode not in ("representative", "majority"):
            raise ValueError(f"label_mode must be representative|majority, not {self.label_mode}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.images_per_task < 1:
            raise ValueError(f"images_per_task must be >= 1, got {self.images_per_task}")

    def to_record(self) -> dict:
        """The resolved config as the cache root records it; ``storage_options`` (may hold
        credentials) and ``overwrite`` (a rerun from the record must not delete the cache)
        are left out."""
        out = to_plain(self)
        del out["storage_options"], out["overwrite"]
        return out

    @property
    def point_grid(self) -> float:
        """The grid the cache keeps the scene's points on (``pipeline.voxelize``)."""
        return point_grid_size(self.voxel_size, self.point_voxel_size)

    def load_options(self) -> dict:
        """Options for the reader's ``load_scene``: with ``no_images``, frames are not read;
        a reader that must be told the label set (Pointcept layout) gets ``label_set``."""
        info = dataset_info(self.dataset)
        opts = dict(self.reader_options)
        if opts.get("frames") == "none":  # tttkd-prep --frames none: the reader's frames=None
            opts["frames"] = None
        if self.no_images:
            opts["frames"] = None  # protocol.Reader: no frames are read at all
        if info.label_set_option and self.label_set:
            opts.setdefault(info.label_set_option, self.label_set)
        return opts

    def image_policy(self) -> ImagePolicy:
        info = dataset_info(self.dataset)
        return resolve_image_policy(info.default_max_images, self.max_images, self.seed)

    def correspond_config(self) -> CorrespondConfig:
        return CorrespondConfig(
            depth_abs_tol=self.depth_abs_tol,
            depth_rel_tol=self.depth_rel_tol,
            zbuffer_cell_px=self.zbuffer_cell_px,
            point_spacing=self.point_grid,
        )

    def image_policy_record(self) -> dict:
        """What the cache root records (and compares on rerun) about images and pairing."""
        if self.no_images:
            return {"selection": "none", "no_images": True}
        return {
            **self.image_policy().to_dict(),
            "no_images": False,
            "correspondence": self.correspond_config().to_dict(),
        }

    def content_options(self) -> dict:
        """Other settings that change the scenes' content; a rerun must agree on them too."""
        return {"reader_options": dict(self.reader_options), "label_mode": self.label_mode}


@dataclass(frozen=True)
class SceneJob:
    """Everything one task needs; plain data, so it crosses process boundaries."""

    scene_id: str
    config: PrepConfig
    teacher_spec: dict | None = None  # what the driver resolved; workers must match it
    run_id: str = ""


@dataclass(frozen=True)
class Plan:
    jobs: list[SceneJob]
    skipped: list[str]  # complete in the cache already

    @property
    def scene_ids(self) -> list[str]:
        return [j.scene_id for j in self.jobs]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def make_plan(
    config: PrepConfig,
    listed: Sequence[str],
    complete: Collection[str] = (),
    *,
    teacher_spec: dict | None = None,
    run_id: str = "",
) -> Plan:
    """Jobs for the listed scenes (or ``config.scenes``) that are not complete yet.

    Order follows the reader's listing; complete scenes are skipped, incomplete ones (a
    killed run) are planned again and the cache replaces their leftovers.
    """
    seen: set[str] = set()
    dupes = [s for s in listed if s in seen or seen.add(s)]
    if dupes:
        raise ValueError(f"the reader listed scenes twice: {sorted(set(dupes))[:5]}")
    wanted = list(listed)
    if config.scenes:
        missing = [s for s in config.scenes if s not in seen]
        if missing:
            raise ValueError(
                f"scenes not found in {config.root} (split {config.split}): {missing[:5]}; "
                "check the ids (tttkd-prep DATASET --root ... --dry-run lists the count)"
            )
        keep = set(config.scenes)
        wanted = [s for s in listed if s in keep]
    done = set(complete)
    jobs = [SceneJob(s, config, teacher_spec, run_id) for s in wanted if s not in done]
    return Plan(jobs=jobs, skipped=[s for s in wanted if s in done])


def estimate_scene_bytes(
    *,
    full_points: int,
    voxels: int,
    images: int,
    pairs: int,
    grid_hw: tuple[int, int],
    dim: int,
) -> int:
    """Uncompressed bytes of one scene in the cache (features dominate)."""
    feats = images * grid_hw[0] * grid_hw[1] * dim * FEATURE_BYTES
    return (
        voxels * BYTES_PER_VOXEL
        + full_points * BYTES_PER_POINT
        + pairs * BYTES_PER_PAIR
        + images * BYTES_PER_IMAGE
        + feats
    )
