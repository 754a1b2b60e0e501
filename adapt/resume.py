"""A run folder that survives kill -9: one outcome file per finished (method, scene).

``out/outcomes/run.json`` holds what the outcomes depend on (resolved config, cache,
checkpoint and its hash, scenes, the tttkd version); a rerun into the same folder must
match it or is refused with the differing keys, unless ``overwrite``. Every record is
written to a temporary file and moved into place with ``os.replace``, so a file that exists
is complete; plain JSON (float repr round-trips exactly, so merged results stay bitwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tttkd.adapt.config import AdaptConfigError
from tttkd.pipeline.cache import encode_scene_id

__all__ = ["OutcomeStore", "file_sha256", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (temp file in the folder + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} ({a!r} -> {b!r})")
    return out


class OutcomeStore:
    """``out/outcomes``: ``run.json`` and ``<method>/<scene>.json`` per finished pair."""

    def __init__(self, out: str | Path, fingerprint: dict[str, Any], *, overwrite: bool = False):
        self.root = Path(out) / "outcomes"
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        run = self.root / "run.json"
        if overwrite and self.root.exists():
            shutil.rmtree(self.root)
        for tmp in self.root.glob("*/.*.tmp"):  # a write cut off by a kill
            tmp.unlink(missing_ok=True)
        if run.exists():
            old = json.loads(run.read_text())
            diffs = _differences(old, self.fingerprint)
            if diffs:
                raise AdaptConfigError(
                    f"{Path(out)} holds outcomes of another run; differing: "
                    f"{'; '.join(diffs)}. Rerun the same command to resume it, or pass "
                    "--overwrite to discard them (or choose another --out)"
                )
        else:
            write_atomic(run, json.dumps(self.fingerprint, indent=1) + "\n")

    def _path(self, method: str, scene: str) -> Path:
        return self.root / method / (encode_scene_id(scene) + ".json")

    def done(self, methods: Iterable[str], scenes: Iterable[str]) -> set[tuple[str, str]]:
        """The (method, scene) pairs with an outcome on disk."""
        scenes = list(scenes)
        return {(m, s) for m in methods for s in scenes if self._path(m, s).exists()}

    def write(self, record: dict[str, Any]) -> None:
        write_atomic(self._path(record["method"], record["scene"]), json.dumps(record) + "\n")

    def read(self, method: str, scene: str) -> dict[str, Any]:
        return json.loads(self._path(method, scene).read_text())
