"""Prep on Dask equals the serial prep bit for bit: a local cluster on all three datasets,
and a user-started ``dask scheduler`` + ``dask worker`` pair (CPU and GPU resources).

Real Dask clusters on 127.0.0.1, the tiny test teacher, real Zarr caches on disk (rooms and
the serial reference cache: ``tests/pipeline/conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.prep_runs import FIRST4, assert_same_contents, contents
from tests.processes import free_port, stop
from tests.tiny_prep import TINY_TEACHER, tiny_prep_config
from tttkd.pipeline.cache import Cache
from tttkd.pipeline.executors import DaskExecutor
from tttkd.pipeline.plan import PrepConfig
from tttkd.pipeline.run import run_prep


@pytest.fixture(scope="module")
def other_datasets(tmp_path_factory) -> dict[str, dict]:
    """Small exact-format S3DIS (+ 2D-3D-S) and Matterport3D roots, with reader options."""
    from tttkd.synthetic.matterport_writer import write_matterport_dataset
    from tttkd.synthetic.s3dis_writer import write_s3dis_dataset

    s3 = tmp_path_factory.mktemp("s3dis")
    write_s3dis_dataset(s3, 2, views=2, image_size=(48, 48))
    mp = tmp_path_factory.mktemp("matterport")
    write_matterport_dataset(mp, 2, regions_per_house=2, image_size=(48, 40), views=3)
    return {
        "s3dis": dict(root=s3 / "Stanford3dDataset_v1.2", reader_options={"images_root": str(s3)}),
        "matterport3d": dict(root=mp, reader_options={}),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.mark.slow
def test_two_local_workers_equal_serial_on_all_three_datasets(
    prep_rooms, serial_cache, other_datasets, tmp_path
):
    root, _ = prep_rooms
    jobs = {
        "scannet": (tiny_prep_config(root, tmp_path / "scannet.zarr", scenes=FIRST4), serial_cache)
    }
    for name, d in other_datasets.items():
        kw = dict(TINY_TEACHER, reader_options=d["reader_options"])
        serial = PrepConfig(
            dataset=name, root=str(d["root"]), out=str(tmp_path / f"{name}_s.zarr"), **kw
        )
        assert run_prep(serial, progress=False).exit_code == 0
        par = PrepConfig(
            dataset=name, root=str(d["root"]), out=str(tmp_path / f"{name}.zarr"), **kw
        )
        jobs[name] = (par, Path(serial.out))
    with DaskExecutor(2, memory_limit="2GB", echo=lambda s: None) as ex:  # one cluster for all
        for name, (config, reference) in jobs.items():
            report = run_prep(config, ex, progress=False)
            assert report.exit_code == 0 and report.done, (name, report.failed)
            # one teacher for the whole cluster (2 CPU workers), in its own process
            assert {r.teacher_builds for r in report.results} == {1}
            teacher_pids = {r.teacher_pid for r in report.results}
            assert len(teacher_pids) == 1 and not teacher_pids & {r.pid for r in report.results}
            assert os.getpid() not in {r.pid for r in report.results} | teacher_pids
            cache = Cache.open(config.out, read_only=True)
            assert cache.verify() == {s: [] for s in cache.scene_ids()}
            assert (
                sum(cache.scene_info(s)["counts"]["correspondences"] for s in cache.scene_ids()) > 0
            )
            assert_same_contents(contents(reference), contents(Path(config.out)))
        assert set(ex.client.run(_torch_threads).values()) == {1}  # the worker plugin ran
        assert len(ex.client.scheduler_info(n_workers=-1)["workers"]) == 3  # 2 CPU + teacher


@pytest.mark.slow
def test_external_dask_scheduler_and_worker_processes(prep_rooms, serial_cache, tmp_path):
    root, _ = prep_rooms
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    sched = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=logs, stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers = []
    try:
        for resource in ("CPU=1", "GPU=1"):  # as the README tells users to start them
            workers.append(subprocess.Popen(
                [dask, "worker", addr, "--nworkers", "1", "--nthreads", "1", "--host",
                 "127.0.0.1", "--no-dashboard", "--memory-limit", "2GB", "--resources", resource],
                stdout=logs, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        from distributed import Client

        with Client(addr, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        out = tmp_path / "ext.zarr"
        ex = DaskExecutor(scheduler=addr, echo=lambda s: None)
        report = run_prep(tiny_prep_config(root, out, scenes=FIRST4), ex, progress=False)
        assert report.exit_code == 0, report.failed
        writers, teachers = {r.pid for r in report.results}, {r.teacher_pid for r in report.results}
        # CPU and write tasks on the CPU worker, the teacher on the GPU worker, built once
        assert len(writers) == 1 and len(teachers) == 1 and writers != teachers
        assert os.getpid() not in writers | teachers
        assert {r.teacher_builds for r in report.results} == {1}
        assert_same_contents(contents(serial_cache), contents(out))
    finally:
        stop((*workers, sched))
        logs.close()
