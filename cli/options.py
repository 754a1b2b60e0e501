"""Click options generated from config fields, so each default and help text is written once.

:class:`FieldOptions` turns dataclass fields declared with :func:`tttkd.settings.setting`
into options (name ``--field-name`` unless the field says otherwise, type from the
annotation, bounds and choices from the field, default shown) and takes back, after
parsing, only the values given on the command line, as a nested delta that is laid over
the ``--config`` files. :func:`config_file_options` adds the shared ``--config`` /
``--set``; :func:`deprecated_alias` keeps an old option name working for one release.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args, get_origin

import click
from click.core import ParameterSource

from tttkd.cli.guard import FiniteFloat, device_problem

__all__ = [
    "CommaList",
    "DeviceType",
    "FieldOptions",
    "NumberList",
    "config_file_options",
    "deprecated_alias",
    "field_at",
    "leaf_paths",
    "split_commas",
]


class LazyChoice(click.Choice):
    """A choice whose values are imported on first use (backends and archs need torch)."""

    def __init__(self, loader: Callable[[], list[str]], metavar: str) -> None:
        super().__init__([])
        self._loader, self._metavar = loader, metavar
        self._loaded: list[str] | None = None

    @property
    def choices(self) -> list[str]:  # type: ignore[override]
        if self._loaded is None:
            self._loaded = list(self._loader())
        return self._loaded

    @choices.setter
    def choices(self, value: Any) -> None:
        pass

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self._metavar


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine."""

    name = "device"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[auto|cpu|cuda|cuda:N]"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        problem = device_problem(value)
        if problem:
            self.fail(problem, param, ctx)
        return value


class CommaList(click.ParamType):
    """Ids given as a comma list, repeatable (``--scenes a,b --scenes c``)."""

    name = "ids"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "ID[,ID...]"


class NumberList(click.ParamType):
    """Numbers as one comma list (``--scale 0.8,1.2``), each converted to ``item``."""

    name = "numbers"

    def __init__(self, item: type) -> None:
        self.item = item

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "X[,X...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(v) for v in split_commas(str(value)))
        except ValueError:
            self.fail(f"{value!r} is not a comma list of numbers", param, ctx)


def leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Dotted paths of every non-dataclass field of the (nested) dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += leaf_paths(tp, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def split_commas(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """``("a,b", "c")`` -> ``("a", "b", "c")``; blanks dropped."""
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def _backends() -> list[str]:
    from tttkd.model.sparse.base import BACKEND_NAMES

    return ["auto", *BACKEND_NAMES]


def _archs() -> list[str]:
    from tttkd.model.minkunet import ARCHITECTURES

    return list(ARCHITECTURES)


def _label_sets() -> list[str]:
    from tttkd.core import LABEL_SETS

    return list(LABEL_SETS)


LAZY_CHOICES: dict[str, tuple[Callable[[], list[str]], str]] = {
    "backend": (_backends, "[auto|torch|table|spconv|minkowski]"),
    "arch": (_archs, "[minkunet34c|minkunet18a|minkunet14a|minkunet_test]"),
    "label_set": (_label_sets, "[s3dis13|scannet20|matterport21]"),
}


def field_at(cls: type, path: str) -> tuple[dataclasses.Field, Any]:
    """The field at dotted ``path`` of the (nested) dataclass ``cls`` and its annotation."""
    *sections, name = path.split(".")
    for s in sections:
        cls = typing.get_type_hints(cls)[s]
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    return by_name[name], typing.get_type_hints(cls)[name]


def _plain_type(tp: Any) -> Any:
    """``int | None`` -> ``int``."""
    if get_origin(tp) in (typing.Union, __import__("types").UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _click_type(meta: dict, tp: Any) -> Any:
    tp = _plain_type(tp)
    choices = meta.get("choices")
    if choices == "device":
        return DeviceType()
    if isinstance(choices, str):
        return LazyChoice(*LAZY_CHOICES[choices])
    if choices:
        return click.Choice(list(choices))
    if get_origin(tp) is Literal:
        return click.Choice(list(get_args(tp)))
    if meta.get("path") == "dir":
        return click.Path(exists=True, file_okay=False)
    if meta.get("path") == "file":
        return click.Path(exists=True, dir_okay=False)
    lo, hi = meta.get("min"), meta.get("max")
    if tp is int:
        if lo is None and hi is None:
            return int
        return click.IntRange(lo, hi, min_open=meta["min_open"], max_open=meta["max_open"])
    if tp is float:
        if hi is not None:
            return click.FloatRange(lo, hi, min_open=meta["min_open"], max_open=meta["max_open"])
        return FiniteFloat(lo, open=meta["min_open"])
    return str


class FieldOptions:
    """The options of some fields of ``cls`` (dotted paths for nested sections)."""

    def __init__(self, cls: type, paths: Iterable[str]) -> None:
        self.cls = cls
        self.paths = list(paths)
        self.params: dict[str, str] = {}  # click parameter name -> field path
        self.names: dict[str, str] = {}  # field path -> option name (--batch-size)

    def _option(self, path: str) -> Callable:
        f, tp = field_at(self.cls, path)
        meta = dict(f.metadata)
        if "help" not in meta:
            raise TypeError(f"{self.cls.__name__}.{path} has no help: declare it with setting()")
        param = path.replace(".", "__")
        decl = meta.get("option") or f"--{f.name.replace('_', '-')}"
        self.params[param] = path
        self.names[path] = decl.split("/")[0]
        default = _default(f)
        kw: dict[str, Any] = {"help": meta["help"], "show_default": True}
        if _plain_type(tp) is bool:
            if "/" in decl or not decl.startswith("--no-"):
                decl = decl if "/" in decl else f"{decl}/--no-{decl[2:]}"
                return click.option(decl, param, default=default, **kw)
            return click.option(decl, param, is_flag=True, default=default, **kw)
        if get_origin(_plain_type(tp)) is tuple:
            item = get_args(_plain_type(tp))[0]
            if item is str:  # ids: repeatable and comma lists
                return click.option(
                    decl,
                    param,
                    type=CommaList(),
                    multiple=True,
                    default=default,
                    callback=lambda ctx, p, v: split_commas(v),
                    **kw,
                )
            shown = ",".join(f"{v:g}" for v in default)  # as it is typed
            return click.option(decl, param, type=NumberList(item), default=shown, **kw)
        return click.option(decl, param, type=_click_type(meta, tp), default=default, **kw)

    def __call__(self, fn: Callable) -> Callable:
        for path in reversed(self.paths):
            fn = self._option(path)(fn)
        return fn

    def take(self, kw: dict[str, Any]) -> dict:
        """Pop this object's values from ``kw``; the ones given on the command line (or by
        ``default_map``), as a nested delta over the config files."""
        ctx = click.get_current_context()
        delta: dict = {}
        for param, path in self.params.items():
            value = kw.pop(param)
            if ctx.get_parameter_source(param) in (ParameterSource.DEFAULT, None):
                continue
            node = delta
            *sections, name = path.split(".")
            for s in sections:
                node = node.setdefault(s, {})
            node[name] = list(value) if isinstance(value, tuple) else value
        return delta


def config_file_options(fn: Callable) -> Callable:
    """``--config FILE`` (repeatable) and ``--set KEY=VALUE`` (repeatable), as tttkd-train."""
    fn = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY=VALUE",
        help="override one setting, value parsed as YAML (e.g. lr=0.01; repeatable, last wins)",
    )(fn)
    return click.option(
        "--config",
        "config_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="settings file, YAML/JSON/TOML, e.g. a saved config.yaml or results.json "
        "(repeatable, applied in order; named options and --set win)",
    )(fn)


def deprecated_alias(old: str, new: str, param: str, **kw: Any) -> Callable:
    """Hidden ``old`` option whose value goes to ``param`` with a one-line warning on stderr."""

    def warn(ctx: click.Context, p: click.Parameter, value: Any) -> Any:
        if value not in (None, ()):
            click.echo(
                f"warning: {old} is deprecated and goes in the next release; use {new}", err=True
            )
        return value

    return click.option(old, param, hidden=True, callback=warn, expose_value=True, **kw)
