"""A FIFO in place of an image never blocks prep; ``--scene-timeout`` fails a scene, not the run.

Before: a FIFO in place of a colour image blocked ``tttkd-prep`` forever, and there was no
per-scene time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.tiny_prep import tiny_prep_config
from tttkd.pipeline.scene_timeout import SceneTimeout, scene_deadline


@pytest.fixture(scope="module")
def root(write_scannet) -> Path:
    return write_scannet("scannet_fifo", ["train", "train"])


@pytest.fixture
def prep_process(tiny_prep_options):
    """``tttkd-prep scannet`` in a child process (so a hang is a timeout, not a stuck test)."""

    def run(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "tttkd.cli.prep", "scannet", *map(str, args)]
        cmd += tiny_prep_options
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    return run


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_an_image_is_named_not_waited_on(root, tmp_path, prep_process):
    colour = sorted((root / "scannet_frames_25k" / "scene0000_00" / "color").glob("*.jpg"))
    kept = {jpg: jpg.read_bytes() for jpg in colour}
    for jpg in colour:  # every colour image of the first scene is a FIFO now
        jpg.unlink()
        os.mkfifo(jpg)
    try:
        out = tmp_path / "feats.zarr"
        r = prep_process("--root", root, "--cache", out, timeout=120)
    finally:  # the root is the module's: leave it whole
        for jpg, data in kept.items():
            jpg.unlink()
            jpg.write_bytes(data)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "FAILED scene0000_00" in text and "not a regular file" in text, text
    assert str(colour[0]) in text or str(colour[-1]) in text, text
    assert "Traceback" not in text
    failures = json.loads(Path(f"{out}.failures.json").read_text())
    assert failures["done"] == 1 and [f["scene_id"] for f in failures["failures"]] == [
        "scene0000_00"
    ]


def test_scene_timeout_fails_each_scene_and_the_run_goes_on(root, tmp_path, prep_process):
    out = tmp_path / "feats.zarr"
    r = prep_process("--root", root, "--cache", out, "--scene-timeout", "0.001")
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text
    failures = json.loads(Path(f"{out}.failures.json").read_text())["failures"]
    assert sorted(f["scene_id"] for f in failures) == ["scene0000_00", "scene0001_00"]
    assert all("--scene-timeout 0.001 s" in f["reason"] for f in failures)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_the_deadline_interrupts_a_blocking_open(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(SceneTimeout, match="--scene-timeout 0.3 s"):
        with scene_deadline(0.3, "scene0000_00"):
            open(fifo, "rb").close()  # blocks until a writer appears: never
    assert time.perf_counter() - t0 < 5


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs FIFOs and /proc")
def test_scene_timeout_on_a_dask_cluster_fails_the_stuck_scene_only(root, tmp_path):
    """Before: on a Dask cluster --scene-timeout only warned, and a blocked CPU task held its
    worker, and so the run, forever. Now the driver fails that scene, cancels the task and
    restarts its worker; the other scenes are written; a rerun retries the scene."""
    from tttkd.pipeline.cache import Cache
    from tttkd.pipeline.executors import DaskExecutor
    from tttkd.pipeline.run import run_prep

    fifo = tmp_path / "never_written"
    os.mkfifo(fifo)
    out = tmp_path / "feats.zarr"
    config = tiny_prep_config(root, out, scene_timeout=8.0)
    stuck = "scene0000_00"

    def hang_on(scene: str, fifo: str) -> int:  # local, so Dask ships it by value
        """In a worker: ``scene``'s CPU stage blocks in ``open()`` of a FIFO (a real blocking
        system call, which nothing inside the process can interrupt)."""
        from tttkd.pipeline import prep_scene

        real = prep_scene.build_record

        def build_record(job):
            if job.scene_id == scene:
                open(fifo, "rb").close()
            return real(job)

        prep_scene.build_record = build_record
        return os.getpid()

    reports: list = []
    try:
        with DaskExecutor(1, memory_limit="2GB", echo=lambda s: None) as ex:
            pids = set(ex.client.run(hang_on, stuck, str(fifo)).values())
            run = threading.Thread(  # a thread, so that a hang fails the test, not CI
                target=lambda: reports.append(
                    run_prep(config, ex, progress=False, echo=lambda s: None)
                ),
                daemon=True,
            )
            run.start()
            run.join(timeout=300)
            assert not run.is_alive(), "the run is blocked by the stuck scene"
            now = set(ex.client.run(os.getpid).values())
    finally:  # whatever happened: nothing may stay blocked on the FIFO
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    (report,) = reports
    assert report.done == ["scene0001_00"], report.failed
    assert [f["scene_id"] for f in report.failed] == [stuck]
    reason = report.failed[0]["reason"]
    assert "--scene-timeout 8 s" in reason and "a rerun retries" in reason, reason
    assert "stays busy" not in reason and "did not restart" not in reason, reason
    (pid,) = pids - now  # the worker that held the blocked task was replaced ...
    deadline = time.monotonic() + 30
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pid)  # ... and is gone
    cache = Cache.open(str(out), read_only=True)
    assert cache.scene_ids() == ["scene0001_00"]
    again = run_prep(config, progress=False, echo=lambda s: None)  # serial: nothing hangs now
    assert again.done == [stuck] and again.exit_code == 0, again.failed


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_the_file_that_tells_the_s3dis_version_is_named(tmp_path):
    """Before: the S3DIS version sniffer opened the first object file unchecked and blocked."""
    from tttkd.core import DatasetError
    from tttkd.pipeline.datasets.s3dis_text import sniff_version

    fifo = tmp_path / "ceiling_1.txt"
    os.mkfifo(fifo)
    with scene_deadline(5, "Area_1/office_1"):
        with pytest.raises(DatasetError, match="FIFO") as e:
            sniff_version(fifo)
    assert str(fifo) in str(e.value)


def test_a_deadline_swallowed_by_a_reader_still_fails_the_scene():
    """A reader that drops a bad frame catches DatasetError; when the deadline fires inside
    such a handler the scene must still end as timed out (the full suite once saw a scene
    fail for another reason under --scene-timeout 0.001)."""
    from tttkd.core import DatasetError

    with pytest.raises(SceneTimeout, match="--scene-timeout 0.05 s"):
        with scene_deadline(0.05, "scene0000_00"):
            try:
                time.sleep(0.5)  # the alarm fires here ...
            except DatasetError:
                pass  # ... and a frame-dropping reader swallows it
    with pytest.raises(SceneTimeout, match="--scene-timeout 0.05 s"):
        with scene_deadline(0.05, "scene0000_00"):
            try:
                time.sleep(0.5)
            except DatasetError as e:
                raise ValueError("a later, unrelated-looking failure") from e
