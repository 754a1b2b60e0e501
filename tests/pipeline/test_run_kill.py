"""Kills mid-run lose nothing: a SIGKILLed ``tttkd-prep`` (serial, or with its cluster) and
SIGKILLed Dask workers (CPU and teacher); every rerun redoes nothing complete.

A real ``tttkd-prep`` process, real Dask clusters on 127.0.0.1, the tiny test teacher (rooms
and the serial reference cache: ``tests/pipeline/conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.pipeline.prep_runs import (
    FIRST4,
    N_SCENES,
    assert_same_contents,
    complete,
    contents,
    prep_cmd,
)
from tests.processes import sigkill_when
from tests.tiny_prep import tiny_prep_config
from tttkd.pipeline.cache import Cache
from tttkd.pipeline.executors import DaskExecutor
from tttkd.pipeline.run import run_prep


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [(), ("--workers", "1", "--memory-limit", "2GB", "--images-per-task", "3")],
    ids=["serial", "cluster"],
)
def test_sigkill_then_rerun_redoes_nothing_complete(prep_rooms, tmp_path, extra):
    """SIGKILL of the main process (with a cluster, its worker processes then die too, as a
    batch system kills a job), then a rerun: nothing complete is redone, nothing is lost."""
    root, _ = prep_rooms
    out = tmp_path / "feats.zarr"
    returncode = sigkill_when(
        prep_cmd(root, out, *extra),
        lambda: bool(complete(out)),
        name="prep",
        waiting_for="no scene completed in time",
        timeout=240,
        with_children=True,
    )
    assert returncode == -signal.SIGKILL
    survived = complete(out)
    assert 1 <= len(survived) < N_SCENES, "the kill must land mid-run"
    cache = Cache.open(str(out), read_only=True)
    stamps = {s: cache.scene_info(s)["info"]["run"] for s in survived}
    # the rerun is serial whatever the first run was (no second cluster start: CI time)
    rerun = subprocess.run(prep_cmd(root, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    cache = Cache.open(str(out), read_only=True)
    assert len(cache.scene_ids()) == N_SCENES
    assert cache.verify() == {s: [] for s in cache.scene_ids()}
    assert {s: cache.scene_info(s)["info"]["run"] for s in survived} == stamps
    listed = json.loads(Path(str(out) + ".failures.json").read_text())
    assert listed["skipped"] == len(survived) and listed["done"] == N_SCENES - len(survived)
    assert listed["failures"] == []


@pytest.mark.slow
def test_sigkill_of_cpu_and_teacher_workers_loses_nothing(prep_rooms, serial_cache, tmp_path):
    """A CPU worker and the teacher worker are SIGKILLed mid-run: their nannies restart them,
    Dask recomputes what they held, every scene ends complete and equal to the serial run;
    a rerun then redoes nothing."""
    import threading

    root, _ = prep_rooms
    out = tmp_path / "killed.zarr"
    # several teacher tasks to interrupt; at most 3 scenes in flight (partial tasks flushed)
    config = tiny_prep_config(root, out, images_per_task=4)
    killed: list[str] = []

    def killer(client) -> None:
        info = client.scheduler_info(n_workers=-1)["workers"]
        pids = client.run(os.getpid)
        role = {
            a: "teacher" if "GPU" in (w.get("resources") or {}) else "cpu" for a, w in info.items()
        }
        deadline = time.monotonic() + 240
        for want, after in (("teacher", 1), ("cpu", 3)):
            while len(complete(out)) < after and time.monotonic() < deadline:
                time.sleep(0.01)
            addr = next(a for a, r in role.items() if r == want)
            os.kill(pids[addr], signal.SIGKILL)
            killed.append(f"{want} after {len(complete(out))}")

    with DaskExecutor(1, memory_limit="2GB", window=3, echo=lambda s: None) as ex:
        thread = threading.Thread(target=killer, args=(ex.client,), daemon=True)
        thread.start()
        report = run_prep(config, ex, progress=False, echo=lambda s: None)
        thread.join(timeout=60)
    assert len(killed) == 2 and all(int(k.split()[-1]) < N_SCENES for k in killed), killed
    assert report.exit_code == 0, report.failed
    assert sorted(report.done + report.skipped) == sorted(
        f"scene{i:04d}_00" for i in range(N_SCENES)
    )
    cache = Cache.open(str(out), read_only=True)
    assert (
        cache.verify() == {s: [] for s in cache.scene_ids()} and len(cache.scene_ids()) == N_SCENES
    )
    got = contents(out)
    assert_same_contents(contents(serial_cache), {s: got[s] for s in FIRST4})
    stamps = {s: cache.scene_info(s)["info"]["run"] for s in cache.scene_ids()}
    again = run_prep(config, progress=False, echo=lambda s: None)
    assert again.done == [] and len(again.skipped) == N_SCENES
    assert {s: cache.scene_info(s)["info"]["run"] for s in cache.scene_ids()} == stamps
