"""tttkd-adapt's sparse backend: ``auto`` resolves per device and is announced in one line;
the neighbour-table backend gives the reference's results through the real adapt path."""

from __future__ import annotations

from tttkd.adapt.config import AdaptConfig
from tttkd.adapt.runner import run_adaptation


def _run(fx, backend, lines, methods=("source",)):
    outcomes = {}
    cfg = AdaptConfig(methods=methods, steps=2, device="cpu", backend=backend, split="val", lr=0.1)
    run_adaptation(
        cfg,
        fx.cache,
        fx.checkpoint,
        progress=False,
        echo=lines.append,
        on_scene=lambda m, s, o: outcomes.__setitem__((m, s), o),
    )
    return outcomes


def test_auto_backend_on_cpu_is_announced(adapt_fixture):
    lines: list[str] = []
    _run(adapt_fixture, "auto", lines)
    assert "sparse backend: torch (auto, reference) on cpu; precision: fp32" in lines


def test_table_backend_adapts_like_the_reference(adapt_fixture):
    fx = adapt_fixture
    ref_lines: list[str] = []
    lines: list[str] = []
    ref = _run(fx, None, ref_lines, methods=("ttt-kd",))
    got = _run(fx, "table", lines, methods=("ttt-kd",))
    assert any(s.startswith("sparse backend: table (requested, verified") for s in lines)
    assert any("(checkpoint's, reference)" in s for s in ref_lines)
    assert ref.keys() == got.keys() and ref
    for key, out in ref.items():
        assert got[key].steps == out.steps == 2
        a, b = got[key].logits, out.logits
        assert float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max())), key
