"""One source of truth per setting and one vocabulary across the CLIs (#15 items 1 and 2).

Every config field is an option of its command and every option is a field or a declared
run option (where things are, how to run); each field's help text is written once in the
source; the shared names (--cache, --scenes, --device, --backend, --seed, --max-images,
--config, --set) have the same type and default in every command, defaults are shown.
"""

from __future__ import annotations

import ast
import enum
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tttkd.adapt.config import AdaptConfig
from tttkd.cli import adapt, adapt_options, prep, synth, train
from tttkd.cli.options import FieldOptions, LazyChoice, field_at, leaf_paths
from tttkd.model.config import TrainConfig
from tttkd.pipeline.plan import PrepConfig

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("cli", "adapt", "model", "pipeline", "tttkd")

SWEEP_OWN = ("over", "dev_scenes", "sweep_method", "value_specs", "momentum_steps", "teachers")
# command -> (click command, its generated options, config class, options that are no field,
#             fields set otherwise than by their own generated option)
COMMANDS = {
    "prep": (
        prep.cli.commands["scannet"],
        prep.FIELDS,
        PrepConfig,
        (
            *prep.RUN_OPTIONS,
            "out_alias",
            "scene_alias",
            *(k for _, k, _ in prep.READER_OPTIONS["scannet"]),
        ),
        tuple(prep.BY_HAND),
    ),
    "train": (
        train.cli,
        train.FIELDS,
        TrainConfig,
        (*train.RUN_OPTIONS, *train.SHORTHANDS),
        (),
    ),
    "adapt": (
        adapt.cli,
        adapt.MAIN_FIELDS,
        AdaptConfig,
        (*adapt_options.RUN_OPTIONS, "no_plots"),
        ("extra",),  # free-form notes: config files only
    ),
    "adapt sweep": (
        adapt.cli.commands["sweep"],
        adapt.SWEEP_FIELDS,
        AdaptConfig,
        (*adapt_options.RUN_OPTIONS, *SWEEP_OWN),
        ("extra", "methods", "save_predictions", "save_ply"),  # sweep's --method: one method
    ),
}


def _options(cmd: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in cmd.params if isinstance(p, click.Option)}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_field_has_an_option_and_every_option_a_field(name):
    cmd, fields, cls, run_options, by_hand = COMMANDS[name]
    options = _options(cmd)
    not_mapped = [p for p in options if p not in fields.params and p not in run_options]
    assert not_mapped == [], f"{name}: options that set no config field: {not_mapped}"
    covered = set(fields.params.values()) | set(by_hand)
    missing = [path for path in leaf_paths(cls) if path not in covered]
    assert missing == [], f"{name}: config fields without an option: {missing}"
    for param, path in fields.params.items():
        assert param in options, f"{name}: {path} generated but not on the command"


def _string_constants() -> list[str]:
    """Every string literal of the library's source (implicit concatenation joined)."""
    out = []
    for folder in SOURCES:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            out += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    return [v for v in out if isinstance(v, str)]


def test_each_help_text_is_written_once():
    constants = _string_constants()
    for cls in (PrepConfig, TrainConfig, AdaptConfig):
        for path in leaf_paths(cls):
            f, _ = field_at(cls, path)
            help_text = f.metadata["help"]
            assert constants.count(help_text) == 1, f"{cls.__name__}.{path}: {help_text!r}"


