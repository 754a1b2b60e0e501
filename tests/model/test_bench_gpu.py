"""benchmarks/bench_gpu.py: says so and exits 0 without CUDA; its table and ratios; its CPU
code path on a tiny room (the GPU figures themselves are measured on a GPU, not here)."""

from __future__ import annotations

import torch

from benchmarks import bench_gpu


def test_without_cuda_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main([]) == 0
    assert "no CUDA device found" in capsys.readouterr().out


def test_row_ratios_against_reference_and_paper():
    cells = bench_gpu.Row("fwd+bwd", "table", "bf16", 50.0, 512.0, ref_ms=100.0).cells()
    assert cells[3:7] == ["50.0 ms", "2.00x", f"{177 / 50:.2f}x", "512"]
    online = bench_gpu.Row("online", "table", "fp32", 6.0, ref_ms=2.0, unit="scenes/s")
    assert online.cells()[3:6] == ["6.0 scenes/s", "3.00x", "-"]
    assert bench_gpu.Row("check", "spconv", "fp32", None, note="refused").cells()[3] == "-"


def test_cpu_quick_network_figures_write_a_table(tmp_path, capsys):
    out = tmp_path / "t.md"
    args = ["--device", "cpu", "--quick", "--skip-adapt", "--voxels", "2000", "--repeats", "1"]
    args += ["--arch", "minkunet_test", "--backends", "torch,table", "--precisions", "fp32,bf16"]
    assert bench_gpu.main([*args, "--out", str(out)]) == 0
    table = out.read_text()
    assert "torch " in table and "CUDA" in table
    rows = [line for line in table.splitlines() if line.startswith("| fwd+bwd")]
    assert {tuple(r.split(" | ")[1:3]) for r in rows} == {
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("table", "fp32"),
        ("table", "bf16"),
    }
    assert rows[0].split(" | ")[4] == "1.00x"  # the reference against itself
    assert sum(line.startswith("| train step") for line in table.splitlines()) == 2
    (check,) = [line for line in table.splitlines() if line.startswith("| equals torch")]
    assert "| table |" in check and check.endswith("| ok |")
