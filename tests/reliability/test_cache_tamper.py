"""Every array of a scene, deleted or corrupted in turn: verify names it, train and adapt refuse.

Zarr reads a missing chunk as its fill value, so before the integrity record a deleted chunk of
xyz, labels, features or correspondences read as zeros and ``verify`` said ok.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from tttkd.adapt.scenes import load_scene
from tttkd.model.data import CacheSceneDataset
from tttkd.pipeline.cache import Cache, CacheError
from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record

SCENE = "scene0001_00"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    url = tmp_path_factory.mktemp("tamper") / "feats.zarr"
    cache = Cache.create(str(url), synthetic_meta())
    cache.write_scene(synthetic_record(SCENE, n_images=4, corr_per_image=30, seed=3))
    return url


def _arrays(url: Path) -> list[str]:
    """Every array of the scene group, found on disk (not from the record under test)."""
    root = url / "scenes" / SCENE
    return sorted(
        str(meta.parent.relative_to(root))
        for meta in root.rglob("zarr.json")
        if json.loads(meta.read_text())["node_type"] == "array"
    )


def _first_chunk(url: Path, array: str) -> Path:
    chunks = sorted(p for p in (url / "scenes" / SCENE / array / "c").rglob("*") if p.is_file())
    assert chunks, array
    return chunks[0]


def _delete(p: Path) -> None:
    p.unlink()


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])


def _random(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size))


DAMAGES = {"delete": _delete, "truncate": _truncate, "random": _random}


def _refusals(url: str, *, points_only_too: bool = True) -> list[str]:
    """The messages of train's and adapt's read paths (images and all; and, with
    ``points_only_too``, the points-only validation read) on the damaged scene."""
    msgs = []
    ds = CacheSceneDataset(url, "train", voxel_size=0.04, train=True, max_images=0)
    val = CacheSceneDataset(url, "train", voxel_size=0.04, train=False, full_resolution=True)
    readers = [
        lambda: ds.read(0, np.random.default_rng(0)),
        lambda: load_scene(
            Cache.open(url, read_only=True),
            SCENE,
            device="cpu",
            backend="torch",
            max_images=None,
            seed=0,
        ),
    ]
    if points_only_too:
        readers.append(lambda: val[0])
    for read in readers:
        with pytest.raises(CacheError) as e:
            read()
        msgs.append(str(e.value))
    return msgs


def test_the_integrity_record_covers_every_array(pristine):
    arrays = _arrays(pristine)
    attrs = json.loads((pristine / "scenes" / SCENE / "zarr.json").read_text())["attributes"]
    assert sorted(attrs["integrity"]["arrays"]) == arrays
    assert len(arrays) >= 14 and {"points/xyz", "images/features", "corr/uv"} <= set(arrays)
    cache = Cache.open(str(pristine), read_only=True)
    assert cache.verify() == {SCENE: []} and cache.verify(quick=True) == {SCENE: []}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_damaged_array_is_named_by_verify_and_refused(pristine, tmp_path, damage):
    for array in _arrays(pristine):
        url = tmp_path / f"{damage}-{array.replace('/', '_')}.zarr"
        shutil.copytree(pristine, url)
        DAMAGES[damage](_first_chunk(url, array))
        cache = Cache.open(str(url), read_only=True)
        problems = cache.verify()[SCENE]
        assert any(p.startswith(f"{array}:") for p in problems), (array, problems)
        if damage == "delete":
            quick = cache.verify(quick=True)[SCENE]
            assert any(p.startswith(f"{array}:") for p in quick), (array, quick)
        # the points-only read decodes points/* and full/* only; every read checks that the
        # chunks of all arrays are present
        both = array.startswith(("points/", "full/")) or damage == "delete"
        for msg in _refusals(str(url), points_only_too=both):
            assert SCENE in msg and array in msg, (array, msg)
        shutil.rmtree(url)


def _rewrite(url: Path, array: str, fn) -> None:
    arr = zarr.open_array(str(url / "scenes" / SCENE / array), mode="r+")
    data = arr[...]
    fn(data)
    arr[...] = data


@pytest.mark.parametrize(
    ("array", "change", "message"),
    [
        ("images/features", lambda a: a.__setitem__((1, 0, 0, 0), np.nan), "non-finite"),
        ("points/xyz", lambda a: a.__setitem__((0, 0), np.inf), "non-finite"),
        ("corr/uv", lambda a: a.__setitem__((0, 0), 400.0), "outside the 6x8 feature grid"),
    ],
)
def test_rewritten_values_fail_verify_and_are_refused(pristine, tmp_path, array, change, message):
    url = tmp_path / "feats.zarr"
    shutil.copytree(pristine, url)
    _rewrite(url, array, change)
    problems = Cache.open(str(url), read_only=True).verify()[SCENE]
    assert f"{array}: checksum differs from the one written (the data was altered)" in problems
    for msg in _refusals(str(url), points_only_too=array == "points/xyz"):
        assert SCENE in msg and array in msg and message in msg, msg


def test_edited_root_metadata_is_refused(pristine, tmp_path):
    url = tmp_path / "feats.zarr"
    shutil.copytree(pristine, url)
    meta = json.loads((url / "zarr.json").read_text())
    meta["attributes"]["voxel_size"] = 0.02
    (url / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="root metadata .* does not match its checksum"):
        Cache.open(str(url), read_only=True)


def test_a_scene_without_metadata_is_reported(pristine, tmp_path):
    url = tmp_path / "feats.zarr"
    shutil.copytree(pristine, url)
    (url / "scenes" / SCENE / "zarr.json").unlink()
    report = Cache.open(str(url), read_only=True).verify()
    assert report == {SCENE: ["the scene group is missing or its metadata is unreadable"]}


@pytest.mark.parametrize("quick", [False, True])
def test_verify_command_names_the_damaged_array(pristine, tmp_path, quick):
    from click.testing import CliRunner

    from tttkd.cli.prep import cli

    url = tmp_path / "feats.zarr"
    shutil.copytree(pristine, url)
    _first_chunk(url, "corr/point").unlink()
    args = ["verify", str(url)] + (["--quick"] if quick else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert f"{SCENE}: corr/point: 0 chunk files, written with 1" in result.output
    assert "1 with problems" in result.output


def test_a_metadata_write_cut_by_sigkill_is_not_a_scene(pristine, tmp_path):
    """Found by the SIGKILL test in CI: Zarr's LocalStore writes ``scenes/zarr.json`` through
    ``zarr.<uuid>.partial``; a kill between write and rename left that file, and ``verify``
    reported it as a broken scene of that name."""
    url = tmp_path / "feats.zarr"
    shutil.copytree(pristine, url)
    (url / "scenes" / "zarr.fc406e274a1f43a2b706846a0bef31e5.partial").write_bytes(b'{"zarr_')
    cache = Cache.open(str(url), read_only=True)
    assert cache.scene_ids(include_incomplete=True) == [SCENE]
    assert cache.verify() == {SCENE: []}


# ---- the PCA basis (root-level pca/ group of the pca<k> codecs) -----------------------------
PCA_ARRAYS = ("pca/components", "pca/mean")


@pytest.fixture(scope="module")
def pca_pristine(tmp_path_factory) -> Path:
    """Before: pca/ had no checksum, so a deleted chunk of components decoded every scene's
    features with a zero basis and verify said ok."""
    from tttkd.pipeline.cache import fit_pca

    url = tmp_path_factory.mktemp("tamper_pca") / "feats.zarr"
    cache = Cache.create(str(url), synthetic_meta(feature_codec="pca8"))
    rec = synthetic_record(SCENE, n_images=4, corr_per_image=30, seed=3)
    cache.set_pca(fit_pca(rec.features, 8))
    cache.write_scene(rec)
    return url


def _pca_copy(pristine: Path, tmp_path: Path, name: str) -> Path:
    url = tmp_path / f"{name}.zarr"
    shutil.copytree(pristine, url)
    return url


def _refused_basis(url: Path, array: str) -> None:
    """verify names ``array`` for the scene; train's and adapt's reads refuse it."""
    problems = Cache.open(str(url), read_only=True).verify()[SCENE]
    assert any(p.startswith(f"{array}:") for p in problems), (array, problems)
    for msg in _refusals(str(url), points_only_too=False):
        assert SCENE in msg and array in msg and "PCA basis" in msg, (array, msg)


def test_a_sealed_pca_basis_verifies_and_reads(pca_pristine):
    cache = Cache.open(str(pca_pristine), read_only=True)
    assert cache.verify() == {SCENE: []} and cache.verify(quick=True) == {SCENE: []}
    assert cache.read_scene(SCENE).features.shape[-1] == 16


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_damaged_pca_array_is_named_by_verify_and_refused(pca_pristine, tmp_path, damage):
    for array in PCA_ARRAYS:
        url = _pca_copy(pca_pristine, tmp_path, f"{damage}-{array.replace('/', '_')}")
        chunks = sorted(p for p in (url / array / "c").rglob("*") if p.is_file())
        DAMAGES[damage](chunks[0])
        _refused_basis(url, array)
        if damage == "delete":
            quick = Cache.open(str(url), read_only=True).verify(quick=True)[SCENE]
            assert any(p.startswith(f"{array}:") for p in quick), (array, quick)
        shutil.rmtree(url)


def test_edited_pca_attributes_or_a_deleted_basis_are_refused(pca_pristine, tmp_path):
    url = _pca_copy(pca_pristine, tmp_path, "attrs")
    meta = json.loads((url / "pca" / "zarr.json").read_text())
    meta["attributes"]["explained_variance_ratio"][0] = 0.999
    (url / "pca" / "zarr.json").write_text(json.dumps(meta))
    _refused_basis(url, "pca")
    url = _pca_copy(pca_pristine, tmp_path, "deleted")
    shutil.rmtree(url / "pca")
    _refused_basis(url, "pca")


def test_a_pca_basis_without_integrity_record_asks_for_a_rebuild(pca_pristine, tmp_path):
    """A basis written before the record existed: refused with the rebuild command."""
    url = _pca_copy(pca_pristine, tmp_path, "old")
    meta = json.loads((url / "pca" / "zarr.json").read_text())
    del meta["attributes"]["integrity"]
    (url / "pca" / "zarr.json").write_text(json.dumps(meta))
    _refused_basis(url, "pca")
    with pytest.raises(CacheError, match="--overwrite"):
        Cache.open(str(url), read_only=True).read_scene(SCENE)
