"""Soak: many training iterations and predictions in one process, through the API.

One ``Trainer.run()`` on the bundled fluorescence sample (its strokes; small patches, validation
on) trains ``--iterations`` iterations; while the generator is held (as the widgets do between
iterations) the model predicts the sample ``--predictions`` times, spread evenly over the run,
and each result is re-thresholded. Every ``--label-every`` iterations the strokes are handed
over again (``update_labels``), as live painting does.

Reported: resident memory (VmRSS) at the start, after the warm-up (the first ``--warmup`` share
of the run, where torch's caches and thread pools fill) and at the end, with the growth after the
warm-up in %; open file descriptors and threads (the OS's, so torch's pools count) at each of those
points. Targets (issue 13): growth < 5 %, no more descriptors or threads at the end than after the
warm-up. Linux (reads /proc/self).

    python benchmarks/soak.py [--iterations 2000] [--predictions 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from napari_deepseg import Trainer, TrainingConfig, apply_threshold, sample_data


@dataclass(frozen=True)
class ProcessState:
    """What a leak would grow: resident memory, open descriptors, threads."""

    rss_mb: float
    open_fds: int
    os_threads: int
    python_threads: int

    @classmethod
    def now(cls) -> ProcessState:
        gc.collect()
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return cls(
            rss_mb=int(status["VmRSS"].split()[0]) / 1024,
            open_fds=len(os.listdir("/proc/self/fd")),
            os_threads=int(status["Threads"]),
            python_threads=threading.active_count(),
        )


def soak(
    iterations: int,
    predictions: int,
    *,
    warmup: float = 0.1,
    patch_size: int = 64,
    batch_size: int = 2,
    label_every: int = 100,
    architecture: str = "unet",
) -> dict:
    """Run the soak; the states at the start, after the warm-up and at the end, and the timings."""
    image, strokes = sample_data.load_fluorescence_sample()
    start = ProcessState.now()
    config = TrainingConfig(
        architecture=architecture,
        pretrained=False,
        iterations=iterations,
        patch_size=patch_size,
        batch_size=batch_size,
        device="cpu",
        seed=0,
    )
    trainer = Trainer(image, strokes, config)
    predict_at = set(np.linspace(0, iterations, predictions, endpoint=False, dtype=int) + 1)
    warm_at = max(1, round(iterations * warmup))
    checkpoints = set(np.linspace(0, iterations, 11, dtype=int)[1:])  # every tenth of the run
    warm = end = None
    trend: list[float] = []
    predicted, predict_seconds, began = 0, 0.0, time.perf_counter()
    for record in trainer.run():
        if record.iteration % label_every == 0:
            trainer.update_labels(strokes)
        if record.iteration in predict_at:
            t = time.perf_counter()
            compact = trainer.model.predict_compact(image)
            apply_threshold(compact, 0.5)
            predict_seconds += time.perf_counter() - t
            predicted += 1
        if record.iteration == warm_at:
            warm = ProcessState.now()
        if record.iteration in checkpoints:
            trend.append(round(ProcessState.now().rss_mb, 1))
        if record.finished:  # measured like the warm-up: the run and its generator alive
            end = ProcessState.now()
    seconds = time.perf_counter() - began
    assert warm is not None and end is not None and predicted == predictions, (warm, end, predicted)
    return {
        "iterations": iterations,
        "predictions": predicted,
        "warmup_iterations": warm_at,
        "image_shape": list(image.shape),
        "patch_size": patch_size,
        "batch_size": batch_size,
        "architecture": architecture,
        "seconds": seconds,
        "prediction_seconds": predict_seconds,
        "start": asdict(start),
        "after_warmup": asdict(warm),
        "end": asdict(end),
        "rss_mb_every_tenth": trend,
        "rss_growth_percent": 100 * (end.rss_mb - warm.rss_mb) / warm.rss_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--predictions", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the run before the baseline")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--label-every", type=int, default=100, help="iterations between label updates")
    parser.add_argument("--architecture", default="unet")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    result = soak(
        args.iterations,
        args.predictions,
        warmup=args.warmup,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        label_every=args.label_every,
        architecture=args.architecture,
    )
    print(
        f"{result['iterations']} iterations ({result['architecture']}, batch {result['batch_size']} x "
        f"{result['patch_size']} px) + {result['predictions']} predictions of {result['image_shape']} "
        f"in {result['seconds']:.0f} s (predictions {result['prediction_seconds']:.0f} s); "
        f"warm-up: {result['warmup_iterations']} iterations"
    )
    print(f"{'':<14}{'RSS MB':>10}{'open fds':>10}{'OS threads':>12}{'Py threads':>12}")
    for name in ("start", "after_warmup", "end"):
        s = result[name]
        print(
            f"{name:<14}{s['rss_mb']:>10.1f}{s['open_fds']:>10}{s['os_threads']:>12}{s['python_threads']:>12}"
        )
    print(f"RSS every tenth of the run (MB): {result['rss_mb_every_tenth']}")
    print(f"RSS growth after the warm-up: {result['rss_growth_percent']:+.2f} % (target < 5 %)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
