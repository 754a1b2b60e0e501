"""Settings as dataclass fields that carry their own help: one source of truth per setting.

Each config field (``PrepConfig``, ``TrainConfig``'s sections, ``AdaptConfig``) is declared
with :func:`setting`, which keeps the default, the help text and the allowed values together;
``cli/options.py`` turns those fields into click options, and the functions below build a
config from layers (defaults <- ``--config`` files <- named options <- ``--set``). Unknown
keys and badly typed values are errors naming the key, never silently ignored. Files users
give are data: YAML, JSON or TOML, parsed safely. No click and no torch here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build",
    "check_keys",
    "coerce",
    "merge_delta",
    "read_config_file",
    "resolve_device",
    "setting",
    "layered",
    "to_plain",
]


class ConfigError(ValueError):
    """A config key or value that does not fit the schema (names the key and the fix)."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Any = dataclasses.MISSING,
    choices: tuple[str, ...] | str | None = None,
    option: str | None = None,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    path: Literal["file", "dir"] | None = None,
) -> Any:
    """A dataclass field with its help text and the checks its command-line option applies.

    ``choices``: the allowed values, or the name of a list resolved lazily by the CLI
    (``"backend"``, ``"arch"``, ``"label_set"``, ``"device"``); ``option``: the option's
    spelling when it is not ``--field-name`` (``"--bn-online/--bn-per-scene"``); ``min`` /
    ``max``: numeric bounds (``*_open``: strict); ``path``: an existing file or folder.
    """
    meta = {
        "help": help,
        "choices": choices,
        "option": option,
        "min": min,
        "max": max,
        "min_open": min_open,
        "max_open": max_open,
        "path": path,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is visible, else ``cpu``; other names as given."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- type conversion ---------------------------------------------------------------------
def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotation ``tp``; ConfigError when it does not fit."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover (schema bug)


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint} (known here: {', '.join(known)})")


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """A (nested) dataclass from a (partial) mapping: missing keys keep their defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise _unknown(key, names)
        tp = hints[k]
        kwargs[k] = build(tp, v, f"{key}.") if dataclasses.is_dataclass(tp) else coerce(v, tp, key)
    missing = [
        f"{prefix}{f.name}"
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing setting(s) {', '.join(missing)}")
    return cls(**kwargs)


def check_keys(cls: type, data: Any, prefix: str = "") -> None:
    """ConfigError for a key ``cls`` does not have or a value of the wrong type in the
    (partial) mapping ``data``; builds nothing, so a file is checked on its own."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise _unknown(key, names)
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            check_keys(tp, v, f"{key}.")
        else:
            coerce(v, tp, key)


def to_plain(obj: Any) -> Any:
    """A dataclass (or value) as plain dicts and lists: what YAML, JSON and checkpoints store."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: to_plain(x) for k, x in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    return obj


def merge_delta(base: dict, delta: Any, prefix: str = "") -> dict:
    """``base`` with the nested ``delta`` laid over it (keys checked later by the schema)."""
    if not isinstance(delta, Mapping):
        raise ConfigError(f"{prefix or 'config'}: a config delta must be a mapping, got {delta!r}")
    out = dict(base)
    for k, v in delta.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge_delta(out[k], v, f"{prefix}{k}.")
        else:
            out[k] = v
    return out


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """``["optim.lr=0.01", "augment.scale=[0.8,1.2]"]`` laid over ``data``; values are YAML."""
    import yaml

    out = data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. lr=0.01)")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse {raw!r} ({e})") from e
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        out = merge_delta(out, nested)
    return out


def read_config_file(path: str | Path) -> dict:
    """A config file as a mapping: ``.json`` and ``.toml`` by suffix, anything else YAML.

    A file with a top-level ``config`` mapping (a ``results.json``) gives that mapping, so a
    run is repeated from what it saved.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # JSONDecodeError, TOMLDecodeError are ValueErrors
        raise ConfigError(f"config file {path} cannot be parsed: {e}") from e
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path}: expected a mapping of settings, got {data!r}")
    if isinstance(data.get("config"), Mapping):
        data = data["config"]
    return dict(data)


def layered(
    cls: type,
    files: list[str | Path] | tuple = (),
    named: dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict | None = None,
) -> Any:
    """``cls`` from defaults (or ``base``) <- each file in order <- ``named`` <- ``--set``."""
    data = dict(base or {})
    for f in files:
        try:
            delta = read_config_file(f)
            check_keys(cls, delta)  # name the file whose key is wrong
        except ConfigError as e:
            raise ConfigError(f"{f}: {e}") from e
        data = merge_delta(data, delta)
    data = merge_delta(data, named or {})
    return build(cls, apply_overrides(data, overrides))
