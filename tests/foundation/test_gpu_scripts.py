"""The GPU-check scripts (issue 10) parse, document every step, and take their pins from one
place, so a session lent a GPU spends its minutes measuring, not debugging the script.

Cheap on purpose: ``bash -n``, text checks and one run with every step skipped. The flow
itself is exercised with ``GPU_CHECK_DEVICE=cpu bash scripts/gpu_check.sh --quick
--no-install`` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "gpu_check.sh"
WHEELS = REPO / "scripts" / "gpu_wheels.sh"


def _steps() -> list[str]:
    m = re.search(r"^STEPS=\(([^)]*)\)", CHECK.read_text(), re.M)
    assert m, "gpu_check.sh defines no STEPS=(...)"
    return m.group(1).split()


def _budgets(name: str) -> dict[str, int]:
    m = re.search(rf"^declare -A {name}=\(([^)]*)\)", CHECK.read_text(), re.M)
    assert m, f"gpu_check.sh defines no {name} budgets"
    return {k: int(v) for k, v in re.findall(r"\[([\w-]+)\]=(\d+)", m.group(1))}


@pytest.mark.parametrize("script", [CHECK, WHEELS], ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_every_step_is_documented_with_its_budgets():
    steps, full, quick = _steps(), _budgets("FULL"), _budgets("QUICK")
    assert steps[0] == "env" and set(full) == set(quick) == set(steps)
    header = CHECK.read_text().split("\nset -uo pipefail")[0]
    for s in steps:  # "#   NAME   FULL/QUICK   what it runs"
        assert re.search(rf"^#   {s} +{full[s]}/{quick[s]} ", header, re.M), f"step {s}"
    total = f"{sum(full.values())} / {sum(quick.values())}"
    assert f"default their sum: {total}" in header
    status = (REPO / "benchmarks" / "RESULTS.md").read_text().split("## Tables")[0]
    for s in steps:
        assert f"`{s}`" in status, f"benchmarks/RESULTS.md's Status does not name step {s}"


def test_skip_options_and_summary(tmp_path):
    skips = [f"--skip-{s}" for s in _steps()]
    run = subprocess.run(
        ["bash", str(CHECK), *skips],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "GPU_CHECK_DEVICE": "cpu"},
    )
    assert run.returncode == 0, run.stderr
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"| {s} | skipped |" in summary for s in _steps())
    bad = subprocess.run(["bash", str(CHECK), "--skip-nothing"], capture_output=True, text=True)
    assert bad.returncode == 2 and "steps: env tests" in bad.stderr


def test_wheel_pins_come_from_requirements_dev():
    pinned = set(re.findall(r"^([\w-]+)==", (REPO / "requirements-dev.txt").read_text(), re.M))
    used = set(re.findall(r"\$\(pin ([\w-]+)\)", WHEELS.read_text()))
    assert {"zarr", "dask", "distributed", "spconv", "cumm"} <= used
    assert used <= pinned, f"gpu_wheels.sh reads pins requirements-dev.txt lacks: {used - pinned}"
