"""``tttkd-train`` as users run it: the click command, and DDP with 2 CPU processes (gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from tttkd.cli.train import cli
from tttkd.model.checkpoint import load_checkpoint
from tttkd.model.runlog import read_log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(tiny_sets: list[str]) -> list[str]:
    return [a for s in tiny_sets for a in ("--set", s)]


def test_cli_config_errors_and_print(train_cache, tiny_sets, tmp_path):
    runner = CliRunner()
    base = ["--cache", train_cache, "--out", str(tmp_path / "r")]
    res = runner.invoke(cli, [*base, "--set", "optim.lrr=0.1"])
    assert res.exit_code != 0 and "unknown config key 'optim.lrr'" in res.output
    delta = tmp_path / "d.yaml"
    delta.write_text("optim: {lr: 0.001}\n")
    res = runner.invoke(
        cli, [*base, "--config", str(delta), "--set", "optim.weight_decay=0.01", "--no-kd",
              "--epochs", "3", "--val-split", "val", "--print-config"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    printed = yaml.safe_load(res.output)
    assert printed["optim"] == {**printed["optim"], "lr": 0.001, "weight_decay": 0.01}
    assert printed["loss"]["kd"] is False and printed["epochs"] == 3
    assert not (tmp_path / "r").exists()  # printing trains nothing
    res = runner.invoke(cli, [*base, "--voxel-size", "0.05", "--no-progress"])
    assert res.exit_code != 0 and "finer than the cache's" in res.output


def test_cli_trains_and_resumes(train_cache, tiny_sets, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["--cache", train_cache, "--out", str(out), *_sets(tiny_sets), "--epochs", "2"]
    res = runner.invoke(cli, [*args, "--stop-after", "1"])
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in read_log(out / "log.jsonl", "epoch")] == [1]
    res = runner.invoke(cli, ["--cache", train_cache, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output  # the saved config is the base: no options needed
    assert [r["epoch"] for r in read_log(out / "log.jsonl", "epoch")] == [1, 2]
    assert "best: epoch" in res.output
    _, info = load_checkpoint(out / "best.safetensors")
    assert info.config["epochs"] == 2 and info.config["model"]["arch"] == "minkunet_test"


@pytest.mark.slow
def test_ddp_two_cpu_processes(train_cache, tiny_sets, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "tttkd.cli.train", "--cache", train_cache, "--out", str(out),
        *_sets(tiny_sets), "--epochs", "2", "--set", "data.batch_size=1", "--full-res-val",
        "--val-split", "val",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    start = read_log(out / "log.jsonl", "start")[0]
    assert start["world_size"] == 2
    assert start["steps_per_epoch"] == 2  # 3 train scenes -> 2 per rank (padded), batch 1
    epochs = read_log(out / "log.jsonl", "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        a, b = e["rank_checksums"]
        assert a == b  # DDP kept the replicas identical
        assert e["val"]["scenes"] == 1 and e["val"]["full"] is not None  # val split sharded once
    assert len(read_log(out / "log.jsonl", "start")) == 1  # only rank 0 writes
    load_checkpoint(out / "last.safetensors")
