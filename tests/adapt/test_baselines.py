"""The ttt-mae and adacontrast baselines on the real session cache (tests/adapt/conftest.py):
exactness at lr 0, what they update, seeds, state over the stream, clear errors."""

from __future__ import annotations

import pytest
import torch

from tttkd.adapt.config import AdaptConfig, AdaptConfigError
from tttkd.adapt.methods import make_method
from tttkd.adapt.methods.base import SceneOutcome
from tttkd.adapt.runner import run_adaptation
from tttkd.adapt.scenes import load_scene
from tttkd.model.checkpoint import load_checkpoint, save_checkpoint
from tttkd.model.mae import MAEConfig
from tttkd.model.network import SegKDNet
from tttkd.pipeline.cache import Cache


@pytest.fixture(scope="module")
def mae_checkpoint(adapt_fixture, tmp_path_factory):
    """The session's joint checkpoint plus an (untrained) MAE head, saved like tttkd-train."""
    fx = adapt_fixture
    net, info = load_checkpoint(fx.checkpoint)
    torch.manual_seed(5)
    mae = SegKDNet(net.backbone, net.num_classes, net.teacher_dim, net.kd_head_config,
                   mae=MAEConfig(0.4, 0.45, 32, "layer"))  # fmt: skip
    mae.load_state_dict(net.state_dict(), strict=False)  # the MAE head keeps its init
    path = tmp_path_factory.mktemp("mae") / "mae.safetensors"
    save_checkpoint(path, mae.eval(), label_set=info.label_set, class_names=info.class_names,
                    teacher_spec=info.teacher_spec, config=info.config)  # fmt: skip
    return path


def run(fx, checkpoint, **kw):
    outcomes = {}
    cfg = AdaptConfig(**{"steps": 3, "device": "cpu", "threads": 1, **kw})
    result = run_adaptation(
        cfg, fx.cache, checkpoint, progress=False, echo=lambda s: None,
        on_scene=lambda m, s, o: outcomes.__setitem__((m, s), o),
    )  # fmt: skip
    return result, outcomes


@pytest.mark.parametrize("rotations", [1, 2])
def test_ttt_mae_lr0_is_exactly_the_source_prediction(adapt_fixture, mae_checkpoint, rotations):
    """With R = 2 the ensemble protocol predicts each rotated view, as ``source`` does (the
    paper protocol predicts the unrotated scene R times)."""
    fx = adapt_fixture
    result, out = run(fx, mae_checkpoint, methods=("source", "ttt-mae"), lr=0.0, split="val",
                      rotations=rotations, rotation_protocol="ensemble")  # fmt: skip
    for sid in fx.val_scenes:
        assert out["ttt-mae", sid].steps == 3 * rotations
        assert torch.equal(out["ttt-mae", sid].logits, out["source", sid].logits)
    assert result.methods["ttt-mae"]["overall"] == result.methods["source"]["overall"]


def test_ttt_mae_updates_psi_3d_only_and_resets_per_scene(adapt_fixture, mae_checkpoint):
    fx = adapt_fixture
    net, _ = load_checkpoint(mae_checkpoint)
    cfg = AdaptConfig(methods=("ttt-mae",), steps=2, lr=0.5, threads=1)
    method = make_method("ttt-mae", net, cfg)
    cache = Cache.open(fx.cache, read_only=True)
    scene = load_scene(cache, fx.val_scenes[0], device="cpu", backend="torch", max_images=None,
                       seed=0, voxel_size=0.15, teacher=False)  # fmt: skip
    assert scene.num_pairs == 0  # no image was read
    out = SceneOutcome(logits=torch.zeros(0))
    method.begin_scene(scene, out)
    view = scene.view(0.0)
    logits = method._steps_and_predict(scene, view, view, out)
    assert logits is not None and out.steps == 2 and out.losses[0][0] > 0
    before, after = net.state_dict(), method.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("backbone.") for k in changed)
    assert not any("running_" in k for k in changed)  # BN statistics untouched (eval mode)
    out2 = method.process(scene)  # the whole protocol: the weights are back afterwards
    assert out2.updated
    assert all(torch.equal(v, method.net.state_dict()[k]) for k, v in before.items())


def test_ttt_mae_without_an_mae_head_is_a_clear_error(adapt_fixture):
    fx = adapt_fixture
    with pytest.raises(AdaptConfigError, match="--ssl mae"):
        run(fx, fx.checkpoint, methods=("source", "ttt-mae"), split="val")


def test_adacontrast_refinement_equals_a_brute_force_knn_vote():
    from tttkd.adapt.methods.adacontrast import refine_pseudo_labels

    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1)
    probs = torch.softmax(torch.randn(12, 4, generator=g) * 3, 1)
    labels, refined = refine_pseudo_labels(feats, bank, probs, k=3)
    for i in range(7):
        sims = [float(sum(feats[i, d] * bank[j, d] for d in range(5))) for j in range(12)]
        nearest = sorted(range(12), key=lambda j: -sims[j])[:3]
        vote = [sum(float(probs[j, c]) for j in nearest) / 3 for c in range(4)]
        assert refined[i].tolist() == pytest.approx(vote, abs=1e-6)
        assert int(labels[i]) == max(range(4), key=lambda c: vote[c])
    # k larger than the bank: every entry votes
    labels, refined = refine_pseudo_labels(feats, bank[:2], probs[:2], k=10)
    assert torch.allclose(refined, probs[:2].mean(0).expand(7, 4))


AC = dict(methods=("adacontrast",), ac_lr=0.05, ac_samples=256, ac_bank=1024)


