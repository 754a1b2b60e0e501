"""Algorithm 1's rotation protocol (``paper``) against the rotation ensemble (``ensemble``),
for offline TTT-KD on the real cache and checkpoint of the session fixture (conftest.py)."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.methods import make_method
from tttkd.adapt.rotations import rotation_angles
from tttkd.adapt.ttt import predict_view
from tttkd.cli.adapt import cli


def _trained(method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method._trained.items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_one_rotation_is_the_same_under_both_protocols(scene_and_net):
    scene, net = scene_and_net
    outs = {
        p: make_method("ttt-kd", net, AdaptConfig(steps=3, rotation_protocol=p)).process(scene)
        for p in ("paper", "ensemble")
    }
    assert outs["paper"].steps == outs["ensemble"].steps == 3
    assert torch.equal(outs["paper"].logits, outs["ensemble"].logits)
    assert outs["paper"].losses == outs["ensemble"].losses


def test_paper_predicts_the_unrotated_scene_and_ensemble_the_rotated_views(scene_and_net):
    """With lr 0 the weights stay the trained ones, so only the predicted view differs:
    Algorithm 1 sums R predictions of the unrotated scene, the ensemble one per rotation."""
    scene, net = scene_and_net
    cfg = AdaptConfig(steps=2, lr=0.0, rotations=3)
    paper = make_method("ttt-kd", net, cfg).process(scene)
    ensemble = make_method("ttt-kd", net, cfg.with_(rotation_protocol="ensemble")).process(scene)
    unrotated = predict_view(net, scene.view(0.0))
    torch.testing.assert_close(paper.logits, 3 * unrotated)
    rotated = sum(predict_view(net, scene.view(a)) for a in rotation_angles(3))
    torch.testing.assert_close(ensemble.logits, rotated)
    assert not torch.allclose(paper.logits, ensemble.logits)
    assert paper.steps == ensemble.steps == 6  # both train on every rotated copy


def test_paper_carries_weights_across_rotations_and_ensemble_resets(scene_and_net):
    """The weights each rotation's steps start from: the trained ones for the first rotation
    under both protocols; for later ones, those the previous rotation left (paper) or the
    trained ones again (ensemble). Both end the scene back at the trained weights."""
    scene, net = scene_and_net
    for protocol, carried in (("paper", True), ("ensemble", False)):
        method = make_method(
            "ttt-kd", net, AdaptConfig(steps=2, rotations=3, rotation_protocol=protocol)
        )
        trained = _trained(method)
        starts: list[dict[str, torch.Tensor]] = []
        ends: list[dict[str, torch.Tensor]] = []
        inner = method._steps_and_predict

        def spy(*args, inner=inner, method=method, starts=starts, ends=ends):
            starts.append(method.state_snapshot())
            logits = inner(*args)
            ends.append(method.state_snapshot())
            return logits

        method._steps_and_predict = spy
        out = method.process(scene)
        assert out.fallback is None and out.steps == 6
        assert len(starts) == 3 and _same(starts[0], trained)
        for r in (1, 2):
            assert not _same(ends[r - 1], trained)  # the steps did change the weights
            assert _same(starts[r], ends[r - 1]) is carried, (protocol, r)
            assert _same(starts[r], trained) is not carried, (protocol, r)
        assert _same(method.state_snapshot(), trained)  # reset after the scene


def test_rotations_4_runs_algorithm_1_by_default_from_the_cli(adapt_fixture, tmp_path):
    fx = adapt_fixture
    out = tmp_path / "run"
    args = ["--cache", fx.cache, "--checkpoint", str(fx.checkpoint), "--out", str(out),
            "--method", "ttt-kd", "--steps", "1", "--rotations", "4",
            "--scenes", fx.val_scenes[0], "--device", "cpu", "--no-progress",
            "--no-plots"]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["rotations"] == 4
    assert result["config"]["rotation_protocol"] == "paper"
    rec = result["methods"]["ttt-kd"]["scenes"][fx.val_scenes[0]]
    assert rec["rotation_protocol"] == "paper" and rec["steps"] == 4
    res = CliRunner().invoke(cli, [*args, "--rotation-protocol", "bogus"])
    assert res.exit_code == 2 and "rotation-protocol" in res.output


def test_paper_rotation_that_diverges_falls_back_to_the_weights_it_started_from(scene_and_net):
    """lr 1e6 diverges on every rotation: each falls back to the weights it started from (the
    trained ones here), so the sum is R predictions of the unrotated scene by the checkpoint."""
    scene, net = scene_and_net
    method = make_method("ttt-kd", net, AdaptConfig(steps=3, lr=1e6, rotations=2))
    out = method.process(scene)
    assert out.fallback is not None and len(out.losses) == 2
    torch.testing.assert_close(out.logits, 2 * predict_view(net, scene.view(0.0)))
    assert _same(method.state_snapshot(), _trained(method))
