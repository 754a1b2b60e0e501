"""Cache bytes per scene: raw fp16 vs BitRound vs PCA, with the cosine each mode keeps.

Run: ``python benchmarks/bench_cache.py`` (about 30 s on 2 cores; write = one write incl. the
cosine check, read = best of 3 full-scene reads), plus about 1-2 minutes for part 2
(``--no-point-grids`` skips it). Everything is measured in
this one run on the same synthetic scene and printed as ratios to fp16. The features are
smooth low-rank maps (``pipeline/cache/testing.py``: 20 images x 32x43 patches x 384 dims,
rank-32 fields + 5% noise), so the PCA cosines are optimistic for a real teacher; a real
prep run records the measured cosine in every scene's attrs (``tttkd-prep inspect``).

Part 2, the cost of cache schema 2 (points on a grid finer than the network voxel, issue 11):
one synthetic ScanNet-format room sampled every 1 cm, with rendered RGB-D frames, prepared by
the real ``tttkd-prep`` path (serial, the ``randconv-demo`` teacher) at point grids of the
network voxel / 1 (what schema 1 stored), / 2 and / 4 (the default). Printed: stored points,
pairs, bytes of the point arrays (``points/`` + ``full/``), of the pairs (``corr/``), of the
whole scene, and the ratio to the schema-1 equivalent. Teacher features do not depend on the
point grid; a real ViT-L teacher's dominate a scene (``part 1``), so the scene ratio there is
smaller than with the demo teacher's small maps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tttkd.pipeline.cache import Cache, fit_pca
from tttkd.pipeline.cache.testing import smooth_features, synthetic_meta, synthetic_record

CODECS = (
    "fp16",
    "bitround8",
    "bitround6",
    "bitround4",
    "pca128",
    "pca64",
    "pca64+bitround6",
)


def _bytes(cache: Cache, scene_id: str, sub: str = "") -> int:
    from tttkd.pipeline.cache.layout import encode_scene_id, run_sync, scene_path

    prefix = scene_path(encode_scene_id(scene_id)) + (f"/{sub}" if sub else "")
    return int(run_sync(cache._store.getsize_prefix(prefix)))


def run(
    images: int = 20, grid: tuple[int, int] = (32, 43), dim: int = 384, codecs=CODECS
) -> list[dict]:
    """One row per codec: bytes (features, scene), cosine, write and read seconds."""
    h, w = grid
    rec = synthetic_record(
        "bench/scene",
        n_points=30_000,
        n_full=120_000,
        n_images=images,
        grid_hw=grid,
        dim=8,
        corr_per_image=1500,
        seed=1,
    )
    rec.features = smooth_features(images, h, w, dim, rank=32, seed=1) * 3
    train = smooth_features(images, h, w, dim, rank=32, seed=2) * 3  # the basis's own scene
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec in codecs:
            meta = synthetic_meta(feature_codec=codec, teacher={"name": "synthetic", "dim": dim})
            cache = Cache.create(str(Path(tmp) / f"{codec}.zarr"), meta)
            if cache.codec.pca_k:
                cache.set_pca(fit_pca(train, cache.codec.pca_k))
            t0 = time.perf_counter()
            cache.write_scene(rec)
            t1 = time.perf_counter()
            reads = []
            for _ in range(3):
                t = time.perf_counter()
                cache.read_scene(rec.scene_id)
                reads.append(time.perf_counter() - t)
            cos = cache.scene_info(rec.scene_id)["feature_cosine"]
            rows.append(
                {
                    "codec": codec,
                    "feature_bytes": _bytes(cache, rec.scene_id, "images/features"),
                    "scene_bytes": _bytes(cache, rec.scene_id),
                    "cosine": 1.0 if cos is None else cos,
                    "write_s": t1 - t0,
                    "read_s": min(reads),
                }
            )
    return rows


def point_grid_rows(
    voxel: float = 0.04, spacing: float = 0.01, views: int = 8, divisors=(1, 2, 4)
) -> list[dict]:
    """One row per point grid (``voxel / divisor``): counts and bytes of one real prep."""
    from tttkd.pipeline.executors import SerialExecutor
    from tttkd.pipeline.plan import PrepConfig
    from tttkd.pipeline.run import run_prep
    from tttkd.synthetic.domain import Domain
    from tttkd.synthetic.scannet_writer import write_scannet_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scannet"
        write_scannet_dataset(
            root,
            1,
            frames=("25k",),
            splits=["train"],
            image_size=(320, 240),
            views=views,
            domain=Domain(spacing=spacing),
        )
        for div in divisors:
            cfg = PrepConfig(
                dataset="scannet",
                root=str(root),
                out=str(Path(tmp) / f"grid{div}.zarr"),
                teacher="randconv-demo",
                reader_options={"frames": "25k"},
                voxel_size=voxel,
                point_voxel_size=voxel / div,
            )
            t0 = time.perf_counter()
            report = run_prep(cfg, SerialExecutor(), progress=False, echo=lambda *_: None)
            if report.exit_code:
                raise RuntimeError(f"prep failed: {report.failures}")
            seconds = time.perf_counter() - t0
            cache = Cache.open(cfg.out, read_only=True)
            (sid,) = cache.scene_ids()
            counts = cache.scene_info(sid)["counts"]
            rows.append(
                {
                    "divisor": div,
                    "point_grid_m": voxel / div,
                    "full_points": counts["full_points"],
                    "points": counts["points"],
                    "pairs": counts["correspondences"],
                    "point_bytes": _bytes(cache, sid, "points") + _bytes(cache, sid, "full"),
                    "corr_bytes": _bytes(cache, sid, "corr"),
                    "scene_bytes": _bytes(cache, sid),
                    "prep_s": seconds,
                }
            )
    return rows


def print_point_grids(rows: list[dict]) -> None:
    base = rows[0]
    print(
        f"\npoint grid cost (schema 2): one room, {base['full_points']} points sampled every "
        "1 cm, 4 cm network voxel; x1 = the schema-1 equivalent (point grid = network voxel)"
    )
    print(
        f"{'grid cm':>8}{'points':>10}{'pairs':>10}{'points MB':>11}{'corr MB':>9}"
        f"{'scene MB':>10}{'x1':>7}{'prep s':>8}"
    )
    for r in rows:
        print(
            f"{r['point_grid_m'] * 100:>8.2f}{r['points']:>10}{r['pairs']:>10}"
            f"{r['point_bytes'] / 1e6:>11.2f}{r['corr_bytes'] / 1e6:>9.2f}"
            f"{r['scene_bytes'] / 1e6:>10.2f}{r['scene_bytes'] / base['scene_bytes']:>7.2f}"
            f"{r['prep_s']:>8.1f}"
        )


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--grid", type=int, nargs=2, default=(32, 43), metavar=("H", "W"))
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--no-point-grids", action="store_true", help="skip part 2 (the schema 2 cost)")
    args = ap.parse_args(argv)
    rows = run(args.images, tuple(args.grid), args.dim)
    base = rows[0]
    raw_mb = args.images * args.grid[0] * args.grid[1] * args.dim * 2 / 1e6
    print(
        f"cache bytes per scene: {args.images} images x {args.grid[0]}x{args.grid[1]} x "
        f"{args.dim} (uncompressed fp16 features {raw_mb:.1f} MB), zstd level 3"
    )
    print(
        f"{'codec':<17}{'features MB':>12}{'x fp16':>8}{'scene MB':>10}{'x fp16':>8}"
        f"{'cosine':>10}{'write s':>9}{'read s':>8}"
    )
    for r in rows:
        print(
            f"{r['codec']:<17}{r['feature_bytes'] / 1e6:>12.2f}"
            f"{r['feature_bytes'] / base['feature_bytes']:>8.3f}{r['scene_bytes'] / 1e6:>10.2f}"
            f"{r['scene_bytes'] / base['scene_bytes']:>8.3f}{r['cosine']:>10.5f}"
            f"{r['write_s']:>9.2f}{r['read_s']:>8.2f}"
        )
    if not args.no_point_grids:
        print_point_grids(point_grid_rows())
    return rows


if __name__ == "__main__":
    main()
