"""Config files users give are data: YAML, JSON or TOML parsed safely, keys checked; a run's
saved config given back with ``--config`` resolves to the same config."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from tttkd.adapt.config import AdaptConfig
from tttkd.cli import train
from tttkd.settings import ConfigError, layered, read_config_file


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a.yaml", "steps: 7\nscenes: [s1, s2]\n"),
        ("a.json", '{"steps": 7, "scenes": ["s1", "s2"]}'),
        ("a.toml", 'steps = 7\nscenes = ["s1", "s2"]\n'),
        ("results.json", '{"config": {"steps": 7, "scenes": ["s1", "s2"]}, "overall": {}}'),
    ],
)
def test_yaml_json_toml_and_a_results_file_read_alike(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    cfg = layered(AdaptConfig, [f], {"lr": 0.5}, ["seed=3"])
    assert (cfg.steps, cfg.scenes, cfg.lr, cfg.seed) == (7, ("s1", "s2"), 0.5, 3)


def test_a_config_file_is_data_not_code(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("steps: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="evil.yaml cannot be parsed"):
        read_config_file(f)


def test_wrong_keys_and_types_name_the_file_and_key(tmp_path):
    f = tmp_path / "typo.toml"
    f.write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match=r"typo.toml: unknown config key 'stepz'.*'steps'"):
        layered(AdaptConfig, [f])
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        layered(AdaptConfig, overrides=["steps=many"])
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_config_file(tmp_path / "list.json")


def test_train_repeats_from_its_saved_config(tmp_path):
    args = ["--cache", "unused.zarr", "--out", str(tmp_path / "run"), "--print-config"]
    first = CliRunner().invoke(train.cli, [*args, "--lr", "0.01", "--scale", "0.8,1.2"])
    assert first.exit_code == 0, first.output
    saved = tmp_path / "config.yaml"
    saved.write_text(first.output)
    as_json = tmp_path / "config.json"
    as_json.write_text(json.dumps(yaml.safe_load(first.output)))
    for f in (saved, as_json):
        again = CliRunner().invoke(train.cli, [*args, "--config", str(f)])
        assert again.exit_code == 0 and again.output == first.output
    data = yaml.safe_load(first.output)
    assert data["optim"]["lr"] == 0.01 and data["augment"]["scale"] == [0.8, 1.2]
    # a named option wins over the file, --set over both
    r = CliRunner().invoke(
        train.cli, [*args, "--config", str(saved), "--lr", "0.02", "--set", "epochs=3"]
    )
    assert yaml.safe_load(r.output)["optim"]["lr"] == 0.02
    assert yaml.safe_load(r.output)["epochs"] == 3
