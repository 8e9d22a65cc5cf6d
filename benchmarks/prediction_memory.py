"""Memory of every public prediction path, beyond the arrays it must return, at two image sizes.

For each path and size, in a fresh process: the peak of the process's own memory (RssAnon,
sampled every 10 ms) during the call, minus what it held just before (image, network), minus the
bytes of what the call returns. Paths:

- ``proba+threshold``: ``predict_proba`` then ``apply_threshold`` on the float probabilities
  (returns the float32 (K, H, W) array and the labels);
- ``compact``: ``predict_compact`` then ``apply_threshold`` on it (returns 2 bytes per pixel + labels);
- ``predict``: ``predict`` (returns the labels).

Targets (issue 10): beyond the returned arrays < 1.2 GB, and growing by < 0.2 GB from 2048² to 8192².
``--network tiny`` swaps the default U-Net for a 1x1 convolution, which isolates what the
engine itself holds (tiles, bands, temporaries) from the network's activations and runs in
seconds; the default network adds a constant for one tile's activations.

    python benchmarks/prediction_memory.py [--sizes 2048 8192] [--network default|tiny]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from napari_deepseg import SegmentationModel, apply_threshold
from napari_deepseg.data.normalisation import Normalisation
from napari_deepseg.models import build_model

CLASSES = 3
PATHS = ("proba+threshold", "compact", "predict")


def rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, rss_anon_mb(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_anon_mb())
            time.sleep(self.interval)


def make_model(network: str) -> SegmentationModel:
    torch.manual_seed(0)
    if network == "tiny":
        module: torch.nn.Module = torch.nn.Conv2d(3, CLASSES, 1)
        architecture, encoder = "unet", "resnet34"  # recorded only; the module is what runs
    else:
        module = build_model("unet", num_classes=CLASSES, in_channels=3)
        architecture, encoder = "unet", None
    return SegmentationModel(
        module.eval(),
        architecture=architecture,
        encoder=encoder,
        num_classes=CLASSES,
        normalisation=Normalisation((0.0,) * 3, (255.0,) * 3),
    )


def measure(path: str, size: int, network: str) -> dict:
    model = make_model(network)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    model.predict(image[:256, :256])  # warm-up: allocator pools, oneDNN primitives
    before = rss_anon_mb()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    if path == "proba+threshold":
        probabilities = model.predict_proba(image)
        labels = apply_threshold(probabilities, 0.5)
        returned = probabilities.nbytes + labels.nbytes
    elif path == "compact":
        compact = model.predict_compact(image)
        labels = apply_threshold(compact, 0.5)
        returned = compact.best_class.nbytes + compact.best_probability.nbytes + labels.nbytes
    else:
        labels = model.predict(image, min_probability=0.5)
        returned = labels.nbytes
    seconds = time.perf_counter() - start
    time.sleep(0.05)
    sampler.running = False
    sampler.join()
    extra = sampler.peak - before - returned / 2**20
    return dict(
        path=path, size=size, network=network, seconds=seconds, returned_mb=returned / 2**20, extra_mb=extra
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--network", choices=("default", "tiny"), default="tiny")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.network)))
        return
    print(f"network {args.network}, {CLASSES} classes, RGB uint8, torch {torch.__version__}")
    print(f"{'path':<18}{'image':>7}{'s':>8}{'returned MB':>13}{'beyond MB':>11}")
    rows = []
    for path in args.paths:
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--network", args.network, "--child", path, str(size)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(done.stderr)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(r)
            row = f"{path:<18}{size:>7}{r['seconds']:>8.1f}{r['returned_mb']:>13.0f}{r['extra_mb']:>11.0f}"
            print(row, flush=True)
    for path in args.paths:
        extra = [r["extra_mb"] for r in rows if r["path"] == path]
        print(
            f"summary {path}: beyond the returned arrays at most {max(extra) / 1024:.2f} GB (target < 1.2), "
            f"growth {(extra[-1] - extra[0]) / 1024:+.2f} GB from {args.sizes[0]}² to {args.sizes[-1]}² "
            "(target < 0.2)"
        )


if __name__ == "__main__":
    main()
