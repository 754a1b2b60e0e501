"""What the cache's integrity checks cost (issue 13): checksums at write, checks at read, verify.

Run: ``python -m benchmarks.bench_integrity`` (a few seconds). One synthetic scene (200k
stored points, 800k full-resolution points, 50 images of 32x43x384 fp16 features, ~200k
pairs) is written once; printed, from this one run: the share of ``write_scene`` spent on the
integrity record, a checked ``read_scene`` against the same arrays read with plain zarr (best
of 3 each), and ``verify --quick`` against the full ``verify``; then the checked load of a
PCA basis (``pca/``, k=64 of D=1024, DINOv2-L's width) against plain zarr reads of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    import zarr

    from tttkd.pipeline.cache import Cache
    from tttkd.pipeline.cache.codecs import decode_features
    from tttkd.pipeline.cache.integrity import MANIFEST, scene_manifest
    from tttkd.pipeline.cache.layout import scene_path
    from tttkd.pipeline.cache.testing import synthetic_meta, synthetic_record

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--pca-k", type=int, default=64)
    p.add_argument("--pca-dim", type=int, default=1024)
    args = p.parse_args(argv)
    teacher = {"name": "bench", "sha256": None, "patch_size": 14, "dim": 384}
    rec = synthetic_record(
        "s", n_points=200_000, n_full=800_000, n_images=args.images, grid_hw=(32, 43), dim=384,
        corr_per_image=4000,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "feats.zarr")
        cache = Cache.create(url, synthetic_meta(teacher=teacher))
        t0 = time.perf_counter()
        cache.write_scene(rec)
        t_write = time.perf_counter() - t0
        raw = zarr.open_group(url, path=scene_path("s"), mode="r")
        t_manifest = _best(lambda: scene_manifest(cache._store, scene_path("s"), raw))
        arrays = sorted(dict(raw.attrs)[MANIFEST]["arrays"])

        def plain() -> None:
            data = {k: raw[k][...] for k in arrays}
            decode_features(data["images/features"], cache.codec, cache.pca)

        t_plain = _best(plain)
        t_checked = _best(lambda: cache.read_scene("s"))
        t_quick = _best(lambda: cache.verify(quick=True))
        t_full = _best(lambda: cache.verify(), repeat=1)
    print(f"write_scene {t_write:.3f} s; integrity record {t_manifest:.3f} s "
          f"({t_manifest / t_write:.0%} of the write)")  # fmt: skip
    print(f"read_scene (checked) {t_checked:.3f} s vs plain zarr reads {t_plain:.3f} s: "
          f"{t_checked / t_plain:.2f}x")  # fmt: skip
    print(f"verify --quick {t_quick:.3f} s vs verify {t_full:.3f} s")
    _pca_basis(args.pca_k, args.pca_dim)


def _pca_basis(k: int, dim: int) -> None:
    """The PCA basis is checked (checksums) once per opened cache: what that costs."""
    import numpy as np
    import zarr

    from tttkd.pipeline.cache import Cache, PcaBasis
    from tttkd.pipeline.cache.integrity import read_basis
    from tttkd.pipeline.cache.testing import synthetic_meta

    teacher = {"name": "bench", "sha256": None, "patch_size": 14, "dim": dim}
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, k)))
    basis = PcaBasis(np.zeros(dim, np.float32), q.T.astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "feats.zarr")
        cache = Cache.create(url, synthetic_meta(teacher=teacher, feature_codec=f"pca{k}"))
        cache.set_pca(basis)
        g = zarr.open_group(url, path="pca", mode="r")
        t_plain = _best(lambda: (g["mean"][...], g["components"][...]))
        t_checked = _best(lambda: read_basis(cache._store, url))
    print(f"PCA basis {k}x{dim}: checked load {t_checked * 1e3:.1f} ms vs plain zarr reads "
          f"{t_plain * 1e3:.1f} ms (once per opened cache)")  # fmt: skip


if __name__ == "__main__":
    main()
