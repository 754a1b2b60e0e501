"""Resumable runs (issue #16): finished (method, scene) outcomes are kept in the run folder
and not redone, the merged results equal an uninterrupted run's, another config is refused.

The SIGKILL tests (main process, worker) are in test_parallel.py."""

from __future__ import annotations

import json

import pytest

from tttkd.adapt.config import AdaptConfig, AdaptConfigError
from tttkd.adapt.report import without_timings
from tttkd.adapt.runner import run_adaptation

CFG = dict(methods=("source", "ttt-kd", "ttt-kd-online"), steps=2, split="val", device="cpu",
           threads=1, seed=1)  # fmt: skip


def adapt(fx, out=None, lines=None, **kw):
    cfg = AdaptConfig(**{**CFG, **kw.pop("cfg", {})})
    echo = (lambda s: None) if lines is None else lines.append
    return run_adaptation(cfg, fx.cache, fx.checkpoint, out=out, progress=False, echo=echo,
                          resume=out is not None, **kw).to_dict()  # fmt: skip


@pytest.fixture(scope="module")
def reference(adapt_fixture):
    return without_timings(adapt(adapt_fixture))


def _stamps(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*.json")}


def test_rerun_redoes_only_missing_outcomes_and_merges_equal(adapt_fixture, reference, tmp_path):
    fx = adapt_fixture
    out = tmp_path / "run"
    assert without_timings(adapt(fx, out)) == reference
    outcomes = out / "outcomes"
    files = sorted(p.relative_to(outcomes).as_posix() for p in outcomes.rglob("*.json"))
    scenes = [f"{s}.json" for s in fx.val_scenes]
    assert files == sorted(["run.json"] + [f"{m}/{s}" for m in CFG["methods"] for s in scenes]), (
        files
    )
    # as after a kill: one offline outcome and one scene of the online stream are missing
    (outcomes / "ttt-kd" / scenes[1]).unlink()
    (outcomes / "ttt-kd-online" / scenes[2]).unlink()
    kept = {p: s for p, s in _stamps(outcomes).items() if "ttt-kd-online" not in p.parts}
    lines: list[str] = []
    assert without_timings(adapt(fx, out, lines)) == reference
    assert any("resuming: 7 (method, scene) outcome(s)" in s and "2 task(s)" in s for s in lines)
    now = _stamps(outcomes)
    assert {p: now[p] for p in kept} == kept  # finished ones untouched, not rewritten
    assert (outcomes / "ttt-kd" / scenes[1]).exists()
    # a complete folder: nothing runs again
    lines.clear()
    before = _stamps(outcomes)
    assert without_timings(adapt(fx, out, lines)) == reference
    assert _stamps(outcomes) == before and any("0 task(s)" in s for s in lines)


def test_another_config_is_refused_unless_overwrite(adapt_fixture, reference, tmp_path):
    fx = adapt_fixture
    out = tmp_path / "run"
    adapt(fx, out, cfg={"methods": ("source",)})
    with pytest.raises(AdaptConfigError) as err:
        adapt(fx, out, cfg={"methods": ("source",), "steps": 3, "seed": 2})
    msg = str(err.value)
    assert "config.seed (1 -> 2)" in msg and "config.steps (2 -> 3)" in msg
    assert str(out) in msg and "--overwrite" in msg
    res = adapt(fx, out, cfg={"methods": ("source",), "seed": 2}, overwrite=True)
    assert res["config"]["seed"] == 2
    run = json.loads((out / "outcomes" / "run.json").read_text())
    assert run["config"]["seed"] == 2
