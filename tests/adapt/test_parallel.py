"""Scenes in parallel on Dask (issue #16): a local cluster of two workers and a user-started
``dask scheduler`` + ``dask worker`` give the serial run's results exactly (CPU, one torch
thread per worker); a SIGKILLed worker or main process loses only the tasks in flight, and a
rerun redoes nothing finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.processes import free_port, sigkill_when, stop
from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.report import without_timings
from tttkd.adapt.runner import run_adaptation
from tttkd.cli.adapt import cli
from tttkd.pipeline.executors import DaskExecutor

# 4 tasks: the ttt-kd-online stream and one (source, ttt-kd) task per val scene; steps make
# a task last long enough (seconds) for a kill to land mid-run
CFG = dict(methods=("source", "ttt-kd", "ttt-kd-online"), steps=8, split="val", device="cpu",
           threads=1, seed=1)  # fmt: skip
ARGS = ["--method", "source,ttt-kd,ttt-kd-online", "--steps", "8", "--split", "val", "--device",
        "cpu", "--threads", "1", "--seed", "1", "--no-progress", "--no-plots"]  # fmt: skip
PAIRS = 9  # 3 methods x 3 val scenes


def adapt(fx, out=None, lines=None, executor=None):
    echo = (lambda s: None) if lines is None else lines.append
    return run_adaptation(AdaptConfig(**CFG), fx.cache, str(fx.checkpoint), out=out,
                          progress=False, echo=echo, executor=executor,
                          resume=out is not None).to_dict()  # fmt: skip


@pytest.fixture(scope="module")
def serial(adapt_fixture):
    return without_timings(adapt(adapt_fixture))


def outcomes(out: Path) -> dict[Path, tuple[int, bytes]]:
    """The finished (method, scene) files with their mtime and bytes."""
    found = (out / "outcomes").glob("*/*.json")
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in found}


def _rerun_redoes_nothing(fx, out: Path, want: dict) -> None:
    before, lines = outcomes(out), []
    assert without_timings(adapt(fx, out, lines)) == want
    assert outcomes(out) == before and any(" 0 task(s) to run" in s for s in lines), lines


def test_two_local_workers_equal_serial_and_a_killed_worker_loses_nothing(
    adapt_fixture, serial, tmp_path
):
    fx, out = adapt_fixture, tmp_path / "run"
    killed: list[int] = []

    def killer(client) -> None:  # SIGKILL a busy worker once the first outcome is stored
        deadline = time.monotonic() + 120
        while not outcomes(out) and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = [a for a, keys in client.processing().items() if keys]
        if busy and len(outcomes(out)) < PAIRS:
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(len(outcomes(out)))

    with DaskExecutor(2, memory_limit="2GB", cpu_teacher=False, echo=lambda s: None) as ex:
        thread = threading.Thread(target=killer, args=(ex.client,), daemon=True)
        thread.start()
        got = adapt(fx, out, executor=ex)
        thread.join(timeout=60)
    assert killed and killed[0] < PAIRS, "the kill must land mid-run"
    assert got["timing"]["executor"] == "dask"
    assert without_timings(got) == serial
    pids = {json.loads(b)["pid"] for _, b in outcomes(out).values()}
    assert os.getpid() not in pids  # on the workers
    _rerun_redoes_nothing(fx, out, serial)


def test_external_dask_scheduler_and_workers_from_the_cli_equal_serial(
    adapt_fixture, serial, tmp_path
):
    fx = adapt_fixture
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=logs, stderr=subprocess.STDOUT,
    )]  # fmt: skip
    try:
        procs.append(subprocess.Popen(  # as the README tells users to start them
            [dask, "worker", addr, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
             "--no-dashboard", "--memory-limit", "2GB", "--resources", "CPU=1"],
            stdout=logs, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        from distributed import Client

        with Client(addr, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        out = tmp_path / "ext"
        args = ["--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(out)]
        res = CliRunner().invoke(cli, [*args, *ARGS, "--scheduler", addr])
        assert res.exit_code == 0, res.output
        assert f"dask: connected to {addr} (2 workers)" in res.output
        got = json.loads((out / "results.json").read_text())
        assert without_timings(got) == serial and got["timing"]["executor"] == "dask"
        # the sweep's points go to the same cluster: its steps=8 point is the run above
        sweep = tmp_path / "sweep"
        sweep_args = ["sweep", "--over", "steps", "--values", "steps=8", *ARGS[2:-1]]
        args = ["--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(sweep)]
        res = CliRunner().invoke(cli, [*sweep_args, *args, "--scheduler", addr])
        assert res.exit_code == 0, res.output
        point = json.loads((sweep / "runs" / "steps_8" / "results.json").read_text())
        assert point["timing"]["executor"] == "dask"
        want = {m: serial["methods"][m] for m in ("ttt-kd",)}
        assert without_timings(point)["methods"] == want
    finally:
        stop(reversed(procs))
        logs.close()


def test_cluster_option_mistakes_are_usage_errors(adapt_fixture, tmp_path):
    fx = adapt_fixture
    base = ["--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(tmp_path)]
    for extra, message in [
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers or --scheduler"),
        (["--gpus", "1"], "--gpus needs --workers"),
        (["--workers", "1", "--gpus", "1", "--device", "cpu"], "--gpus needs --device cuda"),
        (["--scheduler", "tcp://127.0.0.1:1"], "no Dask scheduler answers"),
    ]:
        res = CliRunner().invoke(cli, [*base, *extra])
        assert res.exit_code == 2 and message in res.output, res.output


def test_sigkill_of_the_main_process_then_rerun(adapt_fixture, serial, tmp_path):
    """tttkd-adapt killed with SIGKILL after its first outcomes: the rerun of the same
    command keeps them (not redone) and ends with the uninterrupted run's results."""
    fx, out = adapt_fixture, tmp_path / "run"
    cmd = [sys.executable, "-m", "tttkd.cli.adapt", "--cache", fx.cache, "--checkpoint",
           str(fx.checkpoint), "--out", str(out), *ARGS]  # fmt: skip
    returncode = sigkill_when(
        cmd,
        lambda: bool(outcomes(out)),
        name="adapt",
        waiting_for="no outcome in time",
        timeout=120,
    )
    assert returncode == -signal.SIGKILL
    kept = outcomes(out)
    assert 1 <= len(kept) < PAIRS, "the kill must land mid-run"
    res = CliRunner().invoke(cli, cmd[3:], catch_exceptions=False)  # the same command
    assert res.exit_code == 0, res.output
    assert f"resuming: {len(kept)} (method, scene) outcome(s)" in res.output
    now = outcomes(out)
    assert len(now) == PAIRS and {p: now[p] for p in kept} == kept
    assert without_timings(json.loads((out / "results.json").read_text())) == serial
    _rerun_redoes_nothing(fx, out, serial)
