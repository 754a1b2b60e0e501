"""``tttkd``: one umbrella command over the existing ones (``tttkd adapt`` = ``tttkd-adapt``).

Each subcommand is the very click command its ``tttkd-*`` script runs, imported only when
it is called (or listed by ``--help``), so options, defaults and help exist once.
"""

from __future__ import annotations

import importlib

import click

from tttkd.cli.guard import run_command

__all__ = ["SUBCOMMANDS", "cli", "main"]

# subcommand -> module whose ``cli`` it runs (the module of the matching tttkd-* script)
SUBCOMMANDS: dict[str, str] = {
    "prep": "tttkd.cli.prep",
    "train": "tttkd.cli.train",
    "adapt": "tttkd.cli.adapt",
    "synth": "tttkd.cli.synth",
    "demo": "tttkd.cli.demo",
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        return importlib.import_module(SUBCOMMANDS[cmd_name]).cli


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tttkd", prog_name="tttkd")
def cli() -> None:
    """TTT-KD: test-time training for 3D semantic segmentation by distillation from DINOv2.

    Each command is also installed on its own: `tttkd adapt ...` = `tttkd-adapt ...`
    (and `tttkd demo` is what `make demo` runs). Add --debug anywhere to see a Python
    traceback instead of a one-line error.
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``tttkd``); ``--debug`` shows tracebacks."""
    run_command(cli, argv, "tttkd")


if __name__ == "__main__":
    main()
