"""``tttkd-synth`` options: --num-scenes (old --scenes deprecated), --image-size WxH honoured."""

from __future__ import annotations

from click.testing import CliRunner
from PIL import Image

from tttkd.cli import synth
from tttkd.synthetic.defaults import IMAGE_SIZE, NUM_SCENES, VIEWS


def test_s3dis_image_size_is_width_by_height(tmp_path) -> None:
    out = tmp_path / "s3dis"
    args = ["s3dis", "--out", str(out), "--num-scenes", "1", "--views", "1"]
    res = CliRunner().invoke(synth.cli, [*args, "--image-size", "64x48"])
    assert res.exit_code == 0, res.output
    pngs = sorted(out.rglob("*_domain_rgb.png"))
    assert len(pngs) == 1 and Image.open(pngs[0]).size == (64, 48)  # was 64x64


def test_scenes_is_a_deprecated_alias_of_num_scenes(tmp_path) -> None:
    small = ["--views", "1", "--image-size", "32x24", "--frames", "25k"]
    res = CliRunner().invoke(
        synth.cli, ["scannet", "--out", str(tmp_path / "a"), "--scenes", "3", *small]
    )
    assert res.exit_code == 0, res.output
    assert res.stderr.strip().splitlines() == [
        "warning: --scenes is deprecated and goes in the next release; use --num-scenes"
    ]
    assert "wrote 3 scannet scene(s)" in res.stdout
    both = ["--scenes", "1", "--num-scenes", "1"]
    res = CliRunner().invoke(synth.cli, ["scannet", "--out", str(tmp_path / "b"), *both])
    assert res.exit_code == 2 and "--num-scenes only" in res.output
    assert not (tmp_path / "b").exists()


def test_help_shows_every_default() -> None:
    res = CliRunner().invoke(synth.cli, ["--help"], terminal_width=400)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert f"[default: {NUM_SCENES}; x>=1]" in text and "--scenes" not in text
    for name in synth.WRITERS:
        w, h = IMAGE_SIZE[name]
        assert f"{name} {VIEWS[name]}" in text and f"{name} {w}x{h}" in text
    assert "[default: source]" in text and "[default: 0]" in text
