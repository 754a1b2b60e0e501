"""Backend selection: ``auto`` per device, and the start-up probe that refuses a wrong backend."""

from __future__ import annotations

import pytest
import torch

from tttkd.model.sparse import base, select
from tttkd.model.sparse.table_backend import TableBackend


class _OffByALittle(TableBackend):
    """Right everywhere except that transposed convs are 0.1 % too large."""

    name = "table"

    def conv(self, x, weight, *, kernel_size, stride, transposed):
        y = super().conv(x, weight, kernel_size=kernel_size, stride=stride, transposed=transposed)
        return y.replace(y.feats * 1.001) if transposed else y


class _WrongGradient(TableBackend):
    """Right forward, gradient w.r.t. the input scaled by 2 (a broken backward)."""

    name = "table"

    def conv(self, x, weight, *, kernel_size, stride, transposed):
        y = super().conv(x, weight, kernel_size=kernel_size, stride=stride, transposed=transposed)
        return y.replace(_ScaleGrad.apply(y.feats))


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return 2 * g


class _Crashes(TableBackend):
    name = "table"

    def conv(self, x, weight, *, kernel_size, stride, transposed):
        raise RuntimeError("no kernel image is available for execution on the device")


@pytest.fixture(autouse=True)
def _fresh_probe_cache(monkeypatch):
    monkeypatch.setattr(select, "_VERIFIED", {})


def test_table_and_reference_pass_the_probe_on_cpu():
    select.probe_backend("table", "cpu")
    select.probe_backend("torch", "cpu")


@pytest.mark.parametrize(
    "broken,expect",
    [
        (_OffByALittle(), "kernel 2, stride 2, transposed conv: forward differs"),
        (_WrongGradient(), "grad input differs"),
        (_Crashes(), "it raised RuntimeError"),
    ],
)
def test_probe_refuses_a_broken_backend_with_a_clear_message(broken, expect):
    with pytest.raises(select.BackendCheckError) as err:
        select.probe_backend(broken, "cpu")
    msg = str(err.value)
    assert "'table' failed its start-up check on cpu" in msg
    assert expect in msg
    assert "--backend torch" in msg


def test_auto_on_cpu_is_the_measured_cpu_winner():
    assert select.PREFERENCE["cpu"][0] == "torch"
    assert select.resolve_backend("auto", "cpu") == "torch"


def test_auto_skips_a_backend_that_fails_its_probe(monkeypatch):
    monkeypatch.setitem(select.PREFERENCE, "cpu", ("table", "torch"))
    assert select.resolve_backend("auto", "cpu") == "table"  # the real one passes
    monkeypatch.setattr(select, "_VERIFIED", {})
    monkeypatch.setitem(base._BACKENDS, "table", _OffByALittle())
    with pytest.warns(UserWarning, match="skipping 'table'"):
        assert select.resolve_backend("auto", "cpu") == "torch"


def test_a_requested_backend_that_fails_is_refused_not_replaced(monkeypatch):
    monkeypatch.setitem(base._BACKENDS, "table", _WrongGradient())
    with pytest.raises(select.BackendCheckError, match="grad input"):
        select.resolve_backend("table", "cpu")
    with pytest.raises(select.BackendCheckError):  # remembered, not re-probed into success
        select.resolve_backend("table", "cpu")
    assert select.resolve_backend("torch", "cpu") == "torch"


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        select.resolve_backend("cuda-magic", "cpu")


def test_cuda_preference_never_lists_minkowski():
    assert select.PREFERENCE["cuda"][0] == "table"
    assert "minkowski" not in select.PREFERENCE["cuda"]
    assert select.PREFERENCE["cuda"][-1] == "torch"


def test_backend_line_says_backend_device_and_precision():
    line = select.backend_line("table", "auto", "cuda:0", "bf16 autocast")
    assert line == (
        "sparse backend: table (auto, verified against the torch reference) on cuda:0; "
        "precision: bf16 autocast"
    )
    assert "(checkpoint's, reference)" in select.backend_line("torch", None, "cpu", "fp32")


def test_training_resolves_through_the_same_rule_with_config_errors(monkeypatch):
    from tttkd.model.config import ConfigError
    from tttkd.model.train_setup import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ConfigError, match="runtime.backend: unknown sparse backend"):
        resolve_backend("cuda-magic", torch.device("cpu"))
    monkeypatch.setitem(base._BACKENDS, "table", _Crashes())
    with pytest.raises(ConfigError, match="failed its start-up check"):
        resolve_backend("table", torch.device("cpu"))
