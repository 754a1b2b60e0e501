"""A FIFO in place of an image never blocks prep; ``--scene-timeout`` fails a scene, not the run.

Before: a FIFO in place of a colour image blocked ``tttkd-prep`` forever, and there was no
per-scene time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    for jpg in colour:  # every colour image of the first scene is a FIFO now
        jpg.unlink()
        os.mkfifo(jpg)
    try:
        out = tmp_path / "feats.zarr"
        r = prep_process("--root", root, "--out", out, timeout=120)
    finally:
        for jpg in colour:
            jpg.unlink()
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
    r = prep_process("--root", root, "--out", out, "--scene-timeout", "0.001")
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
