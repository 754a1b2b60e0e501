"""One real teacher cache for every training test, built once per session with the real prep.

Exact-format synthetic ScanNet (3 train + 1 val rooms) -> ``run_prep`` with the tiny test
teacher -> a Zarr cache on disk. Coarse voxels (10 cm in the cache, 20 cm in training) keep a
training step well under a second on 2 CPU cores.
"""

from __future__ import annotations

import pytest

from tests.tiny_prep import tiny_prep_config, write_rooms

# the tiny recipe every training test starts from (the paper's recipe otherwise)
TINY_SETS = [
    "model.arch=minkunet_test",
    "model.kd_hidden=16",
    "data.voxel_size=0.2",
    "data.batch_size=2",
    "runtime.num_workers=0",
    "runtime.progress=false",
    "runtime.tensorboard=false",
]


@pytest.fixture(scope="session")
def train_cache(tmp_path_factory) -> str:
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.run import run_prep

    base = tmp_path_factory.mktemp("train_cache")
    root = base / "scannet"
    write_rooms(root, ["train"] * 3 + ["val"], views=3, spacing=0.08)
    out = base / "feats.zarr"
    config = tiny_prep_config(root, out, voxel_size=0.1)
    report = run_prep(config, SerialExecutor(), progress=False, echo=lambda s: None)
    assert report.exit_code == 0 and len(report.done) == 4, report.failed
    return str(out)


@pytest.fixture
def tiny_sets() -> list[str]:
    return list(TINY_SETS)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks gain nothing from threads, and OpenMP threads on a shared CI machine
    can slow a step twentyfold; tests that need threads set them themselves."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
