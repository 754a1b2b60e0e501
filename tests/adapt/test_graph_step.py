"""CUDA-graph TTT steps: the rule that decides captured vs eager (CPU), the eager path is
unchanged by the option (CPU), and captured steps give the eager loop's weights (GPU only)."""

from __future__ import annotations

import pytest
import torch

from tttkd.adapt.config import AdaptConfig, AdaptConfigError
from tttkd.adapt.graph_step import MIN_GRAPH_STEPS, graph_decision

OK = dict(
    device_type="cuda",
    steps=100,
    backend="table",
    optimizer="SGD",
    bn_mode="eval",
    bn_momentum_none=False,
)


def test_capture_when_everything_allows_it():
    assert graph_decision("auto", **OK) == (True, "captured")
    assert graph_decision("on", **OK) == (True, "captured")


@pytest.mark.parametrize(
    "mode,change,why",
    [
        ("off", {}, "cuda_graphs is off"),
        ("auto", {"device_type": "cpu"}, "device is cpu"),
        ("on", {"device_type": "cpu"}, "device is cpu"),
        ("auto", {"steps": MIN_GRAPH_STEPS - 1}, "would not pay"),
        ("auto", {"steps": 1}, "would not pay"),  # the online stream's one step per scene
        ("auto", {"backend": "spconv"}, "not known capture-safe"),
        ("auto", {"optimizer": "Adam"}, "optimizer Adam"),
        ("auto", {"bn_mode": "train", "bn_momentum_none": True}, "momentum=None"),
    ],
)
def test_eager_when_something_blocks_capture(mode, change, why):
    captured, reason = graph_decision(mode, **{**OK, **change})
    assert not captured
    assert why in reason


def test_train_bn_with_a_momentum_is_capturable_and_bad_modes_are_errors():
    assert graph_decision("auto", **{**OK, "bn_mode": "train"})[0]
    assert graph_decision("auto", **{**OK, "bn_mode": "scene", "bn_momentum_none": True})[0]
    with pytest.raises(ValueError, match="cuda_graphs must be one of"):
        graph_decision("yes", **OK)


def test_config_refuses_cuda_graphs_on_without_cuda():
    assert AdaptConfig().cuda_graphs == "auto"
    with pytest.raises(AdaptConfigError, match="needs a CUDA device"):
        AdaptConfig(cuda_graphs="on", device="cpu")
    with pytest.raises(AdaptConfigError, match="auto, on or off"):
        AdaptConfig(cuda_graphs="maybe")
    AdaptConfig(cuda_graphs="on", device="cuda:0")  # fine on a CUDA device


def _steps(fx, device: str, backend: str, cuda_graphs: str, steps: int = 5):
    from tttkd.adapt.safety import DivergenceGuard
    from tttkd.adapt.scenes import load_scene
    from tttkd.adapt.ttt import kd_optimizer, run_kd_steps
    from tttkd.model.checkpoint import load_checkpoint
    from tttkd.pipeline.cache import Cache

    net, _ = load_checkpoint(fx.checkpoint, device=torch.device(device))
    cache = Cache.open(fx.cache, read_only=True)
    scene = load_scene(
        cache, fx.val_scenes[0], device=device, backend=backend, max_images=None, seed=0
    )
    opt = kd_optimizer(net, lr=0.5, momentum=0.9)  # momentum: its buffers must carry too
    log = run_kd_steps(
        net,
        opt,
        scene,
        scene.view(0.0),
        steps=steps,
        bn_mode="eval",
        guard=DivergenceGuard(4.0),
        cuda_graphs=cuda_graphs,
    )
    weights = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return log, weights


def test_auto_on_cpu_is_exactly_the_eager_loop(adapt_fixture):
    log_off, w_off = _steps(adapt_fixture, "cpu", "torch", "off", steps=3)
    log_auto, w_auto = _steps(adapt_fixture, "cpu", "torch", "auto", steps=3)
    assert not log_auto.captured and not log_off.captured
    assert log_auto.losses == log_off.losses and log_auto.steps == 3
    for k, v in w_off.items():
        assert torch.equal(w_auto[k], v), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("backend", ["table", "torch"])
def test_captured_steps_give_the_eager_weights_on_gpu(adapt_fixture, backend):
    steps = 6
    log_eager, w_eager = _steps(adapt_fixture, "cuda", backend, "off", steps)
    log_graph, w_graph = _steps(adapt_fixture, "cuda", backend, "on", steps)
    assert log_graph.captured and not log_eager.captured
    assert log_graph.steps == log_eager.steps == steps
    assert log_graph.divergence is None and log_eager.divergence is None
    assert log_graph.losses == pytest.approx(log_eager.losses, rel=1e-4, abs=1e-6)
    assert log_eager.losses[-1] != log_eager.losses[0]  # the weights did move
    for k, v in w_eager.items():
        torch.testing.assert_close(w_graph[k], v, rtol=1e-4, atol=1e-5, msg=k)
