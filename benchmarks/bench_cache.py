"""Cache bytes per scene: raw fp16 vs BitRound vs PCA, with the cosine each mode keeps.

Run: ``python benchmarks/bench_cache.py`` (about 30 s on 2 cores; write = one write incl. the
cosine check, read = best of 3 full-scene reads). Everything is measured in
this one run on the same synthetic scene and printed as ratios to fp16. The features are
smooth low-rank maps (``cache_testing.smooth_features``: 20 images x 32x43 patches x 384 dims,
rank-32 fields + 5% noise), so the PCA cosines are optimistic for a real teacher; a real
prep run records the measured cosine in every scene's attrs (``tttkd-prep inspect``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tttkd.pipeline.cache import Cache, fit_pca
from tttkd.pipeline.cache_testing import smooth_features, synthetic_meta, synthetic_record

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
    from tttkd.pipeline.cache_layout import encode_scene_id, run_sync, scene_path

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


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--grid", type=int, nargs=2, default=(32, 43), metavar=("H", "W"))
    ap.add_argument("--dim", type=int, default=384)
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
    return rows


if __name__ == "__main__":
    main()
