"""The demo's concurrent runs: results in call order, failures raised, and a training run in its
own process gives exactly the weights it gives run here, one after another."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from tttkd.demo import _train_one
from tttkd.model.config import load_config
from tttkd.parallel_runs import run_in_processes

TINY = [
    "model.arch=minkunet_test",
    "model.kd_hidden=16",
    "data.voxel_size=0.2",
    "data.batch_size=2",
    "data.max_images=2",
    "epochs=1",
    "runtime.threads=1",
    "runtime.num_workers=0",
    "runtime.progress=false",
    "runtime.tensorboard=false",
]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> str:
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    base = tmp_path_factory.mktemp("parallel_runs")
    write_scannet_dataset(
        base / "scannet", 2, frames=("25k",), splits=["train"] * 2, image_size=(64, 48),
        views=2, domain=Domain(spacing=0.08),
    )  # fmt: skip
    cfg = PrepConfig(
        dataset="scannet",
        root=str(base / "scannet"),
        out=str(base / "feats.zarr"),
        teacher="test_vit_tiny",
        image_size=28,
        reader_options={"frames": "25k"},
        voxel_size=0.1,
    )
    report = run_prep(cfg, SerialExecutor(), progress=False, echo=lambda s: None)
    assert report.exit_code == 0, report.failed
    return cfg.out


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "last.safetensors"))


def test_results_come_back_in_call_order():
    seen = []
    calls = [(math.factorial, (n,)) for n in (6, 3, 5)]
    got = run_in_processes(calls, processes=2, on_done=lambda i, r: seen.append((i, r)))
    assert got == [720, 6, 120]
    assert sorted(seen) == [(0, 720), (1, 6), (2, 120)]
    assert run_in_processes(calls, processes=1) == got


def test_a_failure_is_raised_after_the_others_end():
    with pytest.raises(ValueError, match="math domain error"):
        run_in_processes([(math.sqrt, (4.0,)), (math.sqrt, (-1.0,))], processes=2)


@pytest.mark.slow
def test_concurrent_trainings_give_the_sequential_weights(tiny_cache, tmp_path):
    cfgs = {
        "joint": load_config(overrides=[*TINY, "loss.kd=true"]),
        "source_only": load_config(overrides=[*TINY, "loss.kd=false"]),
    }
    runs = {}
    for mode, processes in (("sequential", 1), ("concurrent", 2)):
        calls = [
            (_train_one, (name, cfg, tiny_cache, tmp_path / mode / name))
            for name, cfg in cfgs.items()
        ]
        run_in_processes(calls, processes=processes)
        runs[mode] = {name: _weights(tmp_path / mode / name) for name in cfgs}
    for name in cfgs:
        seq, par = runs["sequential"][name], runs["concurrent"][name]
        assert seq.keys() == par.keys()
        assert all(torch.equal(seq[k], par[k]) for k in seq), name
    # and the two models differ (L_2D changes the training), so the comparison can fail
    joint, src = runs["sequential"]["joint"], runs["sequential"]["source_only"]
    shared = [k for k in joint if k in src and joint[k].shape == src[k].shape]
    assert any(not torch.equal(joint[k], src[k]) for k in shared)


def test_runs_start_without_dask_malloc_setting(monkeypatch):
    # a local Dask cluster sets it in this process's environment; a run started with it keeps
    # every tensor above 128 KiB in a fresh mmap (page faults)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    got = run_in_processes([(os.getenv, ("MALLOC_TRIM_THRESHOLD_",))] * 2, processes=2)
    assert got == [None, None]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # put back here
