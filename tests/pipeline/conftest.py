"""The end-to-end prep tests' rooms and serial reference cache, built once per session."""

from __future__ import annotations

import pytest

from tests.pipeline.prep_runs import FIRST4, N_SCENES
from tests.tiny_prep import tiny_prep_config, write_rooms
from tttkd.pipeline.executors import SerialExecutor
from tttkd.pipeline.run import run_prep


@pytest.fixture(scope="session")
def prep_rooms(tmp_path_factory):
    """Eight synthetic ScanNet rooms (6 train, 2 val) and their rendered truths by scene id."""
    root = tmp_path_factory.mktemp("scannet")
    truths = write_rooms(root, ["train"] * 6 + ["val"] * 2, views=3, spacing=0.06)
    assert len(truths) == N_SCENES
    return root, {t.scene_id: t for t in truths}


@pytest.fixture(scope="session")
def serial_cache(prep_rooms, tmp_path_factory):
    """The first four rooms prepared serially: the reference every executor must equal."""
    root, _ = prep_rooms
    out = tmp_path_factory.mktemp("serial") / "feats.zarr"
    report = run_prep(tiny_prep_config(root, out, scenes=FIRST4), SerialExecutor(), progress=False)
    assert report.exit_code == 0 and len(report.done) == 4
    return out
