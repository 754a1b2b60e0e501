"""What every ``tttkd-*`` command shares so that bad input never ends in a Python traceback.

:func:`run_command` is each console script's entry: click's own usage errors as usual, any
other error as one ``Error: ...`` line and exit status 1; ``--debug`` (anywhere on the command
line, or ``TTTKD_DEBUG=1``) lets the traceback through instead. The option checks below turn
values that would fail deep inside a run (``--voxel-size inf``, ``--device cuda:7`` on a
machine without it, an unknown ``--arch``, an unreachable ``--scheduler``) into usage errors
naming the option and the allowed values.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import click

DEBUG_FLAG = "--debug"


def run_command(cmd: click.Command, argv: list[str] | None, prog_name: str) -> None:
    """Run ``cmd`` as a console script; exits with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or os.environ.get("TTTKD_DEBUG") == "1"
    args = [a for a in args if a != DEBUG_FLAG]
    try:
        rv = cmd.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except Exception as e:  # the point: no traceback unless asked
        if debug:
            raise
        click.echo(f"Error: {_message(e)}", err=True)
        click.echo(
            f"  ({type(e).__name__}; rerun with {DEBUG_FLAG} to see the traceback)", err=True
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e).strip() or type(e).__name__


# ---- option types and checks -----------------------------------------------------------------
class FiniteFloat(click.ParamType):
    """A finite float, optionally bounded below (``open``: strictly greater than ``min``)."""

    name = "float"

    def __init__(self, min: float | None = None, open: bool = False) -> None:
        self.min, self.open = min, open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        bound = "" if self.min is None else f" {'>' if self.open else '>='} {self.min:g}"
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number{bound}", param, ctx)
        if self.min is not None and (v <= self.min if self.open else v < self.min):
            self.fail(f"{v:g} is not a number{bound}", param, ctx)
        return v


def device_problem(value: str) -> str | None:
    """Why ``value`` is not a usable torch device here (None: it is, or ``auto``)."""
    if value in (None, "", "auto", "cpu"):
        return None
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        return f"{value!r} is not a device; use auto, cpu, cuda or cuda:N"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"{value!r}: CUDA is not available on this machine; use cpu (or auto)"
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            return f"{value!r}: this machine has {n} CUDA device(s): cuda:0..cuda:{n - 1}"
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        return f"{value!r}: MPS is not available on this machine; use cpu (or auto)"
    elif dev.type not in ("cuda", "mps", "cpu"):
        return f"{value!r}: use auto, cpu, cuda or cuda:N"
    return None


def check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    problem = None if value is None else device_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def _check_in(value: str | None, allowed: list[str], param: Any, ctx: Any) -> str | None:
    if value is not None and value not in allowed:
        raise click.BadParameter(
            f"{value!r} is not one of {', '.join(allowed)}", ctx=ctx, param=param
        )
    return value


def check_label_set(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from tttkd.core import LABEL_SETS

    return _check_in(value, list(LABEL_SETS), param, ctx)


def check_arch(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from tttkd.model.minkunet import ARCHITECTURES

    return _check_in(value, sorted(ARCHITECTURES), param, ctx)


def check_backend(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from tttkd.model.sparse.base import BACKEND_NAMES

    return _check_in(value, ["auto", *BACKEND_NAMES], param, ctx)


def check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Refuse, within ``timeout`` seconds, a Dask scheduler address nobody listens on."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        raise click.BadParameter(
            f"{address!r} is not a scheduler address; use tcp://HOST:PORT",
            param_hint="'--scheduler'",
        )
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            pass
    except OSError as e:
        raise click.BadParameter(
            f"no Dask scheduler answers at {address} ({e.strerror or e}); start one with "
            "`dask scheduler`, or use --workers N for a local cluster",
            param_hint="'--scheduler'",
        ) from e
