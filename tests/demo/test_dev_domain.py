"""The development domain of the shift benchmark: other rooms than the reported target rooms
(their own seed), with the target's shift, written only when asked for."""

from __future__ import annotations

from tttkd.synthetic.benchmark import write_shift_benchmark
from tttkd.synthetic.domain import TARGET


def _mesh(root, sid="scene0000_00") -> bytes:
    return (root / "scans" / sid / f"{sid}_vh_clean_2.ply").read_bytes()


def test_dev_rooms_are_other_rooms_with_the_target_shift(tmp_path):
    kw = dict(source_scenes=1, target_scenes=1, views=1, image_size=(48, 36))
    bench = write_shift_benchmark(tmp_path / "a", dev_scenes=1, **kw)
    assert bench.dev_root == tmp_path / "a" / "dev" and bench.dev_scenes == 1
    assert (bench.dev_root / "scannetv2_val.txt").read_text().split() == ["scene0000_00"]
    dev = _mesh(bench.dev_root)
    assert dev != _mesh(bench.target_root) and dev != _mesh(bench.source_root)
    assert bench.target == TARGET
    # the same call with another seed gives other development rooms; the same seed the same
    again = write_shift_benchmark(tmp_path / "b", dev_scenes=1, **kw)
    other = write_shift_benchmark(tmp_path / "c", dev_scenes=1, seed=1, **kw)
    assert _mesh(again.dev_root) == dev and _mesh(other.dev_root) != dev
    none = write_shift_benchmark(tmp_path / "d", **kw)
    assert none.dev_root is None and not (tmp_path / "d" / "dev").exists()
