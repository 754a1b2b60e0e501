"""The baselines as their papers run them: TENT's prediction is the output of the adapting
forward (``tent_predict="adapt"``); DUA's online form keeps the statistics and decays the
momentum over the stream (``bn_online``). Real cache and checkpoint (conftest.py)."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods import make_method
from tttkd.adapt.methods.dua import dua_momenta
from tttkd.adapt.scenes import load_scene
from tttkd.adapt.ttt import predict_view
from tttkd.cli.adapt import cli
from tttkd.model.checkpoint import load_checkpoint
from tttkd.pipeline.cache import Cache


def _scenes_and_net(fx, n: int = 1):
    net, _ = load_checkpoint(fx.checkpoint)
    cache = Cache.open(fx.cache, read_only=True)
    scenes = [
        load_scene(cache, sid, device="cpu", backend="torch", max_images=None, seed=0)
        for sid in fx.val_scenes[:n]
    ]
    return scenes, net.eval()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_tent_predicts_with_the_adapting_forward_or_after_the_step(adapt_fixture):
    (scene,), net = _scenes_and_net(adapt_fixture)
    view = scene.view(0.0)
    cfg = AdaptConfig(tent_steps=1, tent_lr=1e-2)
    adapt = make_method("tent", net, cfg)
    after = make_method("tent", net, cfg.with_(tent_predict="after"))
    out_adapt, out_after = adapt.process(scene), after.process(scene)
    assert out_adapt.updated and out_after.updated
    assert _same(adapt.state_snapshot(), after.state_snapshot())  # the same step either way
    # the adapting forward: trained weights, the scene's batch statistics
    torch.testing.assert_close(out_adapt.logits, predict_view(net, view, "scene"))
    torch.testing.assert_close(out_after.logits, predict_view(after.net, view, "scene"))
    assert not torch.allclose(out_adapt.logits, out_after.logits)
    assert out_adapt.extra["tent_predict"] == "adapt"


def test_tent_adapt_prediction_comes_from_the_last_step_with_several_steps(adapt_fixture):
    """With 2 steps the adapting forward of step 2 ran on the weights after step 1."""
    (scene,), net = _scenes_and_net(adapt_fixture)
    one = make_method("tent", net, AdaptConfig(tent_steps=1, tent_lr=1e-2, tent_predict="after"))
    one.process(scene)  # its weights: after one step
    two = make_method("tent", net, AdaptConfig(tent_steps=2, tent_lr=1e-2))
    out = two.process(scene)
    torch.testing.assert_close(out.logits, predict_view(one.net, scene.view(0.0), "scene"))


def test_dua_online_keeps_statistics_and_decays_the_momentum_over_the_stream(adapt_fixture):
    scenes, net = _scenes_and_net(adapt_fixture, 2)
    passes = 3
    cfg = AdaptConfig(bn_passes=passes, bn_augment=False)
    per_scene = make_method("bn", net, cfg)
    online = make_method("bn", net, cfg.with_(bn_online=True))
    assert online.online and not per_scene.online
    states = {}
    outs = {}
    for name, method in (("per_scene", per_scene), ("online", online)):
        outs[name] = [method.process(s) for s in scenes]
        states[name] = method.state_snapshot()
    schedule = dua_momenta(2 * passes, cfg.bn_momentum, cfg.bn_decay, cfg.bn_min_momentum)
    assert outs["per_scene"][1].extra["bn_momentum_last"] == schedule[passes - 1]
    assert outs["online"][1].extra["bn_momentum_last"] == schedule[2 * passes - 1]
    assert torch.equal(outs["online"][0].logits, outs["per_scene"][0].logits)  # same start
    assert not torch.equal(outs["online"][1].logits, outs["per_scene"][1].logits)
    assert not _same(states["online"], states["per_scene"])
    # online: scene 2 starts from scene 1's statistics, not from the trained ones
    fresh = make_method("bn", net, cfg.with_(bn_online=True))
    fresh.passes_done = passes  # the same momenta as the stream's scene 2, trained statistics
    assert not torch.equal(fresh.process(scenes[1]).logits, outs["online"][1].logits)
    # per scene: scene 2 alone gives what it gave after scene 1 (a reset in between)
    alone = make_method("bn", net, cfg).process(scenes[1])
    assert torch.equal(alone.logits, outs["per_scene"][1].logits)


def test_cli_passes_the_baseline_forms(adapt_fixture, tmp_path):
    fx = adapt_fixture
    out = tmp_path / "run"
    args = ["--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(out),
            "--method", "bn,tent", "--bn-passes", "1", "--bn-online", "--tent-predict",
            "after", "--scenes", fx.val_scenes[0], "--device", "cpu", "--no-progress",
            "--no-plots"]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["bn_online"] is True and config["tent_predict"] == "after"
    assert AdaptConfig().tent_predict == "adapt" and AdaptConfig().bn_online is False
