"""``tttkd-prep --overwrite`` never loses a finished cache before the new one is whole.

Before: a scene id that does not exist, or an empty ``--root``, wiped the cache and then
failed; an interrupted overwrite left half a cache; a failed start left an empty cache folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tttkd.pipeline.cache import Cache


@pytest.fixture(scope="module")
def root(write_scannet) -> Path:
    return write_scannet("scannet_overwrite", ["train", "val"])


@pytest.fixture(scope="module")
def finished(root, tmp_path_factory, prep) -> Path:
    out = tmp_path_factory.mktemp("finished") / "feats.zarr"
    r = prep(root, out)
    assert r.exit_code == 0, r.output
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "feats.zarr"
    shutil.copytree(finished, out)
    return out


def _intact(out: Path, scenes: int = 2, voxel: float = 0.04) -> None:
    cache = Cache.open(str(out), read_only=True)
    assert len(cache.scene_ids()) == scenes and cache.meta.voxel_size == voxel
    assert all(not p for p in cache.verify().values())


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != "feats.zarr.failures.json")


def test_overwrite_with_an_unknown_scene_keeps_the_cache(root, finished, tmp_path, prep):
    out = _copy(finished, tmp_path)
    r = prep(root, out, "--overwrite", "--scenes", "nope")
    assert r.exit_code != 0 and "nope" in r.output and "Traceback" not in r.output
    _intact(out)
    assert _siblings(out) == ["feats.zarr"]


def test_overwrite_with_an_empty_root_keeps_the_cache(finished, tmp_path, prep):
    out = _copy(finished, tmp_path)
    empty = tmp_path / "empty_root"
    empty.mkdir()
    r = prep(empty, out, "--overwrite")
    assert r.exit_code != 0 and str(empty) in r.output, r.output
    _intact(out)
    assert _siblings(out) == ["empty_root", "feats.zarr"]


def test_an_interrupted_overwrite_leaves_the_old_cache_whole(
    root, finished, tmp_path, monkeypatch, prep
):
    out = _copy(finished, tmp_path)
    calls = []

    def interrupted(self, rec, **kw):
        calls.append(rec.scene_id)
        raise KeyboardInterrupt  # the user pressed ^C while the first new scene was written

    monkeypatch.setattr(Cache, "write_scene", interrupted)
    r = prep(root, out, "--overwrite", "--voxel-size", 0.05)
    assert calls and r.exit_code != 0
    monkeypatch.undo()
    _intact(out)
    # the rerun completes the overwrite and swaps the new cache in
    r = prep(root, out, "--overwrite", "--voxel-size", 0.05)
    assert r.exit_code == 0, r.output
    _intact(out, voxel=0.05)
    assert _siblings(out) == ["feats.zarr"]


def test_a_failed_start_leaves_no_empty_cache_folder(root, tmp_path, prep):
    out = tmp_path / "feats.zarr"
    r = prep(root, out, "--scenes", "nope")
    assert r.exit_code != 0 and "nope" in r.output
    assert not out.exists()


def test_overwrite_refuses_a_folder_that_is_not_a_cache(root, tmp_path, prep):
    out = tmp_path / "feats.zarr"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    r = prep(root, out, "--overwrite")
    assert r.exit_code != 0 and "not a tttkd cache" in r.output
    assert (out / "thesis.tex").read_text() == "precious"
