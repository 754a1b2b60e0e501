"""ScanNet's real label map and split files (../shared/data/scannet) through our reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tttkd.core import get_label_set
from tttkd.pipeline.datasets import scannet
from tttkd.synthetic.scannet_writer import TSV_HEADER, TSV_ROWS


@pytest.fixture
def real(shared_data) -> Path:
    d = shared_data / "scannet"
    if not (d / "scannetv2-labels.combined.tsv").is_file():
        pytest.skip(f"ScanNet reference files not found in {d}")
    return d


def test_label_map_rows_crlf_and_the_20_benchmark_classes(real) -> None:
    tsv = real / "scannetv2-labels.combined.tsv"
    data = tsv.read_bytes()
    assert data.count(b"\r\n") == 608 and data.count(b"\n") == 608  # CRLF throughout
    mapping = scannet.read_label_map(tsv)
    assert len(mapping) == 607
    assert all(not k.endswith("\r") for k in mapping)
    assert mapping["wall"] == 1 and mapping["couch"] == 6 and mapping["kitchen cabinets"] == 3
    lut = get_label_set("scannet20").nyu40_to_train()
    assert sum(lut[v] >= 0 for v in mapping.values()) == 148  # FORMATS.md 1.5
    # classes_SemVoxLabel-nyu40id.txt: the 20 classes, their nyu40 ids, their order
    text = (real / "classes_SemVoxLabel-nyu40id.txt").read_text()
    rows = [ln.split(maxsplit=1) for ln in text.splitlines() if ln.strip()]
    ls = get_label_set("scannet20")
    assert [int(i) for i, _ in rows] == list(ls.nyu40_ids)
    spelled = [n.strip().replace("refridgerator", "refrigerator") for _, n in rows]
    assert spelled == list(ls.class_names)
    assert [int(lut[int(i)]) for i, _ in rows] == list(range(20))


def test_line_ending_variants_give_the_same_map(real, tmp_path) -> None:
    text = (real / "scannetv2-labels.combined.tsv").read_bytes()
    want = scannet.read_label_map(real / "scannetv2-labels.combined.tsv")
    for name, data in {
        "lf.tsv": text.replace(b"\r\n", b"\n"),
        "crcrlf.tsv": text.replace(b"\r\n", b"\r\r\n"),  # Pointcept's edited copy
        "noeol.tsv": text.rstrip(b"\r\n"),
    }.items():
        (tmp_path / name).write_bytes(data)
        assert scannet.read_label_map(tmp_path / name) == want, name


def test_synthetic_label_rows_are_real_rows(real) -> None:
    lines = (real / "scannetv2-labels.combined.tsv").read_text().splitlines()
    assert lines[0].split("\t") == TSV_HEADER
    for cls, row in TSV_ROWS.items():
        assert row.replace("|", "\t") in lines, cls


def test_split_counts_via_list_scenes(real, tmp_path) -> None:
    for split in ("train", "val", "test"):
        shutil.copy(real / f"scannetv2_{split}.txt", tmp_path)
    counts = {s: len(scannet.list_scenes(tmp_path, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 1201, "val": 312, "test": 100}
    test = scannet.list_scenes(tmp_path, "test")
    assert (test[0], test[-1]) == ("scene0707_00", "scene0806_00")
    train, val = (
        set(scannet.list_scenes(tmp_path, "train")),
        set(scannet.list_scenes(tmp_path, "val")),
    )
    assert not (train & val) and not (set(test) & (train | val))
    assert all(scannet.SCENE_RE.match(s) for s in train | val | set(test))
    # the ScanNet repository's own layout and an explicit folder work too
    bench = tmp_path / "repo" / "Tasks" / "Benchmark"
    bench.mkdir(parents=True)
    shutil.copy(real / "scannetv2_val.txt", bench)
    assert len(scannet.list_scenes(tmp_path / "repo", "val")) == 312
    assert len(scannet.list_scenes(tmp_path / "elsewhere", "val", splits_dir=bench)) == 312
    assert np.array_equal(
        scannet.list_scenes(tmp_path, "val"), scannet.list_scenes(tmp_path / "repo", "val")
    )
