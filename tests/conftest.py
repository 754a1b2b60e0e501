"""Shared fixtures: where the real reference files (../shared/data) are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$TTTKD_SHARED_DATA`` or ``<repo>/../shared/data`` (where CI puts it), else None."""
    env = os.environ.get("TTTKD_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture
def shared_data() -> Path:
    """The real label and split files; skips (with the reason) when they are absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip(
            "real reference files not found: set TTTKD_SHARED_DATA or put shared/data beside "
            "the checkout"
        )
    return d
