"""TTT-KD offline/online and the baselines on a real cache: exactness, order, stride, seeds,
divergence fallback, loss decrease. All on CPU with the session fixture (conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.runner import run_adaptation

FAST = dict(steps=3, bn_passes=2, device="cpu")


def run(fx, *, checkpoint=None, echo=None, **kw):
    """run_adaptation + every (method, scene) outcome (logits included)."""
    outcomes = {}
    cfg = AdaptConfig(**{**FAST, **kw})
    result = run_adaptation(
        cfg,
        fx.cache,
        checkpoint or fx.checkpoint,
        progress=False,
        echo=echo or (lambda s: None),
        on_scene=lambda m, s, o: outcomes.__setitem__((m, s), o),
    )
    return result, outcomes


def test_lr0_offline_ttt_kd_is_exactly_the_source_prediction(adapt_fixture):
    fx = adapt_fixture
    result, out = run(fx, methods=("source", "ttt-kd"), lr=0.0, split="val")
    for sid in fx.val_scenes:
        assert out["ttt-kd", sid].steps == 3  # it did step, with a zero learning rate
        assert torch.equal(out["ttt-kd", sid].logits, out["source", sid].logits)
    assert result.methods["ttt-kd"]["overall"] == result.methods["source"]["overall"]


def test_reset_makes_scene_order_irrelevant(adapt_fixture):
    fx = adapt_fixture
    scenes = fx.val_scenes
    _, a = run(fx, methods=("ttt-kd",), scenes=scenes)
    _, b = run(fx, methods=("ttt-kd",), scenes=tuple(reversed(scenes)))
    for sid in scenes:
        assert a["ttt-kd", sid].updated
        assert torch.equal(a["ttt-kd", sid].logits, b["ttt-kd", sid].logits), sid


def test_online_stride_updates_exactly_every_sth_scene(adapt_fixture):
    fx = adapt_fixture
    scenes = fx.all_scenes  # 5 scenes: updates on the 1st, 3rd, 5th with stride 2
    result, out = run(fx, methods=("ttt-kd-online",), stride=2, scenes=scenes)
    steps = [out["ttt-kd-online", s].steps for s in scenes]
    assert steps == [1, 0, 1, 0, 1]
    assert [out["ttt-kd-online", s].updated for s in scenes] == [True, False, True, False, True]
    assert result.methods["ttt-kd-online"]["updates"] == 3
    _, out3 = run(fx, methods=("ttt-kd-online",), stride=3, scenes=scenes)
    assert [out3["ttt-kd-online", s].steps for s in scenes] == [1, 0, 0, 1, 0]


def test_online_weights_carry_over_between_scenes(adapt_fixture):
    """Scene 2's prediction depends on whether scene 1 was adapted before it (online), and
    not at all for offline TTT-KD (checked by the order test)."""
    fx = adapt_fixture
    s = fx.val_scenes
    _, a = run(fx, methods=("ttt-kd-online", "source"), scenes=(s[0], s[1]))
    _, b = run(fx, methods=("ttt-kd-online",), scenes=(s[1],))
    assert not torch.equal(a["ttt-kd-online", s[1]].logits, b["ttt-kd-online", s[1]].logits)
    assert not torch.equal(a["ttt-kd-online", s[0]].logits, a["source", s[0]].logits)


def test_seeded_runs_repeat_exactly_on_cpu(adapt_fixture):
    fx = adapt_fixture
    kw = dict(methods=("ttt-kd", "bn", "tent"), scenes=fx.val_scenes[:2], max_images=2, seed=5)
    ra, a = run(fx, **kw)
    rb, b = run(fx, **kw)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].logits, b[key].logits), key
        assert a[key].losses == b[key].losses
    for m in kw["methods"]:
        assert ra.methods[m]["overall"] == rb.methods[m]["overall"]


def test_ttt_kd_reduces_the_kd_loss(adapt_fixture):
    fx = adapt_fixture
    result, out = run(fx, methods=("ttt-kd",), steps=6, split="val")
    for sid in fx.val_scenes:
        losses = out["ttt-kd", sid].losses[0]
        assert len(losses) == 6 and out["ttt-kd", sid].fallback is None
        after = out["ttt-kd", sid].losses_after[0]  # the weights that predicted
        assert losses[-1] < losses[0] - 1e-3 and after < losses[-1], (sid, losses, after)
        rec = result.methods["ttt-kd"]["scenes"][sid]
        assert rec["loss_after"] < rec["loss_first"] and rec["ms_per_step"] > 0


def test_divergence_falls_back_to_the_unadapted_prediction_and_is_reported(adapt_fixture):
    fx = adapt_fixture
    lines: list[str] = []
    result, out = run(
        fx,
        methods=("source", "ttt-kd", "ttt-kd-online"),
        lr=1e6,
        steps=4,
        split="val",
        echo=lines.append,
    )
    for sid in fx.val_scenes:
        fb = out["ttt-kd", sid].fallback
        assert fb is not None and fb.step < 4
        assert "non-finite" in fb.reason or "exploded" in fb.reason
        assert torch.equal(out["ttt-kd", sid].logits, out["source", sid].logits)
        assert torch.isfinite(out["ttt-kd-online", sid].logits).all()
    listed = result.methods["ttt-kd"]["fallbacks"]
    assert [f["scene"] for f in listed] == list(fx.val_scenes)
    assert any("ttt-kd: 3 scene(s) fell back to the unadapted prediction" in s for s in lines)
    # the online stream survives: every step is undone, predictions stay the source's
    assert result.methods["ttt-kd-online"]["updates"] == 0
    for sid in fx.val_scenes:
        assert torch.equal(out["ttt-kd-online", sid].logits, out["source", sid].logits)
    assert (
        result.methods["ttt-kd"]["overall"]["miou"] == result.methods["source"]["overall"]["miou"]
    )


def test_eval_bn_mode_keeps_statistics_and_train_mode_changes_then_resets(adapt_fixture):
    from tttkd.adapt.bn import backbone_norms
    from tttkd.adapt.methods import make_method
    from tttkd.adapt.scenes import load_scene
    from tttkd.model.checkpoint import load_checkpoint
    from tttkd.pipeline.cache import Cache

    fx = adapt_fixture
    net, _ = load_checkpoint(fx.checkpoint)
    cache = Cache.open(fx.cache, read_only=True)
    scene = load_scene(
        cache, fx.val_scenes[0], device="cpu", backend="torch", max_images=None, seed=0
    )
    before = [m.running_mean.clone() for m in backbone_norms(net)]
    for mode, changes in (("eval", False), ("train", True)):
        method = make_method("ttt-kd", net, AdaptConfig(steps=2, bn_mode=mode))
        norms = backbone_norms(method.net)
        seen = []
        orig = method.reset

        def spy(norms=norms, seen=seen, orig=orig):  # stats just before each reset
            seen.append(any(not torch.equal(m.running_mean, b) for m, b in zip(norms, before)))
            orig()

        method.reset = spy
        method.process(scene)
        assert seen[1] is changes  # after the steps and the prediction, before the reset
        assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))  # reset


def test_rotations_sum_logits_of_each_view(adapt_fixture):
    from tttkd.adapt.methods import make_method
    from tttkd.adapt.scenes import load_scene
    from tttkd.adapt.ttt import predict_view
    from tttkd.model.checkpoint import load_checkpoint
    from tttkd.pipeline.cache import Cache

    fx = adapt_fixture
    net, _ = load_checkpoint(fx.checkpoint)
    cache = Cache.open(fx.cache, read_only=True)
    scene = load_scene(
        cache, fx.val_scenes[0], device="cpu", backend="torch", max_images=None, seed=0
    )
    out = make_method("source", net, AdaptConfig(rotations=3)).process(scene)
    views = [scene.view(a) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    assert not torch.equal(views[0].feats.sum(0), views[1].feats.sum(0)) or not torch.equal(
        views[0].coords[:8], views[1].coords[:8]
    )  # the rotated view really is another voxelization
    expected = sum(predict_view(net.eval(), v) for v in views)
    torch.testing.assert_close(out.logits, expected)
    assert views[0] is scene.view(0.0)  # built once, reused
    single = make_method("source", net, AdaptConfig(rotations=1)).process(scene)
    np.testing.assert_array_equal(single.logits.numpy(), predict_view(net, views[0]).numpy())


def test_unknown_method_and_bad_options_are_clear_errors(adapt_fixture):
    from tttkd.adapt.config import AdaptConfigError

    with pytest.raises(AdaptConfigError, match="unknown method 'adacontrst'"):
        run(adapt_fixture, methods=("adacontrst",))  # a typo
    with pytest.raises(AdaptConfigError, match="stride"):
        AdaptConfig(stride=0)
    with pytest.raises(AdaptConfigError, match="unknown adapt option"):
        AdaptConfig.from_dict({"step": 3})
    with pytest.raises(AdaptConfigError, match="not complete in the cache"):
        run(adapt_fixture, methods=("source",), scenes=("scene9999_00",))


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_kd_loss_from_unit_sums_equals_the_training_loss_over_pairs(adapt_fixture, kind):
    """TTT keeps per-voxel sums of unit teacher vectors; the loss and its gradient must be
    those of model.losses.distillation_loss over every (point, image) pair."""
    from tttkd.adapt.scenes import load_scene
    from tttkd.adapt.ttt import kd_loss
    from tttkd.model.checkpoint import load_checkpoint
    from tttkd.model.losses import distillation_loss
    from tttkd.pipeline.cache import Cache

    fx = adapt_fixture
    net, _ = load_checkpoint(fx.checkpoint)
    net.eval()
    cache = Cache.open(fx.cache, read_only=True)
    sid = fx.val_scenes[0]
    scene = load_scene(cache, sid, device="cpu", backend="torch", max_images=None, seed=0)
    rec = cache.read_scene(sid)
    maps = [torch.from_numpy(f) for f in rec.features]
    for angle in (0.0, 1.0):  # identity and a rotated view where voxels merge points
        view = scene.view(angle)
        feats = net.features(view.feats, view.context)
        pairs = view.row_of_point[torch.from_numpy(rec.corr_point.astype(np.int64))]
        ref = distillation_loss(
            net.kd_head(feats),
            maps,
            pairs,
            torch.from_numpy(rec.corr_image.astype(np.int64)),
            torch.from_numpy(rec.corr_uv),
            kind,
        )
        (g_ref,) = torch.autograd.grad(ref, net.backbone.conv0p1s1.weight)
        ours = kd_loss(net, scene, view, kind)
        (g_ours,) = torch.autograd.grad(ours, net.backbone.conv0p1s1.weight)
        assert scene.num_pairs == rec.num_corr > 0
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)


def test_unit_target_sums_match_sampling_every_pair(adapt_fixture):
    """The sparse product (cell Gram for the norms) equals sampling, normalising and adding
    every pair, including pairs on the grid's border (clamped cells)."""
    from tttkd.adapt.kd_targets import unit_target_sums, unit_target_sums_reference
    from tttkd.pipeline.cache import Cache

    cache = Cache.open(adapt_fixture.cache, read_only=True)
    rec = cache.read_scene(adapt_fixture.val_scenes[1])
    h, w = rec.features.shape[1:3]
    rec.corr_uv[:5] = [[-0.5, -0.5], [w - 0.5, h - 0.5], [0.0, h - 0.5], [w - 1, 0.0], [0.3, 0.7]]
    dim = rec.features.shape[-1]
    seen, sums = unit_target_sums(rec, torch.device("cpu"), dim)
    seen_ref, sums_ref = unit_target_sums_reference(rec, torch.device("cpu"), dim)
    assert torch.equal(seen, seen_ref) and sums.shape == (seen.numel(), dim)
    torch.testing.assert_close(sums, sums_ref, rtol=1e-5, atol=1e-5)


def test_divergence_guard_tolerates_a_spike_but_not_a_persistent_rise():
    from tttkd.adapt.safety import DivergenceGuard

    spike = [0.448, 0.364, 0.31, 0.339, 0.738, 0.459, 0.443, 0.383, 0.28]  # seen at lr 1.0
    g = DivergenceGuard(1.5, patience=3)
    assert all(g.check(i, v) is None for i, v in enumerate(spike))
    assert g.check_final(len(spike), 0.276) is None
    assert "after adaptation" in g.check_final(len(spike), 0.9).reason
    g = DivergenceGuard(1.5, patience=3)
    verdicts = [g.check(i, v) for i, v in enumerate([0.4, 0.7, 0.8, 0.9, 0.5])]
    assert verdicts[:3] == [None, None, None] and verdicts[3].step == 3
    assert "for 3 steps" in verdicts[3].reason
    assert "non-finite" in DivergenceGuard(1.5).check(0, float("nan")).reason
    assert "gradient" in DivergenceGuard(1.5).check(0, 0.3, float("inf")).reason