def test_no_command_declares_a_generated_option_by_hand():
    """A field's option name passed to click.option in cli/ would be a second default."""
    files = {
        "prep": ["prep.py"],
        "train": ["train.py"],
        "adapt": ["adapt.py", "adapt_options.py"],
        "adapt sweep": ["adapt.py", "adapt_options.py"],
    }
    own = {"--method"}  # sweep's --method: the one method of its steps/momentum sweeps
    for name, (_, fields, *_) in COMMANDS.items():
        generated = set(fields.names.values()) - own
        for file in files[name]:
            for node in ast.walk(ast.parse((REPO / "cli" / file).read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "option":
                    decls = {
                        str(a.value).split("/")[0] for a in node.args if isinstance(a, ast.Constant)
                    }
                    assert not decls & generated, f"{file} declares {decls & generated} by hand"


# the shared vocabulary: option -> (commands that have it, same default everywhere?)
SHARED = {
    "--cache": (("prep", "train", "adapt", "adapt sweep"), True),
    "--scenes": (("prep", "adapt", "adapt sweep"), True),
    "--device": (("prep", "train", "adapt", "adapt sweep"), True),
    # adapt's default: the checkpoint's backend
    "--backend": (("train", "adapt", "adapt sweep"), False),
    "--seed": (("prep", "train", "adapt", "adapt sweep", "synth"), True),
    # defaults per stage: the dataset's (prep), 8 per step (train), all cached (adapt)
    "--max-images": (("prep", "train", "adapt", "adapt sweep"), False),
    "--config": (("prep", "train", "adapt", "adapt sweep"), True),
    # the Dask cluster options of prep and adapt (pipeline/cluster.py)
    "--workers": (("prep", "adapt", "adapt sweep"), True),
    "--gpus": (("prep", "adapt", "adapt sweep"), True),
    "--scheduler": (("prep", "adapt", "adapt sweep"), True),
    "--memory-limit": (("prep", "adapt", "adapt sweep"), True),
    "--dashboard": (("prep", "adapt", "adapt sweep"), True),
    "--progress": (("prep", "train", "adapt", "adapt sweep"), True),
    "--set": (("prep", "train", "adapt", "adapt sweep"), True),
}


def _default(p: click.Option) -> object:
    """The option's default; click 8.3's UNSET sentinel (no default) as None."""
    return None if isinstance(p.default, enum.Enum) else p.default


def _by_option(cmd: click.Command) -> dict[str, click.Option]:
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


def _cmd(name: str) -> click.Command:
    return synth.cli if name == "synth" else COMMANDS[name][0]


@pytest.mark.parametrize("option", SHARED)
def test_shared_options_have_one_type_and_default(option):
    commands, same_default = SHARED[option]
    seen = {}
    for name in commands:
        p = _by_option(_cmd(name)).get(option)
        assert p is not None and not p.hidden, f"{name} has no {option}"
        kind = (type(p.type).__name__, p.multiple, p.type.get_metavar(p, None))
        seen[name] = (kind, _default(p) if same_default else None)
    assert len(set(seen.values())) == 1, f"{option} differs between commands: {seen}"


def test_device_is_auto_and_backend_a_choice_everywhere():
    for name in SHARED["--device"][0]:
        assert _by_option(_cmd(name))["--device"].default == "auto", name
    for name in SHARED["--backend"][0]:
        p = _by_option(_cmd(name))["--backend"]
        assert isinstance(p.type, click.Choice) and "auto" in p.type.choices, name


def test_lazy_choice_metavars_list_the_real_choices():
    for cmd in (train.cli, prep.cli.commands["scannet"]):
        for p in cmd.params:
            if isinstance(p.type, LazyChoice):
                shown = p.type.get_metavar(p, None).strip("[]").split("|")
                assert shown == list(p.type.choices), p.name


@pytest.mark.parametrize(
    "args",
    [["prep", "scannet"], ["train"], ["adapt"], ["adapt", "sweep"], ["synth", "scannet"]],
    ids=" ".join,
)
def test_every_help_shows_the_defaults_and_the_shared_names(args):
    mains = {"prep": prep.cli, "train": train.cli, "adapt": adapt.cli, "synth": synth.cli}
    r = CliRunner().invoke(mains[args[0]], [*args[1:], "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    cmd = _cmd(" ".join(args[:2]) if args[0] == "adapt" else args[0])
    ctx = click.Context(cmd, **cmd.context_settings)
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden and _default(p) not in (None, (), False):
            assert "default:" in p.get_help_record(ctx)[1], f"{args}: {p.opts[0]} hides it"
    if args[0] != "synth":
        assert "--device [auto|cpu|cuda|cuda:N]" in text and "[default: auto]" in text
        assert "--cache TEXT" in text and "--config FILE" in text and "--set KEY=VALUE" in text
        assert "0 = all" in text  # --max-images 0 means every image, in every command
    else:
        assert "--num-scenes INTEGER RANGE" in text and "--scenes" not in text.replace(
            "--num-scenes", ""
        )
    assert "--out" not in text or args[0] != "prep"  # prep's cache is --cache


def test_the_generated_options_parse_to_the_config_types():
    """``--scale 0.8,1.2`` is a tuple of floats and ``--scenes a,b --scenes c`` ids."""
    fields = FieldOptions(TrainConfig, ["augment.scale", "data.max_images"])

    @click.command()
    @fields
    def cmd(**kw):
        click.echo(repr(fields.take(kw)))

    r = CliRunner().invoke(cmd, ["--scale", "0.8,1.2", "--max-images", "0"])
    assert ast.literal_eval(r.output) == {
        "augment": {"scale": [0.8, 1.2]},
        "data": {"max_images": 0},
    }
    r = CliRunner().invoke(cmd, ["--scale", "0.8,x"])
    assert r.exit_code == 2 and "--scale" in r.output and "comma list of numbers" in r.output
    scenes = FieldOptions(AdaptConfig, ["scenes"])

    @click.command()
    @scenes
    def cmd2(**kw):
        click.echo(repr(scenes.take(kw)))

    r = CliRunner().invoke(cmd2, ["--scenes", "a,b", "--scenes", "c"])
    assert r.output.strip() == "{'scenes': ['a', 'b', 'c']}"
    assert CliRunner().invoke(cmd2, []).output.strip() == "{}"  # defaults stay out of deltas
