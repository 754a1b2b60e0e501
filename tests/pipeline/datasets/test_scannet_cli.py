"""``tttkd-synth scannet``: writes a root the reader accepts with its defaults."""

from __future__ import annotations

from click.testing import CliRunner

from tttkd.cli import synth
from tttkd.pipeline.datasets import scannet


def test_synth_scannet_writes_a_readable_root(tmp_path) -> None:
    out = tmp_path / "scannet"
    args = ["scannet", "--out", str(out), "--num-scenes", "1", "--views", "1"]
    args += ["--image-size", "64x48", "--frames", "sens", "--domain", "target", "--seed", "4"]
    res = CliRunner().invoke(synth.cli, args)
    assert res.exit_code == 0, res.output
    assert "scene0000_00: split train" in res.output and "1 posed frames" in res.output
    assert not (out / "scannet_frames_25k").exists()  # only the .sens was asked for
    s = scannet.load_scene(out, "scene0000_00")  # auto -> .sens, every 100th frame
    assert [f.name for f in s.frames] == ["000000"]  # frame 100 carries the -inf pose
    assert (s.frames[0].width, s.frames[0].height) == (64, 48)
    assert s.frames[0].load_color().shape == (48, 64, 3)
    assert len(s.xyz) > 10_000 and (s.label >= 0).mean() > 0.5


def test_synth_bad_options_and_missing_writer(tmp_path, monkeypatch) -> None:
    runner = CliRunner()
    res = runner.invoke(synth.cli, ["scannet", "--out", str(tmp_path), "--image-size", "64"])
    assert res.exit_code == 2 and "WxH" in res.output
    monkeypatch.setitem(synth.WRITERS, "s3dis", ("tttkd.synthetic.nope", "write"))
    res = runner.invoke(synth.cli, ["s3dis", "--out", str(tmp_path / "s")])
    assert res.exit_code == 1 and "not available" in res.output
