"""What each method may change, and what it may read: tests that fail for a broken TTT.

TTT-KD updates ``psi_3D`` only (``rho_Y`` and ``rho_2D`` frozen) and never reads labels;
TENT trains exactly the BN affine parameters of ``psi_3D``; ``bn`` (DUA) changes only BN
running statistics; ``bn_mode="scene"`` normalises with the scene's batch statistics and
leaves the running ones alone; every method sums its predictions over the rotated views.
"""

from __future__ import annotations

import torch

from tttkd.adapt.bn import backbone_norms
from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods import make_method
from tttkd.adapt.rotations import rotation_angles
from tttkd.adapt.runner import run_adaptation
from tttkd.adapt.ttt import predict_view
from tttkd.pipeline.cache import Cache

_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not torch.equal(a[k], b[k])}


def _names(net, group: str) -> set[str]:
    """State-dict keys of the parameters of one of ``param_groups()``."""
    ids = {id(p) for p in net.param_groups()[group]}
    return {k for k, p in net.named_parameters() if id(p) in ids}


def _bn_keys(net, kinds: tuple[str, ...]) -> set[str]:
    names = {id(m): n for n, m in net.named_modules()}
    return {f"{names[id(m)]}.{k}" for m in backbone_norms(net) for k in kinds}


def _adapted_state(method, scene):
    """The weights just before the method's last reset of the scene (offline methods reset
    after predicting), or at the end of the scene when it keeps them (online)."""
    seen: list[dict[str, torch.Tensor]] = []
    orig = method.reset

    def spy():
        seen.append(method.state_snapshot())
        orig()

    method.reset = spy
    out = method.process(scene)
    method.reset = orig
    return out, (seen[-1] if method.name == "ttt-kd" else method.state_snapshot())


def test_ttt_kd_changes_psi_3d_and_never_the_heads(scene_and_net):
    scene, net = scene_and_net
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    heads = _names(net, "rho_Y") | _names(net, "rho_2D")
    psi = _names(net, "psi_3D")
    assert heads and psi
    for name in ("ttt-kd", "ttt-kd-online"):
        method = make_method(name, net, AdaptConfig(steps=3, online_steps=2))
        out, state = _adapted_state(method, scene)
        assert out.updated and out.fallback is None, name
        changed = _changed(trained, state)
        assert not changed & heads, (name, sorted(changed & heads))
        assert changed & psi, name  # the steps did update psi_3D
        assert not changed - psi, (name, sorted(changed - psi))  # eval BN: no statistics


def _unlabelled_copy(fx, sid: str, url: str, wipe: bool) -> str:
    """A real cache holding one scene of the fixture's, written by the real writer, with
    every label set to -1 when ``wipe``."""
    src = Cache.open(fx.cache, read_only=True)
    dst = Cache.create(url, src.meta)
    rec = src.read_scene(sid)
    if wipe:
        rec.label[:] = -1
        rec.full_label[:] = -1
    dst.write_scene(rec)
    return url


def test_ttt_never_reads_labels(adapt_fixture, tmp_path):
    """Same cache content except labels: every adapting method gives the same logits and
    losses, so nothing of the adaptation depends on a label."""
    fx = adapt_fixture
    sid = fx.val_scenes[0]
    kept = _unlabelled_copy(fx, sid, str(tmp_path / "kept.zarr"), wipe=False)
    wiped = _unlabelled_copy(fx, sid, str(tmp_path / "wiped.zarr"), wipe=True)
    assert (Cache.open(wiped, read_only=True).read_points(sid).full_label == -1).all()
    cfg = AdaptConfig(
        methods=("ttt-kd", "ttt-kd-online", "tent", "bn"), steps=3, bn_passes=2, rotations=2
    )
    outs = {}
    for url in (kept, wiped):
        seen = {}
        run_adaptation(
            cfg,
            url,
            fx.checkpoint,
            progress=False,
            echo=lambda s: None,
            on_scene=lambda m, s, o, seen=seen: seen.__setitem__(m, o),
        )
        outs[url] = seen
    for m in cfg.methods:
        a, b = outs[kept][m], outs[wiped][m]
        assert a.updated and b.updated, m
        assert torch.equal(a.logits, b.logits), m
        assert a.losses == b.losses, m


def test_tent_trains_exactly_the_bn_affine_parameters(scene_and_net):
    scene, net = scene_and_net
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    affine = _bn_keys(net, ("weight", "bias"))
    method = make_method("tent", net, AdaptConfig(tent_steps=2, tent_lr=1e-2))
    out = method.process(scene)
    assert out.updated and out.steps == 2
    changed = _changed(trained, method.state_snapshot())
    assert changed == affine, (sorted(changed - affine), sorted(affine - changed))


def test_bn_changes_only_the_running_statistics(scene_and_net):
    scene, net = scene_and_net
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    stats = _bn_keys(net, _STATS)
    method = make_method("bn", net, AdaptConfig(bn_passes=2))
    out = method.process(scene)
    assert out.updated and out.extra["bn_passes"] == 2
    changed = _changed(trained, method.state_snapshot())
    assert changed == stats, (sorted(changed - stats), sorted(stats - changed))


def test_scene_bn_mode_uses_batch_statistics_and_keeps_the_running_ones(scene_and_net):
    """lr 0 isolates the BN mode: the prediction is the trained weights normalised with the
    scene's batch statistics (not the source prediction), and no running statistic moves."""
    scene, net = scene_and_net
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    view = scene.view(0.0)
    method = make_method("ttt-kd", net, AdaptConfig(steps=2, lr=0.0, bn_mode="scene"))
    out, state = _adapted_state(method, scene)
    assert out.steps == 2 and not _changed(trained, state)
    assert torch.equal(out.logits, predict_view(net, view, "scene"))
    assert not torch.allclose(out.logits, predict_view(net, view, "eval"))
    method = make_method("ttt-kd", net, AdaptConfig(steps=3, bn_mode="scene"))
    out, state = _adapted_state(method, scene)
    changed = _changed(trained, state)
    assert changed and not changed & _bn_keys(net, _STATS)


def test_every_method_sums_its_predictions_of_the_rotated_views(scene_and_net):
    """After its per-scene update, each non-offline method predicts every rotated view with
    the weights it then holds (rotation 0 is the unrotated scene)."""
    scene, net = scene_and_net
    angles = rotation_angles(3)
    for name, mode in (("bn", "eval"), ("tent", "scene"), ("ttt-kd-online", "eval")):
        cfg = AdaptConfig(rotations=3, bn_passes=2, tent_steps=1, tent_predict="after")
        method = make_method(name, net, cfg)
        out = method.process(scene)
        assert out.updated, name
        expected = sum(predict_view(method.net, scene.view(a), mode) for a in angles)
        torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5, msg=name)
        single = predict_view(method.net, scene.view(0.0), mode)
        assert not torch.allclose(out.logits, 3 * single), name  # the rotations matter
