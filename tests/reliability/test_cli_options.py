"""Bad options give a one-line error naming the option (and the allowed values), never a
Python traceback; ``--debug`` shows the traceback.

Before: each case below either printed a traceback or was accepted unchecked.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tttkd.cli import adapt, prep, synth, train
from tttkd.pipeline.cache import Cache
from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record

MAINS = {"prep": prep.main, "train": train.main, "adapt": adapt.main, "synth": synth.main}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cli_options")
    cache = d / "feats.zarr"
    teacher = {"name": "vit_tiny_test", "sha256": None, "patch_size": 14, "dim": 16}
    Cache.create(str(cache), synthetic_meta(teacher=teacher)).write_scene(synthetic_record("s0"))
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    write_scannet_dataset(d / "root", 1, frames=("25k",), image_size=(64, 48), views=2)
    (d / "a_file").write_text("x")
    run = d / "run"  # a run whose last checkpoint was damaged
    run.mkdir()
    args = ["--cache", str(cache), "--out", str(run), "--arch", "minkunet_test", "--voxel-size"]
    args += ["0.04", "--print-config"]
    printed = CliRunner().invoke(train.cli, args)
    assert printed.exit_code == 0, printed.output
    (run / "config.yaml").write_text(printed.output)
    (run / "train_state.pt").write_bytes(b"")
    (run / "last.safetensors").write_bytes(b"\x80\x04 not a safetensors file")
    return {
        "cache": str(cache),
        "root": str(d / "root"),
        "file": str(d / "a_file"),
        "run": str(run),
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(name: str, args: list[str], capsys) -> tuple[int, str]:
    try:
        MAINS[name](args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out + out.err


PREP = ["scannet", "--root", "{root}", "--cache", "{tmp}/o.zarr", "--teacher", "test_vit_tiny"]
TRAIN = ["--cache", "{cache}", "--out", "{tmp}/run"]
ADAPT = ["--cache", "{cache}", "--checkpoint", "{file}", "--out", "{tmp}/adapt"]
CASES = [
    ("prep", [*PREP, "--voxel-size", "inf"], "--voxel-size"),
    ("prep", [*PREP, "--label-set", "foo20"], "--label-set"),
    ("prep", [*PREP, "--device", "cuda:7"], "--device"),
    ("prep", [*PREP, "--depth-abs-tol", "-1"], "--depth-abs-tol"),
    ("prep", [*PREP, "--zbuffer-cell-px", "-1"], "--zbuffer-cell-px"),
    ("prep", [*PREP, "--frame-stride", "0"], "--frame-stride"),
    ("train", [*TRAIN, "--arch", "bogus"], "--arch"),
    ("train", [*TRAIN, "--backend", "bogus"], "--backend"),
    ("train", [*TRAIN, "--arch", "bogus", "--print-config"], "--arch"),
    ("train", [*TRAIN, "--device", "cuda:7"], "--device"),
    ("train", ["--cache", "{cache}", "--out", "{run}", "--resume"], "last.safetensors"),
    ("adapt", [*ADAPT, "--device", "cuda:7"], "--device"),
    ("adapt", [*ADAPT, "--backend", "bogus"], "--backend"),
    ("synth", ["scannet", "--out", "{file}/sub"], "{file}"),
]


@pytest.mark.parametrize(("name", "args", "named"), CASES, ids=lambda v: str(v)[:40])
def test_a_bad_option_is_one_clear_line(name, args, named, files, tmp_path, capsys):
    fill = {**files, "tmp": str(tmp_path)}
    code, text = run_cli(name, [a.format(**fill) for a in args], capsys)
    assert code not in (0, None), text
    assert "Traceback" not in text, text
    assert named.format(**fill) in text, text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_adapt_device_cuda_without_cuda(files, tmp_path, capsys):
    args = [a.format(**files, tmp=tmp_path) for a in ADAPT] + ["--device", "cuda"]
    code, text = run_cli("adapt", args, capsys)
    assert code == 2 and "--device" in text and "CUDA" in text and "Traceback" not in text


def test_an_unreachable_scheduler_fails_fast_naming_it(files, tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    args = [a.format(**files, tmp=tmp_path) for a in PREP] + ["--scheduler", address]
    t0 = time.perf_counter()
    code, text = run_cli("prep", args, capsys)
    assert time.perf_counter() - t0 < 15
    assert code == 2 and address in text and "Traceback" not in text, text
    assert not Path(tmp_path / "o.zarr").exists()


def test_debug_shows_the_traceback(files, tmp_path, capsys):
    code, text = run_cli("synth", ["scannet", "--out", f"{files['file']}/sub"], capsys)
    assert code == 1 and "Traceback" not in text and "--debug" in text
    with pytest.raises(OSError):
        MAINS["synth"](["scannet", "--out", f"{files['file']}/sub", "--debug"])
