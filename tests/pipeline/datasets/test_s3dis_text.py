"""S3DIS text parsing: the real corrupted lines (FORMATS.md §2.1) and bad lines."""

from __future__ import annotations

import numpy as np
import pytest

from tttkd.pipeline.datasets.s3dis_text import parse_xyzrgb, repair_line, sniff_version

GOOD_ALIGNED = b"22.383 6.858 3.050 155 155 165\n22.275 6.643 3.048 192 194 191\n"


@pytest.mark.parametrize(
    ("line", "want"),
    [
        # Area_5/hallway_6/Annotations/ceiling_1.txt (Aligned): NUL instead of a space.
        (b"22.350 6.692 3.048 185\x00187 182", [22.350, 6.692, 3.048, 185, 187, 182]),
        # Area_3/hallway_2/hallway_2.txt (Aligned): a digit replaced by \x16.
        (b"19.302 -9.1\x160 1.785 146 137 106", [19.302, -9.10, 1.785, 146, 137, 106]),
        # Area_5/office_19/Annotations/ceiling_1.txt (v1.2): \x10 in place of a 0.
        (
            b"-15.986000 42.856000 0.353000 103.0\x100000 98.000000 58.000000",
            [-15.986, 42.856, 0.353, 103, 98, 58],
        ),
        # Area_1/WC_1/WC_1.txt and Area_6/hallway_2/hallway_2.txt (v1.2).
        (b"1.000000 2.000000 3.000000 56.00\x10000 7.000000 8.000000", [1, 2, 3, 56, 7, 8]),
        (b"1.000000 2.000000 3.000000 2\x111.000000 7.000000 8.000000", [1, 2, 3, 21, 7, 8]),
    ],
)
def test_real_glitches_are_repaired(line: bytes, want: list[float]) -> None:
    cloud = parse_xyzrgb(GOOD_ALIGNED + line + b"\n" + GOOD_ALIGNED)
    assert (cloud.repaired, cloud.skipped) == (1, 0)
    assert len(cloud.xyz) == 5
    got = np.concatenate([cloud.xyz[2], cloud.rgb[2].astype(float)])
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(cloud.xyz[[0, 3]], [[22.383, 6.858, 3.050]] * 2)


def test_hopeless_lines_are_skipped_and_counted() -> None:
    data = (
        GOOD_ALIGNED
        + b"1.0 2.0\x00\n"  # control byte, too few numbers either way
        + b"1.0 2.0 3.0 4 5\n"  # five columns, no control byte
        + b"1.0 abc 3.0 4 5 6\n"
        + b"\n"
        + GOOD_ALIGNED.replace(b"\n", b"\r\n")
    )
    cloud = parse_xyzrgb(data)
    assert (cloud.repaired, cloud.skipped) == (0, 3)
    assert len(cloud.xyz) == 4
    np.testing.assert_array_equal(cloud.rgb[-1], [192, 194, 191])


def test_colours_out_of_range_are_not_a_valid_repair() -> None:
    # Deleting the NUL would give 185187 (5 columns); only the space repair gives 6 numbers.
    assert repair_line(b"1 2 3 185\x00187 182") == b"1 2 3 185 187 182"
    assert repair_line(b"1 2 3 4 5 250\x007") is None  # a colour of 2507, or 7 columns


def test_clean_file_uses_the_fast_path_and_keeps_precision() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-50, 50, (2000, 3))
    rgb = rng.integers(0, 256, (2000, 3))
    raw = "".join(" ".join(f"{v:.6f}" for v in (*p, *c)) + "\n" for p, c in zip(xyz, rgb))
    raw = raw.encode()
    cloud = parse_xyzrgb(raw)
    np.testing.assert_allclose(cloud.xyz, xyz, atol=5e-7)
    np.testing.assert_array_equal(cloud.rgb, rgb)
    assert parse_xyzrgb(b"").xyz.shape == (0, 3)


def test_sniff_version(tmp_path) -> None:
    (tmp_path / "a.txt").write_bytes(b"19.237 -9.161 1.561 141 131 96\n")
    (tmp_path / "r.txt").write_bytes(b"-15.986000 42.856000 0.353000 126.000000 98.0 58.0\n")
    (tmp_path / "r7.txt").write_bytes(
        b"-15.986000 42.856000 0.353000 126.000000 98.000000 58.000000\n"
    )
    assert sniff_version(tmp_path / "a.txt") == "aligned"
    assert sniff_version(tmp_path / "r7.txt") == "raw"
    assert sniff_version(tmp_path / "r.txt") is None


def test_a_file_the_system_cannot_read_is_one_clear_error(tmp_path, monkeypatch) -> None:
    import builtins
    import errno
    from pathlib import Path

    from tttkd.core import DatasetError
    from tttkd.pipeline.datasets.s3dis_text import count_lines, read_xyzrgb

    path = tmp_path / "wall_1.txt"
    path.write_bytes(GOOD_ALIGNED)
    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise OSError(errno.EIO, "Input/output error")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: failing_open(self))
    for read in (read_xyzrgb, count_lines):
        with pytest.raises(DatasetError, match=r"cannot read \(Input/output error\)") as e:
            read(path, scene="Area_1/office_1")
        assert e.value.file == str(path) and e.value.scene == "Area_1/office_1"
        assert "completely extracted and readable" in str(e.value)
