"""No silent label loss: unknown segment ids, unparsable label rows, a labelled scene with every
label ignored, and a large ignored fraction are errors or counted warnings, never quiet -1s.

Before: each of these gave a scene whose labels were (mostly) -1, reported as done.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tttkd.core import DatasetError
from tttkd.pipeline.cache import Cache
from tttkd.pipeline.datasets import scannet

SCENE = "scene0000_00"
TSV = "scannetv2-labels.combined.tsv"


def _agg(root: Path) -> Path:
    return root / "scans" / SCENE / f"{SCENE}.aggregation.json"


def _edit_tsv(root: Path, fn) -> None:
    path = root / TSV
    lines = path.read_bytes().decode().split("\r\n")
    header = lines[0].split("\t")
    col = header.index("nyu40id")
    rows = [ln.split("\t") for ln in lines[1:] if ln]
    fn(rows, col, header)
    path.write_bytes("\r\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]).encode())


def test_unknown_segment_ids_name_the_aggregation_file(root):
    agg = json.loads(_agg(root).read_text())
    agg["segGroups"][0]["segments"] = [10**7 + s for s in agg["segGroups"][0]["segments"]]
    _agg(root).write_text(json.dumps(agg))
    with pytest.raises(DatasetError) as e:
        scannet.load_scene(root, SCENE, frames=None)
    msg = str(e.value)
    assert str(_agg(root)) in msg and "segGroups[0]" in msg and "segment ids" in msg


def test_a_non_numeric_nyu40id_names_the_row(root):
    def bad(rows, col, header):
        rows[1][col] = "chair"

    _edit_tsv(root, bad)
    scannet._label_map.cache_clear()
    with pytest.raises(DatasetError) as e:
        scannet.load_scene(root, SCENE, frames=None)
    assert str(root / TSV) in str(e.value) and "line 3" in str(e.value), str(e.value)
    assert "'chair'" in str(e.value)


@pytest.fixture
def prep_labels(prep):
    """``tttkd-prep`` with the label map read again (the tests edit it)."""

    def run(root: Path, out: Path):
        scannet._label_map.cache_clear()
        return prep(root, out)

    return run


def test_a_labelled_scene_with_every_label_ignored_fails(root, tmp_path, prep_labels):
    def unlabelled(rows, col, header):
        for r in rows:
            r[col] = ""  # an empty nyu40id means unannotated

    _edit_tsv(root, unlabelled)
    out = tmp_path / "feats.zarr"
    r = prep_labels(root, out)
    assert r.exit_code == 1, r.output
    assert f"FAILED {SCENE}" in r.output and "every point's label is ignored" in r.output
    failures = json.loads(Path(f"{out}.failures.json").read_text())["failures"]
    assert [f["scene_id"] for f in failures] == [SCENE]


def test_a_large_ignored_fraction_is_a_counted_warning(root, tmp_path, prep_labels):
    agg = json.loads(_agg(root).read_text())
    keep = max(agg["segGroups"], key=lambda g: len(g["segments"]))
    agg["segGroups"] = [keep]  # every other object's points lose their label
    _agg(root).write_text(json.dumps(agg))
    out = tmp_path / "feats.zarr"
    r = prep_labels(root, out)
    assert r.exit_code == 0, r.output
    labels = Cache.open(str(out), read_only=True).scene_info(SCENE)["info"]["labels"]
    assert labels["ignored"] > 0.5 * labels["points"]
    assert labels["ignored_fraction"] == pytest.approx(labels["ignored"] / labels["points"])
    assert labels["warning"].startswith(f"{labels['ignored']} of {labels['points']} points")
    assert f"WARNING {SCENE}: {labels['warning']}" in r.output
    report = json.loads(Path(f"{out}.warnings.json").read_text())
    assert report["scenes"][SCENE] == [labels["warning"]]
