"""The options ``tttkd-adapt`` and its ``sweep`` share: generated from :class:`AdaptConfig`'s
fields (``cli/options.py``), plus the run's inputs and outputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import click

from tttkd.adapt.config import AdaptConfig
from tttkd.cli.cluster_options import CLUSTER_OPTIONS, cluster_options
from tttkd.cli.options import FieldOptions, config_file_options, split_commas

# fields that are not an option of both commands: methods and outputs (the main command's),
# free-form notes (config files only)
_OWN = ("methods", "save_predictions", "save_ply", "extra")
SHARED_FIELDS = [f.name for f in dataclasses.fields(AdaptConfig) if f.name not in _OWN]
# the options that say where things are and how to show progress, not how to adapt
RUN_OPTIONS = ("cache", "checkpoint", "out", "progress", "config_files", "sets", "overwrite")
RUN_OPTIONS += CLUSTER_OPTIONS

csv_list = split_commas


def adapt_options(fields: FieldOptions) -> Callable[[Callable], Callable]:
    """The shared options: inputs and outputs, ``--config``/``--set``, then ``fields``."""

    def decorate(f: Callable) -> Callable:
        f = fields(f)
        f = cluster_options()(f)
        f = click.option(
            "--overwrite",
            is_flag=True,
            help="discard the outcomes another run left in --out (a rerun of the same command "
            "resumes them instead)",
        )(f)
        f = click.option(
            "--progress/--no-progress", default=True, show_default=True, help="progress bar"
        )(f)
        f = config_file_options(f)
        f = click.option("--out", type=click.Path(file_okay=False), help="output folder")(f)
        f = click.option(
            "--checkpoint",
            type=click.Path(dir_okay=False),
            help="a checkpoint written by tttkd-train (.safetensors)",
        )(f)
        return click.option("--cache", help="the teacher cache (tttkd-prep --cache), path or URL")(
            f
        )

    return decorate
