"""Every registered reader follows protocol.Reader and every writer takes the same keywords.

One synthetic scene per dataset is written with ``num_scenes``/``views``/``image_size`` and
read back through the registry, so prep's way of calling a reader is what is tested.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import DatasetError
from tttkd.pipeline.datasets import registry
from tttkd.pipeline.datasets.protocol import Reader
from tttkd.synthetic.domain import Domain

SIZE = (64, 48)  # (width, height): not square, so a swapped or squared size shows


def _write(name: str, out: Path) -> tuple[Path, str]:
    """Write one scene of ``name`` under ``out``; its reader root and scene id."""
    if name == "scannet":
        from tttkd.synthetic.scannet_writer import write_scannet_dataset

        w = write_scannet_dataset(
            out, 1, views=2, image_size=SIZE, frames=("sens",), domain=Domain(spacing=0.2)
        )
        return out, w[0].scene_id
    if name == "s3dis":
        from tttkd.synthetic.s3dis_writer import write_s3dis_dataset

        w = write_s3dis_dataset(out, 1, views=2, image_size=SIZE, domain=Domain(spacing=0.2))
        return out, next(iter(w.rooms))
    if name == "matterport3d":
        from tttkd.synthetic.matterport_writer import write_matterport_dataset

        w = write_matterport_dataset(
            out, 1, views=2, image_size=SIZE, regions_per_house=1, spacing=0.2
        )
        return w.scans_root, w.scene_ids[0]
    from tttkd.synthetic.pointcept_writer import write_pointcept_dataset

    w = write_pointcept_dataset(out, 1, spacing=0.2)
    return out, next(iter(w.scenes))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    base = tmp_path_factory.mktemp("protocol")
    return {name: _write(name, base / name) for name in registry.DATASETS}


@pytest.mark.parametrize("name", sorted(registry.DATASETS))
def test_reader_signatures(name: str) -> None:
    mod = registry.reader(name)
    assert isinstance(mod, Reader)
    ls = inspect.signature(mod.list_scenes).parameters
    assert list(ls)[:2] == ["root", "split"] and ls["split"].default is None
    assert any(p.kind is p.VAR_KEYWORD for p in ls.values())  # ignores load_scene's options
    load = inspect.signature(mod.load_scene).parameters
    assert list(load)[:2] == ["root", "scene_id"]
    for option, default in (("frames", "auto"), ("max_views", None)):
        assert load[option].kind is inspect.Parameter.KEYWORD_ONLY
        assert load[option].default == default


@pytest.mark.parametrize("name", sorted(registry.DATASETS))
def test_frames_none_reads_the_same_points_and_no_frames(name: str, written) -> None:
    root, sid = written[name]
    assert sid in registry.list_scenes(name, str(root), frames=None, max_views=1)
    full = registry.load_scene(name, str(root), sid)
    bare = registry.load_scene(name, str(root), sid, frames=None)
    assert bare.frames == []
    assert len(full.frames) == (0 if name == "pointcept" else 2)
    np.testing.assert_array_equal(bare.xyz, full.xyz)
    np.testing.assert_array_equal(bare.rgb, full.rgb)
    np.testing.assert_array_equal(bare.label, full.label)
    assert len(registry.load_scene(name, str(root), sid, max_views=1).frames) == min(
        1, len(full.frames)
    )
    for bad in ({"frames": False}, {"frames": "none-such"}, {"max_views": 0}):
        with pytest.raises(DatasetError, match="frames|max_views"):
            registry.load_scene(name, str(root), sid, **bad)


@pytest.mark.parametrize("name", ["scannet", "s3dis", "matterport3d"])
def test_image_size_is_width_by_height(name: str, written) -> None:
    root, sid = written[name]
    frames = registry.load_scene(name, str(root), sid).frames
    assert frames and {(f.width, f.height) for f in frames} == {SIZE}
    assert frames[0].load_color().shape == (SIZE[1], SIZE[0], 3)


def test_writers_share_one_signature() -> None:
    from tttkd.cli.synth import WRITERS, writer

    for name in WRITERS:
        params = inspect.signature(writer(name)).parameters
        assert list(params)[:2] == ["root", "num_scenes"], name
        assert params["views"].kind is params["image_size"].kind is inspect.Parameter.KEYWORD_ONLY
        with pytest.raises(ValueError, match=r"not \(width, height\)"):
            writer(name)(Path("/nonexistent/never-written"), 1, image_size=64)


def test_scannet_frames_none_string_is_deprecated(written) -> None:
    root, sid = written["scannet"]
    with pytest.warns(DeprecationWarning, match="frames=None"):
        old = registry.load_scene("scannet", str(root), sid, frames="none")
    assert old.frames == [] and len(old.xyz) == len(
        registry.load_scene("scannet", str(root), sid).xyz
    )


def test_num_scenes_counts_scenes_for_every_layout(tmp_path: Path, written) -> None:
    from tttkd.synthetic.matterport_writer import write_matterport_dataset
    from tttkd.synthetic.s3dis_writer import rooms_per_area

    mp = write_matterport_dataset(tmp_path / "mp", 3, views=0, spacing=0.3)  # 2 to a house
    assert len(mp.scene_ids) == 3 and len(mp.houses) == 2
    assert rooms_per_area(3, (1, 5)) == [2, 1] and rooms_per_area(1, (1, 5)) == [1, 0]
    s3dis_root = written["s3dis"][0]  # num_scenes=1: Area_1 only, no empty Area_5
    assert sorted(p.name for p in s3dis_root.rglob("Area_*") if p.is_dir()) == ["Area_1"] * 2
