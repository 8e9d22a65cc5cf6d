"""Re-thresholding latency of a cached 4096x4096 3-class result (the minimum-probability slider).

Prints p50/max over 50 slider moves for the compact result the widgets cache, against the
float32 (K, H, W) path measured in the same run, interleaved.

    python benchmarks/threshold.py [--size 4096] [--classes 3] [--moves 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_deepseg import CompactProbabilities, apply_threshold


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--moves", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.classes, args.size, args.size)).astype(np.float32)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(0)
    compact = CompactProbabilities.from_probabilities(probabilities)
    thresholds = rng.uniform(0, 1, args.moves)
    times: dict[str, list[float]] = {"compact": [], "float32": []}
    for t in thresholds:  # interleaved A B A B so machine noise hits both alike
        for name, source in (("compact", compact), ("float32", probabilities)):
            start = time.perf_counter()
            apply_threshold(source, float(t))
            times[name].append((time.perf_counter() - start) * 1000)
    print(f"{args.size}x{args.size}, {args.classes} classes, {args.moves} slider moves")
    print(f"{'path':<10}{'p50 ms':>10}{'max ms':>10}")
    for name, values in times.items():
        print(f"{name:<10}{np.median(values):>10.1f}{np.max(values):>10.1f}")
    ratio = np.median(times["float32"]) / np.median(times["compact"])
    print(
        f"summary: compact re-threshold p50 {np.median(times['compact']):.1f} ms, "
        f"max {np.max(times['compact']):.1f} ms ({ratio:.1f}x faster than float32; target < 50 ms)"
    )


if __name__ == "__main__":
    main()
