"""The synthetic domain-shift benchmark of ``make demo``: two ScanNet-format roots.

Rooms hold a bed, a bookshelf, a table and three boxes of IDENTICAL geometry told apart by
colour alone (cabinet red, refrigerator green, otherfurniture blue), so appearance matters.
The target domain shifts the reconstructed POINT colours (hue +60 degrees, saturation x0.7,
noise 0.04) while its camera images stay clean: a 3D-only model trained on the source is
hurt, and a teacher that looks at the images is not. Both roots are written in ScanNet's exact
on-disk format and read back by the real reader, so the benchmark exercises the whole product.

Settings (the demo's TTT lr) are chosen on a DEVELOPMENT domain, never on the reported target
rooms: other rooms (their own seed stream) with the target's shift, written like the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tttkd.synthetic.domain import SOURCE, TARGET, Domain
from tttkd.synthetic.scannet_writer import write_scannet_dataset

FURNITURE = ("bed", "bookshelf", "table", "cabinet", "refrigerator", "otherfurniture")
DEV_SEED = 1_000_003  # development rooms' seed offset: far from source/target's 2 seed + 1, 2


@dataclass(frozen=True)
class ShiftBenchmark:
    """Where the two domains were written and how."""

    source_root: Path  # split "train": the labelled training domain
    target_root: Path  # split "val": the shifted test domain
    clean_root: Path  # split "val": the target rooms WITHOUT the shift (how much the shift hurts)
    source_scenes: int
    target_scenes: int
    source: Domain
    target: Domain
    dev_root: Path | None = None  # split "val": development rooms (tuning), shifted as target
    dev_scenes: int = 0


def write_shift_benchmark(
    root: str | Path,
    *,
    source_scenes: int = 24,
    target_scenes: int = 8,
    seed: int = 0,
    views: int = 4,
    image_size: tuple[int, int] = (160, 120),
    source: Domain = SOURCE,
    target: Domain = TARGET,
    dev_scenes: int = 0,
) -> ShiftBenchmark:
    """Write ``root/source`` (train), ``root/target`` and ``root/target_clean`` (val); idempotent.

    ``target_clean`` holds the same rooms as ``target`` in the source appearance, so the drop
    from ``target_clean`` to ``target`` measures what the shift alone costs. ``dev_scenes`` > 0
    also writes ``root/dev`` (val): rooms of their own seed (``DEV_SEED + seed``, disjoint from
    every source and target seed) with the target's shift, for choosing settings.

    A root that already holds its split file is left as it is, so a rerun of the demo reuses
    the data (delete the folder to regenerate).
    """
    root = Path(root)
    out = {}
    domains = [
        ("source", source_scenes, source, "train", seed * 2 + 1),
        ("target", target_scenes, target, "val", seed * 2 + 2),
        ("target_clean", target_scenes, source, "val", seed * 2 + 2),
    ]
    if dev_scenes > 0:
        domains.append(("dev", dev_scenes, target, "val", DEV_SEED + seed))
    for name, n, dom, split, s in domains:
        d = root / name
        if not (d / f"scannetv2_{split}.txt").exists():
            write_scannet_dataset(
                d,
                n,
                seed=s,
                domain=dom,
                frames=("25k",),
                splits=[split] * n,
                image_size=image_size,
                views=views,
                furniture=FURNITURE,
            )
        out[name] = d
    return ShiftBenchmark(
        out["source"],
        out["target"],
        out["target_clean"],
        source_scenes,
        target_scenes,
        source,
        target,
        out.get("dev"),
        dev_scenes,
    )
