"""GPU figures for docs/benchmarks.md, in one short run (``benchmarks/gpu_check.sh`` calls it after
the GPU tests):

- training iterations/s of each architecture's default (``Trainer.run()``, precision auto = bf16
  autocast, batch 8 of 256 x 256, 3 classes), after a warm-up;
- the share of the GPU's own bf16 matmul rate (measured here, 8192^3) that a training step
  reaches, from the step's FLOPs counted by ``torch.utils.flop_counter``;
- prediction throughput (MP/s) of the default network on a 4096 x 4096 image, end to end.

    python benchmarks/gpu_check.py [--iterations 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_deepseg import AugmentationConfig, Trainer, TrainingConfig, available_architectures
from napari_deepseg.models import build_model

BATCH, SIZE, CLASSES = 8, 256, 3
DEVICE = "cuda"  # --smoke: "cpu", to check the script itself where no GPU is


def matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def step_flops(architecture: str) -> float:
    """FLOPs of one forward + backward pass of the architecture's default network on a batch."""
    module = build_model(architecture, in_channels=1, num_classes=CLASSES, pretrained=False).to(DEVICE)
    x = torch.randn(BATCH, 1, SIZE, SIZE, device=DEVICE)
    with FlopCounterMode(display=False) as counter, torch.autocast(DEVICE, dtype=torch.bfloat16):
        module(x).float().mean().backward()
    return float(counter.get_total_flops())


def training_rate(architecture: str, iterations: int) -> float:
    rng = np.random.default_rng(0)
    image = rng.random((1024, 1024), dtype=np.float32)
    labels = np.zeros(image.shape, np.uint8)
    for k in range(1, CLASSES + 1):
        labels[rng.integers(0, 1024, 400), rng.integers(0, 1024, 400)] = k
    config = TrainingConfig(
        architecture=architecture,
        iterations=iterations + 5,
        batch_size=BATCH,
        patch_size=SIZE,
        pretrained=False,
        device=DEVICE,
        validation_fraction=0.0,
        augmentation=AugmentationConfig(),
        seed=0,
    )
    run = Trainer(image, labels, config).run()
    for _ in range(5):  # warm-up: cuDNN picks its algorithms
        next(run)
    _sync()
    start = time.perf_counter()
    for _ in run:
        pass
    _sync()
    return iterations / (time.perf_counter() - start)


def prediction_rate(size: int = 4096) -> float:
    rng = np.random.default_rng(0)
    image, labels = rng.random((512, 512), dtype=np.float32), np.zeros((512, 512), np.uint8)
    labels[:20], labels[-20:] = 1, 2
    config = TrainingConfig(iterations=1, pretrained=False, device=DEVICE, validation_fraction=0.0)
    trainer = Trainer(image, labels, config)
    list(trainer.run())
    big = rng.random((size, size), dtype=np.float32)
    trainer.model.predict(big[:1024, :1024], device=DEVICE)  # warm-up
    _sync()
    start = time.perf_counter()
    trainer.model.predict(big, device=DEVICE)
    _sync()
    return size * size / 1e6 / (time.perf_counter() - start)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    global BATCH, SIZE, DEVICE
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script only")
    args = parser.parse_args()
    if args.smoke:
        BATCH, SIZE, DEVICE = 2, 64, "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to measure", file=sys.stderr)
        return 2
    name = "CPU (smoke test)" if args.smoke else torch.cuda.get_device_name()
    result: dict = {"device": name, "torch": torch.__version__}
    result["bf16_matmul_tflops"] = peak = matmul_tflops(512 if args.smoke else 8192)
    print(f"{result['device']}: bf16 matmul {peak:.0f} TFLOP/s (measured, 8192^3)", flush=True)
    for architecture in available_architectures():
        rate = training_rate(architecture, args.iterations)
        share = step_flops(architecture) * rate / (peak * 1e12)
        result[architecture] = {"iterations_per_s": rate, "share_of_matmul_rate": share}
        print(f"{architecture:>14}: {rate:6.1f} it/s (batch {BATCH} x {SIZE}^2), {100 * share:4.1f} % of it")
    result["prediction_mp_per_s"] = mp = prediction_rate(512 if args.smoke else 4096)
    print(f"prediction, default network, 4096^2 end to end: {mp:.1f} MP/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
