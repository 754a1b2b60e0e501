"""The ScanNet data card's class table is the label table the code uses."""

from __future__ import annotations

from importlib import resources

from tttkd.core import get_label_set


def test_card_class_table_matches_label_set() -> None:
    text = resources.files("tttkd.data_cards").joinpath("scannet.md").read_text("utf-8")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], int(cells[2]), cells[3]))
    ls = get_label_set("scannet20")
    want = [
        (i, n, y, ",".join(map(str, c)))
        for i, (n, y, c) in enumerate(zip(ls.class_names, ls.nyu40_ids, ls.colors))
    ]
    assert rows == want
    for count in ("1201 train", "312 val", "100 test"):
        assert count in text
