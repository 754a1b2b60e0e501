"""The Python API (tttkd/api.py): the README's example runs as written, ``adapt_scene`` gives
the runner's predictions, and ``import tttkd`` stays cheap. Uses the tests/adapt fixture (a
real synthetic cache and checkpoint, conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tttkd
from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.evaluation import full_resolution
from tttkd.adapt.runner import run_adaptation

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_api_example() -> str:
    """The first python block under the README's "## Python API" heading."""
    text = README.read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's Python API section has no python code block"
    return blocks[0]


def test_readme_python_api_example_runs(adapt_fixture, tmp_path, monkeypatch, capsys):
    code = _readme_api_example()
    # the example's paths, made real: the fixture's cache and checkpoint where it looks
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "best.safetensors").symlink_to(adapt_fixture.checkpoint)
    (tmp_path / "feats.zarr").symlink_to(adapt_fixture.cache, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    printed = capsys.readouterr().out
    scene_id = adapt_fixture.val_scenes[0]
    assert printed.startswith(f"{scene_id} 10 steps; first labels:")
    assert "TTT-KD changed" in printed
    result = scope["result"]
    n_points = len(result.scene.record.voxel_of_point)
    assert result.predictions.shape == (n_points,)
    assert result.logits.shape[1] == len(scope["model"].class_names)
    assert scope["backbone"].out_channels == 96  # minkunet34c


@pytest.mark.parametrize("kw", [{}, {"rotations": 2, "max_images": 2}])
def test_adapt_scene_equals_the_runner_for_that_scene(adapt_fixture, kw):
    fx = adapt_fixture
    sid = fx.val_scenes[1]
    outcomes = {}
    cfg = AdaptConfig(methods=("ttt-kd",), steps=3, scenes=(sid,), **kw)
    run_adaptation(
        cfg,
        fx.cache,
        fx.checkpoint,
        progress=False,
        echo=lambda s: None,
        on_scene=lambda m, s, o: outcomes.__setitem__(s, o),
    )
    model = tttkd.load_checkpoint(fx.checkpoint)
    got = tttkd.adapt_scene(model, tttkd.open_cache(fx.cache).scene(sid), steps=3, **kw)
    want = outcomes[sid]
    assert got.outcome.steps == want.steps == 3 * cfg.rotations
    assert torch.equal(got.logits, want.logits)
    pred = full_resolution(want.logits.argmax(1).numpy(), got.scene.record.voxel_of_point)
    np.testing.assert_array_equal(got.predictions, pred)
    # the adapted prediction differs from the source one (the test can tell them apart)
    source = tttkd.adapt_scene(model, tttkd.open_cache(fx.cache).scene(sid), method="source")
    assert not torch.equal(source.logits, got.logits)


def test_api_errors_name_the_scene_and_the_method(adapt_fixture):
    cache = tttkd.open_cache(adapt_fixture.cache)
    with pytest.raises(ValueError, match="nope"):
        cache.scene("nope")
    model = tttkd.load_checkpoint(adapt_fixture.checkpoint)
    with pytest.raises(ValueError, match="unknown method 'ttt-xx'"):
        tttkd.adapt_scene(model, cache.scene(adapt_fixture.val_scenes[0]), method="ttt-xx")
    with pytest.raises(ValueError, match="nope"):
        tttkd.load_checkpoint(adapt_fixture.checkpoint, backend="nope")
    with pytest.raises(ValueError, match="unknown backbone 'pointnet'"):
        tttkd.create_backbone("pointnet")
    auto = tttkd.load_checkpoint(adapt_fixture.checkpoint, backend="auto")
    assert auto.net.backend == "torch"  # auto on CPU: the reference (model/sparse/select.py)


def test_import_tttkd_is_cheap_and_lazy():
    code = (
        "import sys, tttkd; assert 'torch' not in sys.modules and 'zarr' not in sys.modules; "
        "tttkd.open_cache; assert 'tttkd.api' in sys.modules; print('ok')"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
