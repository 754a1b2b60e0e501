"""``--overwrite`` without data loss: build the new cache beside the old one, swap at the end.

A finished cache is worth hours of teacher time, so an overwrite must not delete it before the
new one exists: ``run_prep`` validates the root, the scene list and the teacher first (the plan
is made before any write), writes a local cache's replacement to ``<out>.overwrite-partial``
and swaps it in only when the run has finished with at least one scene (or nothing failed).
An interrupted overwrite leaves the old cache whole; the rerun starts the partial one afresh.
A run whose start fails removes the cache folder it created, so no empty cache is left.
Remote (fsspec) outputs cannot be renamed atomically: there the old cache is deleted after the
validation, when the new one is created.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".overwrite-partial"


def _local(url: str) -> Path | None:
    if "://" in url and not url.startswith("file://"):
        return None
    return Path(url.removeprefix("file://"))


def _is_cache(path: Path) -> bool:
    from tttkd.pipeline.cache import FORMAT

    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and (meta.get("attributes") or {}).get("format") == FORMAT


def staged(config: Any) -> Any:
    """The config the run writes with: an overwrite of an existing local cache goes to
    ``<out>.overwrite-partial`` (wiped first: a leftover of an interrupted overwrite)."""
    path = _local(config.out)
    if not config.overwrite or path is None or not _is_cache(path):
        return config
    partial = Path(str(path).rstrip("/") + PARTIAL_SUFFIX)
    if partial.exists():
        shutil.rmtree(partial)
    return replace(config, out=str(partial))


@contextlib.contextmanager
def removed_on_failed_start(url: str) -> Iterator[None]:
    """Delete the local cache folder the block created if the block raises."""
    path = _local(url)
    existed = path is None or path.exists()
    try:
        yield
    except BaseException:
        if not existed and path is not None and path.exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


def finish(config: Any, written: Any, done: int, failed: int, echo: Callable) -> None:
    """Swap the finished replacement in (``written`` is the config the run wrote with)."""
    if written.out == config.out:
        return
    old, new = _local(config.out), _local(written.out)
    if not done and failed:
        echo(
            f"overwrite: every scene failed, so {config.out} is kept as it was; the new, "
            f"partial cache is in {written.out}"
        )
        return
    trash = Path(f"{old}.overwrite-old-{os.getpid()}")
    os.rename(old, trash)
    os.rename(new, old)
    shutil.rmtree(trash)
    echo(f"overwrite: the new cache replaced {config.out}")
