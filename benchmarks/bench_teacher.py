"""Teacher throughput: images/s with batching vs one image at a time, same model, same run.

    python benchmarks/bench_teacher.py [--images N] [--no-vits]

Random-init weights (speed does not depend on their values); on CPU unless --device says
otherwise. One line per teacher: both rates and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tttkd.pipeline.teacher import Teacher, load_teacher


def _rate(teacher: Teacher, images: list[np.ndarray], batch_size: int, repeats: int) -> float:
    """Best-of-`repeats` images/s; one image per call when batch_size == 1."""
    teacher.batch_size = batch_size
    teacher.encode(images[:batch_size])  # warm-up: allocator, kernels, position resampling
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        if batch_size == 1:
            for image in images:
                teacher.encode([image])
        else:
            teacher.encode(images)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def _case(label, teacher, height, width, n, batch_size, repeats) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]
    single = _rate(teacher, images, 1, repeats)
    batched = _rate(teacher, images, batch_size, repeats)
    rows, cols = teacher.grid_size(height, width)
    print(
        f"teacher {label:<30} {width}x{height} -> grid {cols}x{rows}: "
        f"batched({batch_size}) {batched:8.1f} img/s | one-at-a-time {single:8.1f} img/s | "
        f"ratio {batched / single:.2f}x",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per tiny/demo case")
    parser.add_argument("--no-vits", action="store_true", help="skip ViT-S/14 at 448 px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device, n = args.device, args.images
    print(f"device {device}, torch threads {torch.get_num_threads()}", flush=True)
    tiny = load_teacher("test_vit_tiny", image_size=448, device=device)
    _case("test_vit_tiny @448", tiny, 480, 640, n, 16, 3)
    demo = load_teacher("randconv-demo", device=device)
    _case("randconv-demo @native", demo, 120, 160, n, 16, 3)
    if not args.no_vits:
        vits = load_teacher("dinov2_vits14", random_init=True, image_size=448, device=device)
        big = device != "cpu"
        _case("dinov2_vits14 @448 (random)", vits, 480, 640, 64 if big else 4, 32 if big else 4, 1)


if __name__ == "__main__":
    main()