def test_adacontrast_is_repeatable_with_a_seed(adapt_fixture):
    fx = adapt_fixture
    scenes = fx.val_scenes[:2]
    _, a = run(fx, fx.checkpoint, scenes=scenes, **AC)
    _, b = run(fx, fx.checkpoint, scenes=scenes, **AC)
    _, c = run(fx, fx.checkpoint, scenes=scenes, seed=1, **AC)
    for sid in scenes:
        assert a["adacontrast", sid].updated and a["adacontrast", sid].steps == 1
        assert torch.equal(a["adacontrast", sid].logits, b["adacontrast", sid].logits)
        assert a["adacontrast", sid].losses == b["adacontrast", sid].losses
    assert not torch.equal(a["adacontrast", scenes[1]].logits, c["adacontrast", scenes[1]].logits)


def test_adacontrast_carries_its_state_over_the_stream(adapt_fixture):
    fx = adapt_fixture
    s = fx.val_scenes
    _, a = run(
        fx, fx.checkpoint, scenes=(s[0], s[1]), **{**AC, "methods": ("adacontrast", "source")}
    )
    _, b = run(fx, fx.checkpoint, scenes=(s[1],), **AC)
    assert not torch.equal(a["adacontrast", s[1]].logits, b["adacontrast", s[1]].logits)
    assert not torch.equal(a["adacontrast", s[0]].logits, a["source", s[0]].logits)
    first = a["adacontrast", s[0]].extra["bank_size"]
    assert first > 0 and a["adacontrast", s[1]].extra["bank_size"] > first


def test_cli_runs_both_baselines_into_every_output_and_the_sweep(
    adapt_fixture, mae_checkpoint, tmp_path
):
    import csv
    import json

    from click.testing import CliRunner

    from tttkd.cli.adapt import cli

    fx = adapt_fixture
    common = ["--cache", fx.cache, "--checkpoint", str(mae_checkpoint), "--steps", "2",
              "--scenes", ",".join(fx.val_scenes[:2]), "--device", "cpu", "--no-progress",
              "--threads", "1"]  # fmt: skip
    out = tmp_path / "run"
    res = CliRunner().invoke(
        cli,
        [
            *common,
            "--out",
            str(out),
            "--method",
            "source,ttt-mae,adacontrast",
            "--ac-samples",
            "256",
            "--ac-bank",
            "1024",
        ],  # fmt: skip
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["ac_samples"] == 256
    for m in ("ttt-mae", "adacontrast"):
        assert 0 <= result["methods"][m]["overall"]["miou"] <= 1
        assert f"| {m} |" in (out / "table.md").read_text()
    assert {r["method"] for r in csv.DictReader((out / "results.csv").open())} >= {
        "ttt-mae", "adacontrast"
    }  # fmt: skip
    sweep = tmp_path / "sweep"
    res = CliRunner().invoke(
        cli,
        [
            "sweep",
            *common,
            "--out",
            str(sweep),
            "--method",
            "ttt-mae",
            "--over",
            "steps",
            "--values",
            "steps=0,2",
        ],  # fmt: skip
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    rows = {(r["sweep"], r["value"]): r for r in csv.DictReader((sweep / "sweep.csv").open())}
    assert rows["steps", "2.0"]["method"] == "ttt-mae"
    assert rows["steps", "0.0"]["miou"] == rows["source", "-"]["miou"]
    # a checkpoint without the MAE head: a one-line error, no traceback
    res = CliRunner().invoke(
        cli,
        [
            "--cache",
            fx.cache,
            "--checkpoint",
            str(fx.checkpoint),
            "--out",
            str(tmp_path / "bad"),
            "--method",
            "ttt-mae",
            "--device",
            "cpu",
        ],  # fmt: skip
    )
    assert res.exit_code == 1 and "--ssl mae" in res.output and "Traceback" not in res.output


def test_ttt_mae_runs_on_a_points_only_pointcept_cache(mae_checkpoint, tmp_path):
    """No frames, no teacher in the cache: ttt-mae (and source) need neither."""
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.pointcept_writer import write_pointcept_dataset

    write_pointcept_dataset(tmp_path / "pc", 1, split="val", spacing=0.1, seed=2)
    cfg = PrepConfig(dataset="pointcept", root=str(tmp_path / "pc"), out=str(tmp_path / "pc.zarr"),
                     no_images=True, label_set="scannet20", voxel_size=0.15)  # fmt: skip
    assert run_prep(cfg, SerialExecutor(), progress=False, echo=lambda s: None).exit_code == 0
    out = {}
    res = run_adaptation(
        AdaptConfig(methods=("source", "ttt-mae"), steps=2, lr=0.1, threads=1), cfg.out,
        mae_checkpoint, progress=False, echo=lambda s: None,
        on_scene=lambda m, s, o: out.__setitem__(m, o),
    )  # fmt: skip
    assert out["ttt-mae"].steps == 2 and out["ttt-mae"].updated
    assert 0 <= res.methods["ttt-mae"]["overall"]["miou"] <= 1


def test_ttt_mae_divergence_falls_back_to_the_unadapted_prediction(adapt_fixture, mae_checkpoint):
    fx = adapt_fixture
    sid = fx.val_scenes[0]
    result, out = run(fx, mae_checkpoint, methods=("source", "ttt-mae"), lr=1e6, scenes=(sid,))
    assert out["ttt-mae", sid].fallback is not None
    reason = out["ttt-mae", sid].fallback.reason
    assert "MAE loss" in reason and "KD" not in reason, reason  # names the method's own loss
    assert torch.equal(out["ttt-mae", sid].logits, out["source", sid].logits)
    assert [f["scene"] for f in result.methods["ttt-mae"]["fallbacks"]] == [sid]
