"""Fuzz: damage one file of a synthetic scene per dataset and read the scene as prep does.

Mutations: truncate, flip bytes, delete, replace by a directory. Each example must end in
one of:
- a ``TttkdError`` whose message names the damaged file (or a folder holding it);
- a warning naming the file (prep prints the reader's warnings as the scene's WARNINGs);
- the scene exactly as before (a file the scene does not read), where frames that now fail
  to load fail with a ``TttkdError`` naming the file (prep drops them with a WARNING);
and never in a hang (a 30 s deadline per example), a traceback (any other exception) or a
silently different scene. Flipped bytes inside a payload that has no checksum (a JPEG's
pixels, a binary PLY's coordinates, a digit of a text file) cannot be told from real data, so
for flips the test asserts no hang and no traceback only; that gap is documented here.
Bounded: a few examples per dataset, derandomized so CI runs the same cases.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tttkd.core import TttkdError
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.scene_timeout import SceneTimeout, scene_deadline

EXAMPLES = 30


def _known_gap(name: str, rel: Path, kind: str) -> str | None:
    """Damage the readers cannot yet tell from valid data (open items of issue #13)."""
    if rel.name.startswith(("scenes_", "scannetv2_")) and kind == "truncate":
        return "a shorter split list is a valid split list: the scene's split changes"
    return None


def _scannet(root: Path) -> dict:
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    write_scannet_dataset(root, 1, frames=("25k",), splits=["train"], image_size=(32, 24), views=2)
    return {"frames": "25k"}


def _s3dis(root: Path) -> dict:
    from tttkd.synthetic.s3dis_writer import write_s3dis_dataset

    write_s3dis_dataset(root, 1, views=2, image_size=(32, 32), areas=(1,))
    return {}


def _matterport(root: Path) -> dict:
    from tttkd.synthetic.matterport_writer import write_matterport_dataset

    write_matterport_dataset(
        root, 1, regions_per_house=1, image_size=(32, 24), views=2, spacing=0.2
    )
    return {}


def _pointcept(root: Path) -> dict:
    from tttkd.synthetic.pointcept_writer import write_pointcept_dataset

    write_pointcept_dataset(root, 1, spacing=0.2)
    return {}


WRITERS = {
    "scannet": _scannet,
    "s3dis": _s3dis,
    "matterport3d": _matterport,
    "pointcept": _pointcept,
}


def _read(name: str, root: Path, sid: str, opts: dict):
    """The scene, per frame (colour, depth) or the error that drops the frame, and the
    reader's warnings (prep prints them as the scene's WARNINGs)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = registry.load_scene(name, str(root), sid, **opts)
    frames = {}
    for f in scene.frames:
        try:
            frames[f.name] = (f.load_color(), f.load_depth())
        except TttkdError as e:
            frames[f.name] = e
    return scene, frames, [str(w.message) for w in caught]


@pytest.fixture(scope="module", params=sorted(WRITERS))
def pristine(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(f"fuzz_{name}") / "data"
    root.mkdir()
    opts = WRITERS[name](root)
    sid = registry.list_scenes(name, str(root), **opts)[0]
    scene, frames, _ = _read(name, root, sid, opts)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return name, root, sid, opts, scene, frames, files


def _mutate(path: Path, kind: str, where: float, data: st.DataObject) -> None:
    raw = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(raw[: int(len(raw) * where)])
    elif kind == "flip":
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            if buf:
                buf[data.draw(st.integers(0, len(buf) - 1))] ^= 0xFF
        path.write_bytes(bytes(buf))
    elif kind == "delete":
        path.unlink()
    else:  # a directory where the file was
        path.unlink()
        path.mkdir()


def _names(msg: str, path: Path, root: Path) -> bool:
    if str(path) in msg or path.name in msg:
        return True
    return any(str(p) in msg for p in path.parents if root in p.parents or p == root)


@settings(
    max_examples=EXAMPLES,
    deadline=None,  # scene_deadline bounds each example instead
    derandomize=True,
    database=None,  # the same examples on every machine
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, the case is printed
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    kind=st.sampled_from(["truncate", "flip", "delete", "directory"]),
    where=st.floats(0.0, 0.95),
)
def test_a_damaged_file_is_named_or_changes_nothing(pristine, tmp_path_factory, data, kind, where):
    name, src, sid, opts, scene0, frames0, files = pristine
    rel = data.draw(st.sampled_from(files)).relative_to(src)
    root = tmp_path_factory.mktemp("fuzz_case") / "data"
    shutil.copytree(src, root)
    target = root / rel
    _mutate(target, kind, where, data)
    try:
        with scene_deadline(30, sid):
            scene, frames, warned = _read(name, root, sid, opts)
    except SceneTimeout:
        pytest.fail(f"{name}: reading hung after {kind} of {rel}")
    except TttkdError as e:
        assert _names(str(e), target, root), f"{name}: {kind} of {rel} gave: {e}"
        return
    except Exception as e:  # a traceback a user would see
        pytest.fail(f"{name}: {kind} of {rel} raised {type(e).__name__}: {e}")
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    for fname, got in frames.items():
        if isinstance(got, TttkdError):
            assert _names(str(got), target, root), f"{name}: frame {fname}: {got}"
    if any(_names(w, target, root) for w in warned):
        return  # a documented warning naming the file (a WARNING of the scene in prep)
    if kind == "flip" or _known_gap(name, rel, kind):
        return  # undetectable in payloads without checksums (see the module docstring)
    same = (
        np.array_equal(scene.xyz, scene0.xyz)
        and np.array_equal(scene.rgb, scene0.rgb)
        and np.array_equal(scene.label, scene0.label)
        and scene.split == scene0.split
        and [f.name for f in scene.frames] == [f.name for f in scene0.frames]
    )
    assert same, f"{name}: {kind} of {rel} gave a silently different scene"
    for fname, got in frames.items():
        want = frames0[fname]
        if isinstance(got, TttkdError) or isinstance(want, TttkdError):
            continue
        ok = np.array_equal(got[0], want[0]) and (
            (got[1] is None and want[1] is None) or np.array_equal(got[1], want[1])
        )
        assert ok, f"{name}: {kind} of {rel} silently changed frame {fname}"


@pytest.mark.parametrize("name", ["scannet", "matterport3d"])
def test_a_deleted_split_list_is_named_not_a_silent_split_change(name, tmp_path):
    """Found by the fuzz in CI: deleting the train list made a train scene's split ``None``
    without a word, so prep would have filed it under no split."""
    root = tmp_path / "data"
    root.mkdir()
    opts = WRITERS[name](root)
    sid = registry.list_scenes(name, str(root), **opts)[0]
    scene, _, _ = _read(name, root, sid, opts)
    lists = [p for p in root.rglob("*train.txt") if p.name.startswith(("scenes_", "scannetv2_"))]
    assert scene.split == "train" and len(lists) == 1
    lists[0].unlink()
    scene, _, warned = _read(name, root, sid, opts)
    assert scene.split is None
    assert any(lists[0].name in w and "split is unknown" in w for w in warned), warned


def _one_per_kind(files: list[Path], src: Path) -> list[Path]:
    """One file per kind (its path with digits masked; S3DIS object files are one kind, read
    by one function): every reader path, few reads."""
    kinds: dict[str, Path] = {}
    for f in files:
        key = re.sub(r"\d+", "#", str(f.relative_to(src)))
        kinds.setdefault(re.sub(r"/Annotations/[^/]+$", "/Annotations/*", key), f)
    return list(kinds.values())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_any_file_is_named_never_waited_on(pristine, tmp_path):
    """Item 4, every file kind of a scene: a FIFO blocks ``open()`` forever, so readers must
    check for a regular file first. Before: ScanNet's pose and intrinsics files were not."""
    name, src, sid, opts, scene0, _, files = pristine
    root = tmp_path / "data"
    shutil.copytree(src, root)
    bad = []
    for f in _one_per_kind(files, src):
        rel = f.relative_to(src)
        target = root / rel
        keep = target.read_bytes()
        target.unlink()
        os.mkfifo(target)
        try:
            with scene_deadline(5, sid):
                scene, frames, warned = _read(name, root, sid, opts)
        except SceneTimeout:
            bad.append(f"{rel}: hung")
            continue
        except TttkdError as e:
            if not _names(str(e), target, root):
                bad.append(f"{rel}: {e}")
            continue
        finally:
            target.unlink()
            target.write_bytes(keep)
        errors = [e for e in frames.values() if isinstance(e, TttkdError)]
        if any(_names(str(m), target, root) for m in [*errors, *warned]):
            continue  # the frame is dropped, or the scene warned, naming the file
        same = (
            np.array_equal(scene.xyz, scene0.xyz)
            and np.array_equal(scene.label, scene0.label)
            and scene.split == scene0.split
            and not errors
        )
        if not same:
            bad.append(f"{rel}: a silently different scene")
    assert not bad, f"{name}: " + "; ".join(bad)
