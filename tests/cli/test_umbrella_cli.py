"""``tttkd`` dispatches to the very commands of the ``tttkd-*`` scripts (cli/main.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tttkd.cli.main import SUBCOMMANDS
from tttkd.cli.main import main as tttkd_main

REPO = Path(__file__).resolve().parents[2]


def _help(entry, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        entry(argv)
    assert exit_info.value.code == 0, argv
    return capsys.readouterr().out


def test_umbrella_is_declared_and_lists_every_subcommand(tmp_path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tttkd"] == "tttkd.cli.main:main"
    # a fresh interpreter, as the console script runs it
    code = "from tttkd.cli.main import main; main(['--help'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split("Commands:", 1)[1].split()
    for name in ("prep", "train", "adapt", "synth", "demo"):
        assert name in listed, name


@pytest.mark.parametrize("name", ["prep", "train", "adapt", "synth"])
def test_subcommand_help_equals_the_script_help(name, capsys) -> None:
    script = importlib.import_module(SUBCOMMANDS[name]).main
    direct = _help(script, ["--help"], capsys)
    via = _help(tttkd_main, [name, "--help"], capsys)
    assert f"Usage: tttkd {name} " in via
    # same text but the program name ("tttkd adapt" and "tttkd-adapt" have the same width)
    assert via.replace(f"tttkd {name}", f"tttkd-{name}") == direct


def test_umbrella_runs_a_subcommand_and_reports_errors_without_traceback(capsys) -> None:
    via = _help(tttkd_main, ["prep", "inspect", "--help"], capsys)
    assert "Usage: tttkd prep inspect" in via
    with pytest.raises(SystemExit) as exit_info:
        tttkd_main(["adapt", "--no-such-option"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No such option '--no-such-option'" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        tttkd_main(["nope"])
    assert exit_info.value.code == 2
    assert "No such command 'nope'" in capsys.readouterr().err
